// What the kernel map should hold, per VIP:port, and the replicas known down on this host: the
// part of the fast path between the endpoint sources and SocketLb. A replica's exit takes its
// endpoints out of every entry in the same call (the runtime's pidfd exit event, before any API
// round trip), as mesh/local-feed.ts does for the proxy's pools; the map is written only for
// entries whose endpoint list changed.
import type { KernelEndpoint } from './service-map.ts';

/** An endpoint and the replica it belongs to (`namespace/name`). */
export interface ReplicaEndpoint extends KernelEndpoint {
  replica: string;
}

/** The writes the table makes: SocketLb, or a fake in unit tests. */
export interface ServiceMapWriter {
  setService(vip: string, port: number, endpoints: readonly KernelEndpoint[]): void;
  deleteService(vip: string, port: number): boolean;
}

/**
 * Which of an entry's endpoints the kernel gets, from those up (ring-hash: the one the ring
 * gives). Absent: all of them.
 */
export type EndpointSelection = (up: readonly ReplicaEndpoint[]) => readonly ReplicaEndpoint[];

interface Entry {
  vip: string;
  port: number;
  endpoints: readonly ReplicaEndpoint[];
  select?: EndpointSelection | undefined;
  /** What was last written, as a fingerprint; undefined before the first write. */
  written?: string;
}

const fingerprint = (endpoints: readonly KernelEndpoint[]) =>
  endpoints.map((e) => `${e.address}:${e.port}*${e.weight}`).join(',');

export class KernelServiceTable {
  readonly #writer: ServiceMapWriter;
  readonly #entries = new Map<string, Entry>();
  readonly #down = new Set<string>();
  /** Entries found in the map at the start (a previous runtime's), not set since. */
  readonly #stale = new Set<string>();

  /** `found`: what the map holds already; kept (balancing goes on) until `deleteStale()`. */
  constructor(writer: ServiceMapWriter, found: readonly { vip: string; port: number }[] = []) {
    this.#writer = writer;
    for (const { vip, port } of found) this.#stale.add(`${vip}:${port}`);
  }

  /** Deletes the entries found at the start that nothing has set since (once the sources are complete). */
  deleteStale(): number {
    const n = this.#stale.size;
    for (const key of this.#stale) {
      const colon = key.lastIndexOf(':');
      this.#writer.deleteService(key.slice(0, colon), Number(key.slice(colon + 1)));
    }
    this.#stale.clear();
    return n;
  }

  /**
   * Sets the endpoints of `vip:port` (all of them; those of replicas down here are left out, and
   * `select` picks among the rest, again at each replica down or up).
   */
  setPort(
    vip: string,
    port: number,
    endpoints: readonly ReplicaEndpoint[],
    select?: EndpointSelection,
  ): void {
    const key = `${vip}:${port}`;
    this.#stale.delete(key);
    const entry: Entry = { ...(this.#entries.get(key) ?? { vip, port }), endpoints, select };
    this.#entries.set(key, entry);
    this.#write(entry);
  }

  /** Removes `vip:port`: connects to it reach whatever listens there (the proxy). */
  deletePort(vip: string, port: number): void {
    const key = `${vip}:${port}`;
    if (!this.#entries.delete(key) && !this.#stale.delete(key)) return;
    this.#writer.deleteService(vip, port);
  }

  /** The VIP:ports in the table. */
  ports(): { vip: string; port: number }[] {
    return [...this.#entries.values()].map(({ vip, port }) => ({ vip, port }));
  }

  /** Takes `replica`'s endpoints out of every entry now; returns how many entries were written. */
  replicaDown(replica: string): number {
    if (this.#down.has(replica)) return 0;
    this.#down.add(replica);
    return this.#rewriteWith(replica);
  }

  /** Lets `replica`'s endpoints back in (those the sources still list). */
  replicaUp(replica: string): number {
    if (!this.#down.delete(replica)) return 0;
    return this.#rewriteWith(replica);
  }

  #rewriteWith(replica: string): number {
    let written = 0;
    for (const entry of this.#entries.values()) {
      if (entry.endpoints.some((e) => e.replica === replica) && this.#write(entry)) written++;
    }
    return written;
  }

  /** Writes the entry when what it should hold changed; true when it wrote. */
  #write(entry: Entry): boolean {
    const up = entry.endpoints.filter((e) => !this.#down.has(e.replica));
    const endpoints = (entry.select ? entry.select(up) : up).map(({ address, port, weight }) => ({
      address,
      port,
      weight,
    }));
    const next = fingerprint(endpoints);
    if (next === entry.written) return false;
    this.#writer.setService(entry.vip, entry.port, endpoints);
    entry.written = next;
    return true;
  }
}
