// What a mesh proxy's outlier detection has ejected now, as the proxy writes it in its heartbeat
// Lease (annotation PROXY_EJECTED_ANNOTATION, refreshed at each renewal) and the operator's
// Service controller reads it into Service status (ejectedEndpoints):
//
//   <namespace>/<service>/<port>=<replica>,<replica>;<namespace>/<service>/<port>=<replica>;+<n>
//
// Ports sorted by key, replicas by name; empty when nothing is ejected. The value is bounded
// (PROXY_EJECTED_MAX_BYTES): replicas that do not fit are left out, and a last item `+<n>` counts
// them. None of the names can hold `/`, `=`, `,`, `;` or `+` (namespaces, Services and replicas
// are DNS names, ports DNS labels).

/** The endpoints of one Service port that a proxy has ejected, by replica name. */
export interface EjectedPort {
  namespace: string;
  service: string;
  port: string;
  replicas: string[];
}

/** Bound of the annotation's value, in bytes: about a hundred endpoints. */
export const PROXY_EJECTED_MAX_BYTES = 4096;

const keyOf = (p: EjectedPort) => `${p.namespace}/${p.service}/${p.port}`;
const bytes = (s: string) => Buffer.byteLength(s);

/** The annotation's value for `ports` (in any order, duplicates allowed), at most `maxBytes`. */
export function encodeEjected(ports: readonly EjectedPort[], maxBytes = PROXY_EJECTED_MAX_BYTES): string {
  const byKey = new Map<string, Set<string>>();
  for (const p of ports) {
    if (p.replicas.length === 0) continue;
    const key = keyOf(p);
    const set = byKey.get(key) ?? new Set<string>();
    for (const r of p.replicas) set.add(r);
    byKey.set(key, set);
  }
  const items = [...byKey.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, set]) => ({ key, replicas: [...set].sort() }));
  const full = items.map((i) => `${i.key}=${i.replicas.join(',')}`).join(';');
  if (bytes(full) <= maxBytes) return full;

  // Too long: as many replicas as fit with room left for `;+<n>` (n at most the total).
  const total = items.reduce((n, i) => n + i.replicas.length, 0);
  const budget = maxBytes - bytes(`;+${total}`);
  let out = '';
  let listed = 0;
  fill: for (const item of items) {
    let piece = `${out ? ';' : ''}${item.key}=`;
    for (const r of item.replicas) {
      const next = piece.endsWith('=') ? `${piece}${r}` : `${piece},${r}`;
      if (bytes(out) + bytes(next) > budget) {
        if (!piece.endsWith('=')) out += piece;
        break fill;
      }
      piece = next;
      listed++;
    }
    out += piece;
  }
  return `${out}${out ? ';' : ''}+${total - listed}`;
}

/**
 * The ports an annotation value lists, and how many ejected endpoints it left out (`+<n>`).
 * Items that do not parse are skipped: a value from a newer or broken proxy costs only itself.
 */
export function decodeEjected(value: string | undefined): { ports: EjectedPort[]; omitted: number } {
  const ports: EjectedPort[] = [];
  let omitted = 0;
  for (const item of (value ?? '').split(';')) {
    if (!item) continue;
    const more = /^\+(\d+)$/.exec(item);
    if (more) {
      omitted += Number(more[1]);
      continue;
    }
    const eq = item.indexOf('=');
    if (eq < 0) continue;
    const key = item.slice(0, eq).split('/');
    const replicas = item
      .slice(eq + 1)
      .split(',')
      .filter((r) => r !== '');
    if (key.length !== 3 || key.some((k) => k === '') || replicas.length === 0) continue;
    const [namespace, service, port] = key as [string, string, string];
    ports.push({ namespace, service, port, replicas });
  }
  return { ports, omitted };
}
