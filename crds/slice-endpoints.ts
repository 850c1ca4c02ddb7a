/**
 * A Service port's endpoints as its EndpointSlices list them (docs/DESIGN.md §3.4), for every
 * reader of the operator's slices: the mesh proxy's pools and the runtime's kernel fast path.
 * Pure.
 */
import { SERVICE_NAME_LABEL } from './labels.ts';
import type { EndpointSlice } from './types.ts';

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
