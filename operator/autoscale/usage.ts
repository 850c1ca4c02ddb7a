/**
 * Per-replica CPU and memory from the hosts' runtimes (docs/DESIGN.md §4.6), as metrics-server
 * scrapes kubelets: one `GET /v1/replicas?stats=true` per host (every replica's cgroup counters in
 * one answer), a bounded number of hosts at once, and CPU as the rate between two samples of the
 * cumulative usage. Nothing is written to the API: the numbers live here, for `orrery top` and
 * the autoscaler.
 */

import { forEachLimited } from '../../platform/concurrency.ts';
import { type HostSample, type HostTarget, scrapeHost } from '../../platform/runtime-api.ts';

// The read itself is every runtime client's (platform/runtime-api.ts); re-exported for the autoscaler.
export {
  type HostSample,
  type HostTarget,
  type ReplicaCounters,
  scrapeHost,
} from '../../platform/runtime-api.ts';

/** Hosts scraped at once. */
export const SCRAPE_CONCURRENCY = 8;

/** Every host at most SCRAPE_CONCURRENCY at a time; a host that fails is reported, not fatal. */
export async function scrapeHosts(
  targets: readonly HostTarget[],
  /** Each host's runtime token (one for all, or each host's own). */
  tokenOf: (host: string) => string,
  signal?: AbortSignal,
): Promise<{ samples: HostSample[]; errors: string[] }> {
  const samples: HostSample[] = [];
  const errors: string[] = [];
  await forEachLimited(targets, SCRAPE_CONCURRENCY, async (t) => {
    try {
      samples.push(await scrapeHost(t, tokenOf(t.name), signal));
    } catch (err) {
      errors.push((err as Error).message);
    }
  });
  return { samples, errors };
}

/** A replica's usage as `kubectl top` shows it. */
export interface ReplicaUsage {
  namespace: string;
  name: string;
  host: string;
  /** CPU over the window between the last two samples, millicores; undefined after one sample. */
  cpuMillis: number | undefined;
  memoryBytes: number;
  /** The window the CPU rate is over, ms. */
  windowMs: number | undefined;
}

/**
 * The last sample per replica, and the usage between it and the one before. A replica that
 * restarted (its cumulative CPU went down: a new cgroup) has no rate until its next sample.
 */
export class UsageTracker {
  readonly #last = new Map<string, { at: number; cpu: number }>();
  readonly #usage = new Map<string, ReplicaUsage>();

  add(sample: HostSample): void {
    for (const r of sample.replicas) {
      const key = `${r.namespace}/${r.name}`;
      const prev = this.#last.get(key);
      let cpuMillis: number | undefined;
      let windowMs: number | undefined;
      if (prev && sample.at > prev.at && r.cpuUsageNanos >= prev.cpu) {
        windowMs = sample.at - prev.at;
        // ns of CPU per ms of wall time = millicores / 1e3 × 1e3.
        cpuMillis = (r.cpuUsageNanos - prev.cpu) / (windowMs * 1000);
      }
      this.#last.set(key, { at: sample.at, cpu: r.cpuUsageNanos });
      this.#usage.set(key, {
        namespace: r.namespace,
        name: r.name,
        host: sample.host,
        cpuMillis,
        memoryBytes: r.memoryCurrentBytes,
        windowMs,
      });
    }
  }

  get(namespace: string, name: string): ReplicaUsage | undefined {
    return this.#usage.get(`${namespace}/${name}`);
  }

  all(): ReplicaUsage[] {
    return [...this.#usage.values()];
  }

  /** Forgets replicas not in `keep` (namespace/name): deleted ones do not accumulate. */
  retain(keep: ReadonlySet<string>): void {
    for (const key of this.#last.keys()) {
      if (keep.has(key)) continue;
      this.#last.delete(key);
      this.#usage.delete(key);
    }
  }
}
