// Talks to a local control plane's embedded etcd the way the apiserver does: gRPC over its unix
// socket, DIR/etcd.sock, which only the data dir's owner can reach (the JSON gateway is off).
// Two calls, hand-encoded: Range (for the current revision) and Compact
// (https://github.com/etcd-io/etcd/blob/v3.5.16/api/etcdserverpb/rpc.proto).
import { connect as http2Connect } from 'node:http2';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';

function varint(n: bigint): number[] {
  const out: number[] = [];
  let v = n;
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return out;
}

function readVarint(buf: Buffer, at: number): [bigint, number] {
  let value = 0n;
  let shift = 0n;
  let i = at;
  for (;;) {
    const byte = buf[i++] as number;
    value |= BigInt(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return [value, i];
    shift += 7n;
  }
}

/** The fields of one protobuf message: number → varint value or bytes. */
function fields(buf: Buffer): Map<number, bigint | Buffer> {
  const out = new Map<number, bigint | Buffer>();
  let i = 0;
  while (i < buf.length) {
    const [tag, next] = readVarint(buf, i);
    i = next;
    const field = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (wire === 0) {
      const [v, n] = readVarint(buf, i);
      out.set(field, v);
      i = n;
    } else if (wire === 2) {
      const [len, n] = readVarint(buf, i);
      out.set(field, buf.subarray(n, n + Number(len)));
      i = n + Number(len);
    } else {
      throw new Error(`unexpected protobuf wire type ${wire}`);
    }
  }
  return out;
}

async function unary(socket: string, method: string, message: Buffer): Promise<Buffer> {
  const session = http2Connect('http://localhost', { createConnection: () => netConnect(socket) });
  try {
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    const stream = session.request({
      ':method': 'POST',
      ':path': method,
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const chunks: Buffer[] = [];
    let grpcStatus = '';
    let grpcMessage = '';
    const done = new Promise<void>((resolve, reject) => {
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('response', (h) => {
        if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']);
      });
      stream.on('trailers', (h) => {
        grpcStatus = String(h['grpc-status']);
        grpcMessage = String(h['grpc-message'] ?? '');
      });
      stream.on('end', resolve);
      stream.on('error', reject);
      session.on('error', reject);
    });
    stream.end(frame);
    await done;
    if (grpcStatus !== '0') throw new Error(`etcd ${method}: grpc-status ${grpcStatus} ${grpcMessage}`);
    const body = Buffer.concat(chunks);
    return body.subarray(5, 5 + body.readUInt32BE(1));
  } finally {
    session.close();
  }
}

/** Compacts the etcd of the control plane in `dataDir` to its current revision; returns it. */
export async function compactEtcd(dataDir: string): Promise<number> {
  const socket = join(dataDir, 'etcd.sock');
  // RangeRequest{key: "/"} → RangeResponse{header(1): ResponseHeader{revision(3)}}
  const range = await unary(socket, '/etcdserverpb.KV/Range', Buffer.from([0x0a, 0x01, 0x2f]));
  const header = fields(range).get(1);
  if (!Buffer.isBuffer(header)) throw new Error('etcd Range: no response header');
  const revision = fields(header).get(3);
  if (typeof revision !== 'bigint') throw new Error('etcd Range: no revision in the header');
  // CompactionRequest{revision(1), physical(2): true}
  await unary(socket, '/etcdserverpb.KV/Compact', Buffer.from([0x08, ...varint(revision), 0x10, 0x01]));
  return Number(revision);
}
