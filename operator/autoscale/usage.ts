/**
 * Per-replica CPU and memory from the hosts' runtimes (docs/DESIGN.md §4.6), as metrics-server
 * scrapes kubelets: one `GET /v1/replicas?stats=true` per host (every replica's cgroup counters in
 * one answer), a bounded number of hosts at once, and CPU as the rate between two samples of the
 * cumulative usage. Nothing is written to the API: the numbers live here, for `orrery top` and
 * the autoscaler.
 */
import { forEachLimited } from '../concurrency.ts';

/** One replica's counters in a host's answer. */
export interface ReplicaCounters {
  namespace: string;
  name: string;
  /** Cumulative CPU time, nanoseconds. */
  cpuUsageNanos: number;
  memoryCurrentBytes: number;
  pids: number | undefined;
}

/** A host's answer, with when it was taken (ms, monotonic). */
export interface HostSample {
  host: string;
  at: number;
  replicas: ReplicaCounters[];
}

export interface HostTarget {
  name: string;
  /** Its runtime's API base URL (Host.status.apiEndpoint). */
  endpoint: string;
}

/** Hosts scraped at once. */
export const SCRAPE_CONCURRENCY = 8;
const SCRAPE_TIMEOUT_MS = 5_000;

interface ReplicasAnswer {
  items?: { namespace?: string; name?: string; stats?: Record<string, unknown> | null }[];
}

/** Reads one host's counters; rejects with a message naming the host on any failure. */
export async function scrapeHost(
  target: HostTarget,
  token: string,
  signal?: AbortSignal,
): Promise<HostSample> {
  const url = `${target.endpoint.replace(/\/+$/, '')}/v1/replicas?stats=true`;
  let res: Response;
  try {
    res = await fetch(url, {
      headers: { authorization: `Bearer ${token}` },
      signal: signal
        ? AbortSignal.any([signal, AbortSignal.timeout(SCRAPE_TIMEOUT_MS)])
        : AbortSignal.timeout(SCRAPE_TIMEOUT_MS),
    });
  } catch (err) {
    throw new Error(`host ${target.name}: ${url}: ${(err as Error).cause ?? (err as Error).message}`);
  }
  const at = performance.now();
  if (!res.ok)
    throw new Error(
      `host ${target.name}: ${url} answered ${res.status}: ${(await res.text()).trim().slice(0, 200)}`,
    );
  const body = (await res.json()) as ReplicasAnswer;
  const replicas: ReplicaCounters[] = [];
  for (const item of body.items ?? []) {
    const s = item.stats;
    if (!item.namespace || !item.name || !s) continue;
    const cpu = Number(s.cpuUsageNanos);
    const memory = Number(s.memoryCurrentBytes);
    if (!Number.isFinite(cpu) || !Number.isFinite(memory)) continue;
    replicas.push({
      namespace: item.namespace,
      name: item.name,
      cpuUsageNanos: cpu,
      memoryCurrentBytes: memory,
      pids: typeof s.pids === 'number' ? s.pids : undefined,
    });
  }
  return { host: target.name, at, replicas };
}

/** Every host at most SCRAPE_CONCURRENCY at a time; a host that fails is reported, not fatal. */
export async function scrapeHosts(
  targets: readonly HostTarget[],
  token: string,
  signal?: AbortSignal,
): Promise<{ samples: HostSample[]; errors: string[] }> {
  const samples: HostSample[] = [];
  const errors: string[] = [];
  await forEachLimited(targets, SCRAPE_CONCURRENCY, async (t) => {
    try {
      samples.push(await scrapeHost(t, token, signal));
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
