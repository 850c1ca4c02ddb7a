// CPU and memory per replica over the last minute, for the sparklines: every `intervalMs` each
// host's runtime is read once (GET /v1/replicas?stats=true, as `orrery top` does), CPU is the
// rate between two reads of the cumulative counter, memory the last read. A read that fails
// marks the host unreachable and adds a gap to each of its replicas' series, never a zero.
import type { HostSample, HostTarget } from '../../platform/runtime-api.ts';
import { PolledModel } from './polled.ts';
import { appendSample } from './sparkline.ts';

export interface ReplicaSeries {
  readonly host: string;
  /** Millicores, oldest first; undefined where no rate could be had. */
  readonly cpu: readonly (number | undefined)[];
  /** Bytes, oldest first. */
  readonly memory: readonly (number | undefined)[];
}

/** What the rows read of the usage. */
export interface UsageReader {
  /** By `namespace/name`. */
  series(key: string): ReplicaSeries | undefined;
  /** Why the host's runtime could not be read at the last poll, or undefined when it could. */
  hostError(host: string): string | undefined;
}

export interface UsageModelOptions {
  /** The hosts to read, as the cache has them now. */
  hosts(): readonly HostTarget[];
  token(host: string): Promise<string>;
  scrape(target: HostTarget, token: string, signal: AbortSignal): Promise<HostSample>;
  /** Default 1000. */
  intervalMs?: number;
}

interface Counter {
  readonly at: number;
  readonly cpuNanos: number;
}

export class UsageModel extends PolledModel implements UsageReader {
  readonly #opts: UsageModelOptions;
  readonly #series = new Map<string, ReplicaSeries>();
  readonly #counters = new Map<string, Counter>();
  readonly #hostErrors = new Map<string, string>();

  constructor(opts: UsageModelOptions) {
    super(opts.intervalMs ?? 1000);
    this.#opts = opts;
  }

  series(key: string): ReplicaSeries | undefined {
    return this.#series.get(key);
  }

  hostError(host: string): string | undefined {
    return this.#hostErrors.get(host);
  }

  /** One read of every host; a read of no host, with no series left to end and no error to clear, changes nothing. */
  protected async read(): Promise<boolean> {
    const hosts = this.#opts.hosts();
    const results = await Promise.all(
      hosts.map(async (h) => {
        try {
          const token = await this.#opts.token(h.name);
          return { host: h.name, sample: await this.#opts.scrape(h, token, this.abort.signal) };
        } catch (err) {
          return { host: h.name, error: (err as Error).message };
        }
      }),
    );
    if (this.abort.signal.aborted) return false;
    const changed = results.length > 0 || this.#series.size > 0 || this.#hostErrors.size > 0;
    this.#hostErrors.clear();
    const seen = new Set<string>();
    for (const r of results) {
      if (r.error !== undefined) this.#hostErrors.set(r.host, r.error);
      else if (r.sample) for (const key of this.add(r.sample)) seen.add(key);
    }
    // Not in any answer (its host failed, or it was not running): a gap.
    for (const [key, s] of this.#series) {
      if (seen.has(key)) continue;
      const next = {
        host: s.host,
        cpu: appendSample(s.cpu, undefined),
        memory: appendSample(s.memory, undefined),
      };
      if (next.cpu.every((v) => v === undefined) && next.memory.every((v) => v === undefined)) {
        this.#series.delete(key);
        this.#counters.delete(key);
      } else this.#series.set(key, next);
    }
    return changed;
  }

  /** Adds one host's answer; returns the keys it had. */
  add(sample: HostSample): string[] {
    const keys: string[] = [];
    for (const r of sample.replicas) {
      const key = `${r.namespace}/${r.name}`;
      keys.push(key);
      const prev = this.#counters.get(key);
      let cpu: number | undefined;
      // A counter that went down is a new cgroup (a restart): no rate until the next read.
      if (prev && sample.at > prev.at && r.cpuUsageNanos >= prev.cpuNanos) {
        cpu = (r.cpuUsageNanos - prev.cpuNanos) / ((sample.at - prev.at) * 1000);
      }
      this.#counters.set(key, { at: sample.at, cpuNanos: r.cpuUsageNanos });
      const s = this.#series.get(key);
      this.#series.set(key, {
        host: sample.host,
        cpu: appendSample(s?.cpu ?? [], cpu),
        memory: appendSample(s?.memory ?? [], r.memoryCurrentBytes),
      });
    }
    return keys;
  }
}
