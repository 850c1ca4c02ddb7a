// The endpoints of a Service that the mesh proxies have ejected now (outlier detection), from the
// lists the live proxies publish in their heartbeat Leases (crds/proxy-ejected.ts). Ejection is
// per proxy, so per host: an endpoint counts when at least one live proxy has ejected it. Pure.

import { PROXY_EJECTED_ANNOTATION } from '../../crds/labels.ts';
import { decodeEjected } from '../../crds/proxy-ejected.ts';
import type { Service } from '../../crds/types.ts';
import type { Lease } from '../../kube/index.ts';

export interface EjectedEndpoint {
  replica: string;
  /** The Service ports it is ejected on, sorted. */
  ports: string[];
  /** The Leases (`proxy-<name>`) of the proxies that ejected it, sorted. */
  proxies: string[];
}

export interface EjectedSummary {
  /** Endpoints (replicas among `endpoints`) ejected by at least one of the proxies, by name. */
  endpoints: EjectedEndpoint[];
  /** Proxies whose list was cut short (its `+<n>`): the count is then a lower bound. */
  partial: string[];
}

/**
 * What `proxies` (the live ones serving the Service's namespace) have ejected among the Service's
 * `endpoints` (replica names). A replica a proxy still lists but the Service no longer selects is
 * left out, so the count never exceeds the endpoints.
 */
export function ejectedOf(
  service: Service,
  proxies: readonly Lease[],
  endpoints: ReadonlySet<string>,
): EjectedSummary {
  const namespace = service.metadata.namespace;
  const name = service.metadata.name;
  const byReplica = new Map<string, { ports: Set<string>; proxies: Set<string> }>();
  const partial: string[] = [];
  for (const lease of proxies) {
    const proxy = lease.metadata?.name ?? '';
    const { ports, omitted } = decodeEjected(lease.metadata?.annotations?.[PROXY_EJECTED_ANNOTATION]);
    if (omitted > 0) partial.push(proxy);
    for (const p of ports) {
      if (p.namespace !== namespace || p.service !== name) continue;
      for (const replica of p.replicas) {
        if (!endpoints.has(replica)) continue;
        const e = byReplica.get(replica) ?? { ports: new Set<string>(), proxies: new Set<string>() };
        e.ports.add(p.port);
        e.proxies.add(proxy);
        byReplica.set(replica, e);
      }
    }
  }
  return {
    endpoints: [...byReplica.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([replica, e]) => ({ replica, ports: [...e.ports].sort(), proxies: [...e.proxies].sort() })),
    partial: partial.sort(),
  };
}

/** Names at most this many ejected endpoints in a message; the rest are counted. */
const MESSAGE_NAMES = 3;

/**
 * A short sentence for a condition message, empty when nothing is ejected:
 * `1 ejected by outlier detection: web-1 (port http, by proxy-node-a)`.
 */
export function ejectedMessage(summary: EjectedSummary): string {
  const { endpoints, partial } = summary;
  if (endpoints.length === 0 && partial.length === 0) return '';
  const named = endpoints
    .slice(0, MESSAGE_NAMES)
    .map(
      (e) =>
        `${e.replica} (port${e.ports.length > 1 ? 's' : ''} ${e.ports.join(', ')}, by ${e.proxies.join(', ')})`,
    );
  const more = endpoints.length - named.length;
  const list = `${named.join(', ')}${more > 0 ? ` and ${more} more` : ''}`;
  const head = `${endpoints.length} ejected by outlier detection${endpoints.length > 0 ? `: ${list}` : ''}`;
  return partial.length > 0
    ? `${head}, maybe more (${partial.join(', ')} listed only part of ${partial.length > 1 ? 'theirs' : 'its'})`
    : head;
}
