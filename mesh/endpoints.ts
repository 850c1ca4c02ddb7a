/**
 * What the proxy serves and where it forwards (docs/DESIGN.md §6.1), read from a Service and
 * its EndpointSlices as the operator writes them (§3.4). Pure: the proxy calls these on every
 * change and compares the results with what it has.
 */
import type { Upstream } from '../crds/slice-endpoints.ts';
import type { Service } from '../crds/types.ts';

// How slices are read is shared with the runtime's kernel fast path, so it lives in crds/.
export { serviceKeyOfSlice, type Upstream, upstreamsOf } from '../crds/slice-endpoints.ts';

export type ServicePort = Service['spec']['ports'][number];

/** The address the proxy binds for a Service: its virtual IP, when it has one on loopback. */
export function listenAddressOf(service: Service): string | undefined {
  const vip = service.status?.virtualIP;
  return vip && isLoopbackV4(vip) ? vip : undefined;
}

/**
 * 127.0.0.0/8 in dotted decimal. The proxy binds only loopback addresses: a virtual IP is reached
 * on this host, and a status that named another address must not open a port to the network.
 */
export function isLoopbackV4(address: string): boolean {
  const parts = address.split('.');
  return (
    parts.length === 4 &&
    parts[0] === '127' &&
    parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255)
  );
}

/** A short fingerprint of a set of upstreams, to skip work when a watch event changed none of them. */
export function fingerprint(upstreams: readonly Upstream[]): string {
  return upstreams.map((u) => `${u.id}${u.ready ? '+' : '-'}`).join(',');
}
