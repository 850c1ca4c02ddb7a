// A Service's endpoints (docs/DESIGN.md §6.1, "Endpoints"): the Replicas its selector matches,
// each at its host's address with the Service's ports resolved to that replica's own numbers,
// kept in EndpointSlices of at most SLICE_CAPACITY, as Kubernetes' EndpointSlice controller
// keeps a Service's Pods. Pure: the Service controller reads the caches, calls this, and writes
// only the slices that changed.
import type { EndpointSlice, Replica, Service, ServiceEndpoint } from '../../crds/types.ts';

/** Endpoints per slice (Kubernetes' default maxEndpointsPerSlice is 100). */
export const SLICE_CAPACITY = 100;

export interface Endpoints {
  /** One per selected Replica that runs somewhere and has every Service port, by Replica name. */
  endpoints: ServiceEndpoint[];
  /** Service ports whose targetPort no selected replica declares (by Service port name). */
  unresolved: string[];
}

/** Whether the Service's selector matches the replica (same namespace, every label equal). */
export function selects(service: Service, replica: Replica): boolean {
  if (replica.metadata.namespace !== service.metadata.namespace) return false;
  const labels = replica.metadata.labels ?? {};
  return Object.entries(service.spec.selector).every(([k, v]) => labels[k] === v);
}

/** The port number `targetPort` names on the replica: a number as it is, a name from its status. */
function resolve(targetPort: number | string, replica: Replica): number | undefined {
  if (typeof targetPort === 'number') return targetPort;
  if (/^\d+$/.test(targetPort)) return Number(targetPort);
  return replica.status?.ports?.find((p) => p.name === targetPort)?.port;
}

/**
 * The endpoints of `service` among `replicas` (already narrowed to its namespace is fine). A
 * replica is an endpoint once it is bound and has an address; it is ready when its status says
 * Running and ready and it is not being deleted; serving while ready even when terminating.
 */
export function endpointsOf(service: Service, replicas: readonly Replica[]): Endpoints {
  const endpoints: ServiceEndpoint[] = [];
  const resolvedSomewhere = new Set<string>();
  const candidates = replicas.filter((r) => selects(service, r) && r.spec.host && r.status?.address);
  for (const replica of candidates) {
    const ports: ServiceEndpoint['ports'] = [];
    for (const p of service.spec.ports) {
      const port = resolve(p.targetPort as number | string, replica);
      if (port === undefined) continue;
      resolvedSomewhere.add(p.name);
      ports.push({ name: p.name, port });
    }
    if (ports.length < service.spec.ports.length) continue;
    const running = replica.status?.phase === 'Running' && replica.status.ready === true;
    const terminating = Boolean(replica.metadata.deletionTimestamp);
    endpoints.push({
      replica: replica.metadata.name as string,
      ...(replica.metadata.uid ? { uid: replica.metadata.uid } : {}),
      host: replica.spec.host as string,
      address: replica.status?.address as string,
      ports,
      ready: running && !terminating,
      serving: running,
      terminating,
    });
  }
  endpoints.sort((a, b) => (a.replica < b.replica ? -1 : a.replica > b.replica ? 1 : 0));
  // Unresolved only counts when there was someone to resolve it on: no replica is no condition.
  const unresolved =
    candidates.length === 0
      ? []
      : service.spec.ports.map((p) => p.name).filter((n) => !resolvedSomewhere.has(n));
  return { endpoints, unresolved };
}

/**
 * The slices to have, given the ones there are: an endpoint stays in the slice that holds it (so
 * a change to one replica rewrites one slice), new ones fill the slices with room, then new
 * slices; empty slices go. Returns the slices with their endpoints (existing ones by name, new ones
 * without a name yet) and the names of the slices to delete.
 */
export function planSlices(
  endpoints: readonly ServiceEndpoint[],
  existing: readonly EndpointSlice[],
  capacity = SLICE_CAPACITY,
): { keep: { name: string | undefined; endpoints: ServiceEndpoint[] }[]; remove: string[] } {
  const byReplica = new Map(endpoints.map((e) => [e.replica, e]));
  const placed = new Set<string>();
  const keep: { name: string | undefined; endpoints: ServiceEndpoint[] }[] = [];
  const remove: string[] = [];
  const sorted = [...existing].sort((a, b) => ((a.metadata.name ?? '') < (b.metadata.name ?? '') ? -1 : 1));
  for (const slice of sorted) {
    const mine: ServiceEndpoint[] = [];
    for (const old of slice.endpoints) {
      const now = byReplica.get(old.replica);
      if (now && !placed.has(now.replica) && mine.length < capacity) {
        mine.push(now);
        placed.add(now.replica);
      }
    }
    keep.push({ name: slice.metadata.name as string, endpoints: mine });
  }
  const rest = endpoints.filter((e) => !placed.has(e.replica));
  for (const slice of keep) {
    while (slice.endpoints.length < capacity && rest.length > 0)
      slice.endpoints.push(rest.shift() as ServiceEndpoint);
  }
  while (rest.length > 0) keep.push({ name: undefined, endpoints: rest.splice(0, capacity) });
  // A Service with no endpoint keeps one empty slice, as Kubernetes does: watchers see "none".
  let wanted = keep.filter((s) => s.endpoints.length > 0);
  if (wanted.length === 0) wanted = [keep[0] ?? { name: undefined, endpoints: [] }];
  for (const slice of keep) if (slice.name && !wanted.includes(slice)) remove.push(slice.name);
  return { keep: wanted, remove };
}
