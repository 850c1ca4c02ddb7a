/**
 * What the proxy serves and where it forwards (docs/DESIGN.md §6.1), read from a Service and
 * its EndpointSlices as the operator writes them (§3.4). Pure: the proxy calls these on every
 * change and compares the results with what it has.
 */
import { SERVICE_NAME_LABEL } from '../crds/labels.ts';
import type { EndpointSlice, Service } from '../crds/types.ts';

/** One endpoint of one Service port: a replica at its host address and its own port number. */
export interface Upstream {
  /** Stable within a Service port: the replica at this address and port (Envoy keys hosts by address). */
  readonly id: string;
  readonly replica: string;
  readonly address: string;
  readonly port: number;
  /** Takes new connections: ready and not terminating. */
  readonly ready: boolean;
}

export type ServicePort = Service['spec']['ports'][number];

/** The Service an EndpointSlice belongs to, as `namespace/name`. */
export function serviceKeyOfSlice(slice: EndpointSlice): string | undefined {
  const name = slice.service || slice.metadata.labels?.[SERVICE_NAME_LABEL];
  return name ? `${slice.metadata.namespace}/${name}` : undefined;
}

/**
 * The endpoints of the Service port named `portName` over all of its slices, each once (a replica
 * the operator is moving between slices can briefly be in two), sorted by replica name so that
 * round-robin goes in a stable order.
 */
export function upstreamsOf(slices: readonly EndpointSlice[], portName: string): Upstream[] {
  const byId = new Map<string, Upstream>();
  for (const slice of slices) {
    for (const e of slice.endpoints ?? []) {
      const port = e.ports?.find((p) => p.name === portName)?.port;
      if (port === undefined || !e.address) continue;
      const id = `${e.replica}@${e.address}:${port}`;
      const ready = e.ready === true && e.terminating !== true;
      const seen = byId.get(id);
      if (!seen || (ready && !seen.ready))
        byId.set(id, { id, replica: e.replica, address: e.address, port, ready });
    }
  }
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

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
