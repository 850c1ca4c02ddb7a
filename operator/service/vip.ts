// Stable virtual IPs for Services from a loopback range (default 127.77.0.0/16). Every address in
// 127.0.0.0/8 reaches the local host on Linux without configuration, so the mesh proxy can bind
// VIP:port directly. The first choice is derived from namespace/name, so a Service deleted and
// re-created (or an operator restarted without its cache) tends to get the same address; on a
// collision the next free address is taken.
import { createHash } from 'node:crypto';

export interface Cidr {
  base: number; // network address as an unsigned 32-bit integer
  size: number; // number of addresses
}

export function parseCidr(cidr: string): Cidr {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  const octets = match?.slice(1, 5).map(Number) ?? [];
  const bits = Number(match?.[5]);
  if (!match || octets.some((o) => o > 255) || bits < 8 || bits > 30) {
    throw new TypeError(
      `--service-cidr: expected an IPv4 CIDR with a prefix from /8 to /30 such as 127.77.0.0/16, got '${cidr}'`,
    );
  }
  if (octets[0] !== 127)
    throw new TypeError(`--service-cidr: must lie in 127.0.0.0/8 (loopback), got '${cidr}'`);
  const size = 2 ** (32 - bits);
  const address = octets.reduce((acc, o) => acc * 256 + o, 0);
  return { base: address - (address % size), size };
}

function formatIp(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}

function parseIp(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** Picks a free address in the range for key (namespace/name), skipping network and broadcast addresses. */
export function allocateVip(
  range: Cidr,
  key: string,
  inUse: Pick<ReadonlySet<string>, 'has'>,
): string | undefined {
  const usable = range.size - 2;
  const start = createHash('sha256').update(key).digest().readUInt32BE(0) % usable;
  for (let i = 0; i < usable; i++) {
    const ip = formatIp(range.base + 1 + ((start + i) % usable));
    if (!inUse.has(ip)) return ip;
  }
  return undefined;
}

export function inRange(range: Cidr, ip: string): boolean {
  const value = parseIp(ip);
  return value > range.base && value < range.base + range.size - 1;
}
