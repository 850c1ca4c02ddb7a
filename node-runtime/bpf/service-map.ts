// The layout of sock_lb.bpf.c's maps, as bytes (pure). The structs there are the definition;
// the sizes are checked against the loaded maps (bpfMapInfo) when they are opened, so a change on
// one side only fails loudly.
import { isIPv4 } from 'node:net';
import { endianness } from 'node:os';

/** ORRERY_MAX_ENDPOINTS in sock_lb.bpf.c: a port with more endpoints is left to the proxy. */
export const MAX_KERNEL_ENDPOINTS = 128;
export const SERVICE_KEY_SIZE = 8;
const ENDPOINT_SIZE = 12;
export const SERVICE_VALUE_SIZE = 8 + MAX_KERNEL_ENDPOINTS * ENDPOINT_SIZE;
/** Index of each counter in orrery_counters. */
export const COUNTERS = { rewritten: 0, refused: 1, bindRefused: 2 } as const;
export const PORT_KEY_SIZE = 4;
export const PORT_OWNER_SIZE = 8;

/** One endpoint of a VIP:port in the kernel map; weights are relative (the proxy's are all 1). */
export interface KernelEndpoint {
  address: string;
  port: number;
  weight: number;
}

/** The map's __u32 fields are in the host's byte order; addresses and ports in network order. */
const little = endianness() === 'LE';

function writeU32(buf: Buffer, n: number, offset: number): void {
  if (little) buf.writeUInt32LE(n, offset);
  else buf.writeUInt32BE(n, offset);
}

function readU32(buf: Buffer, offset: number): number {
  return little ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset);
}

function writeAddress(buf: Buffer, address: string, offset: number): void {
  const parts = address.split('.').map(Number);
  for (let i = 0; i < 4; i++) buf[offset + i] = parts[i] as number;
}

function readAddress(buf: Buffer, offset: number): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

function checkAddressPort(what: string, address: string, port: number): void {
  if (!isIPv4(address))
    throw new TypeError(`${what} address must be an IPv4 address, got ${JSON.stringify(address)}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TypeError(`${what} port must be an integer from 1 to 65535, got ${port}`);
  }
}

/** struct svc_key: the VIP and port a replica connects to. */
export function encodeServiceKey(vip: string, port: number): Buffer {
  checkAddressPort('virtual IP', vip, port);
  const key = Buffer.alloc(SERVICE_KEY_SIZE);
  writeAddress(key, vip, 0);
  key.writeUInt16BE(port, 4);
  return key;
}

export function decodeServiceKey(key: Buffer): { vip: string; port: number } {
  return { vip: readAddress(key, 0), port: key.readUInt16BE(4) };
}

/**
 * struct svc_value: the endpoints with their cumulative weights, so the program draws one number
 * below the total and takes the first endpoint whose sum passes it. Endpoints of weight 0 are left
 * out; none left writes a total of 0, which the program refuses (ECONNREFUSED).
 */
export function encodeServiceValue(endpoints: readonly KernelEndpoint[]): Buffer {
  const used = endpoints.filter((e) => e.weight !== 0);
  if (used.length > MAX_KERNEL_ENDPOINTS) {
    throw new RangeError(
      `at most ${MAX_KERNEL_ENDPOINTS} endpoints fit a kernel map entry, got ${used.length}`,
    );
  }
  const value = Buffer.alloc(SERVICE_VALUE_SIZE);
  let total = 0;
  used.forEach((e, i) => {
    checkAddressPort('endpoint', e.address, e.port);
    if (!Number.isInteger(e.weight) || e.weight < 0 || e.weight > 0xffff) {
      throw new TypeError(`endpoint weight must be an integer from 0 to 65535, got ${e.weight}`);
    }
    total += e.weight;
    const at = 8 + i * ENDPOINT_SIZE;
    writeAddress(value, e.address, at);
    value.writeUInt16BE(e.port, at + 4);
    writeU32(value, total, at + 8);
  });
  writeU32(value, used.length, 0);
  writeU32(value, total, 4);
  return value;
}

export function decodeServiceValue(value: Buffer): KernelEndpoint[] {
  const count = readU32(value, 0);
  const endpoints: KernelEndpoint[] = [];
  let previous = 0;
  for (let i = 0; i < count; i++) {
    const at = 8 + i * ENDPOINT_SIZE;
    const cumulative = readU32(value, at + 8);
    endpoints.push({
      address: readAddress(value, at),
      port: value.readUInt16BE(at + 4),
      weight: cumulative - previous,
    });
    previous = cumulative;
  }
  return endpoints;
}

/**
 * orrery_ports' key: a port as `bpf_sock_addr.user_port` holds it, read as a __u32: the port in
 * network order in the first two bytes, zeros after.
 */
export function encodePortKey(port: number): Buffer {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TypeError(`port must be an integer from 1 to 65535, got ${port}`);
  }
  const key = Buffer.alloc(PORT_KEY_SIZE);
  key.writeUInt16BE(port, 0);
  return key;
}

export function decodePortKey(key: Buffer): number {
  return key.readUInt16BE(0);
}

/** orrery_ports' value: a cgroup v2 id (its directory's inode number) as a __u64 in host order. */
export function encodeCgroupId(id: bigint): Buffer {
  const value = Buffer.alloc(PORT_OWNER_SIZE);
  if (little) value.writeBigUInt64LE(id);
  else value.writeBigUInt64BE(id);
  return value;
}

export function decodeCgroupId(value: Buffer): bigint {
  return little ? value.readBigUInt64LE(0) : value.readBigUInt64BE(0);
}

/** An array map's key: the index as a __u32 in host order. */
export function encodeIndex(index: number): Buffer {
  const key = Buffer.alloc(4);
  writeU32(key, index, 0);
  return key;
}

/** The per-CPU values of one counter, summed (a per-CPU array answers 8 bytes per possible CPU). */
export function sumPerCpu(value: Buffer): number {
  let sum = 0n;
  for (let at = 0; at + 8 <= value.length; at += 8)
    sum += little ? value.readBigUInt64LE(at) : value.readBigUInt64BE(at);
  return Number(sum);
}

/** The number of possible CPUs from /sys/devices/system/cpu/possible ("0-1", "0,2-3"). */
export function possibleCpus(text: string): number {
  let n = 0;
  for (const range of text.trim().split(',')) {
    const [from, to] = range.split('-').map(Number);
    n = Math.max(n, (to ?? from ?? 0) + 1);
  }
  return n;
}
