// The bytes of the kernel fast path's service map (node-runtime/bpf/service-map.ts), as
// sock_lb.bpf.c reads them: addresses and ports in network order, counts and cumulative weights
// in the host's order.
import { endianness } from 'node:os';
import test from 'ava';
import {
  decodeCgroupId,
  decodePortKey,
  decodeServiceValue,
  encodeCgroupId,
  encodePortKey,
  encodeServiceKey,
  encodeServiceValue,
  MAX_KERNEL_ENDPOINTS,
  possibleCpus,
  SERVICE_VALUE_SIZE,
  sumPerCpu,
} from '../../node-runtime/bpf/service-map.ts';

const u32 = (buf: Buffer, at: number) =>
  endianness() === 'LE' ? buf.readUInt32LE(at) : buf.readUInt32BE(at);

test('a key is the VIP and the port in network order, then two bytes of padding', (t) => {
  t.deepEqual([...encodeServiceKey('10.96.0.1', 8080)], [10, 96, 0, 1, 0x1f, 0x90, 0, 0]);
});

test('a value holds the endpoints with cumulative weights; weight 0 is left out', (t) => {
  const endpoints = [
    { address: '127.0.0.1', port: 9001, weight: 1 },
    { address: '127.0.0.2', port: 9002, weight: 0 },
    { address: '127.0.0.3', port: 9003, weight: 5 },
  ];
  const value = encodeServiceValue(endpoints);
  t.is(value.length, SERVICE_VALUE_SIZE);
  t.is(u32(value, 0), 2); // count
  t.is(u32(value, 4), 6); // total weight
  t.deepEqual([...value.subarray(8, 14)], [127, 0, 0, 1, 0x23, 0x29]);
  t.is(u32(value, 16), 1);
  t.deepEqual([...value.subarray(20, 26)], [127, 0, 0, 3, 0x23, 0x2b]);
  t.is(u32(value, 28), 6);
  t.deepEqual(decodeServiceValue(value), [endpoints[0], endpoints[2]]);
});

test('no endpoint is a total weight of 0 (the program refuses the connect)', (t) => {
  const value = encodeServiceValue([]);
  t.is(u32(value, 0), 0);
  t.is(u32(value, 4), 0);
});

test('wrong input is refused at the edge, naming the field', (t) => {
  t.throws(() => encodeServiceKey('::1', 80), {
    message: /virtual IP address must be an IPv4 address, got "::1"/,
  });
  t.throws(() => encodeServiceKey('10.0.0.1', 0), {
    message: /port must be an integer from 1 to 65535, got 0/,
  });
  t.throws(() => encodeServiceValue([{ address: '127.0.0.1', port: 1, weight: 1.5 }]), {
    message: /weight must be an integer from 0 to 65535, got 1.5/,
  });
  const many = Array.from({ length: MAX_KERNEL_ENDPOINTS + 1 }, (_, i) => ({
    address: '127.0.0.1',
    port: 1000 + i,
    weight: 1,
  }));
  t.throws(() => encodeServiceValue(many), {
    message: /at most 128 endpoints fit a kernel map entry, got 129/,
  });
});

test('per-CPU counters are summed; the possible CPUs come from their ranges', (t) => {
  const value = Buffer.alloc(16);
  value.writeBigUInt64LE(3n, 0);
  value.writeBigUInt64LE(4n, 8);
  if (endianness() === 'LE') t.is(sumPerCpu(value), 7);
  t.is(possibleCpus('0-1\n'), 2);
  t.is(possibleCpus('0,2-3'), 4);
  t.is(possibleCpus('0'), 1);
});

test("a guarded port's key is bpf_sock_addr.user_port as a __u32; the owner a __u64 cgroup id", (t) => {
  // user_port holds the port in network order in its first two bytes.
  t.deepEqual([...encodePortKey(8080)], [0x1f, 0x90, 0, 0]);
  t.is(decodePortKey(encodePortKey(65535)), 65535);
  t.throws(() => encodePortKey(0), { message: 'port must be an integer from 1 to 65535, got 0' });
  const id = 0x1234_5678_9abc_def0n;
  const value = encodeCgroupId(id);
  t.is(value.length, 8);
  t.is(endianness() === 'LE' ? value[0] : value[7], 0xf0, 'host order');
  t.is(decodeCgroupId(value), id);
});
