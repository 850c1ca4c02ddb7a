// Requests per second and p99 latency per Service, from the mesh proxies (the Services view's RPS
// and P99 columns): every `intervalMs` each proxy whose Lease publishes its /metrics
// (orrery.dev/proxy-metrics) is read once; a Service's rate is the increase of the responses it
// answered (`orrery_proxy_responses_total`, every port and class) between two reads, summed over
// the proxies, and its p99 the quantile of the increase of its latency histogram
// (`orrery_proxy_request_duration_seconds`) over the same window. A Service no proxy has answered
// for shows no numbers, rather than zeros it did not measure. And which endpoints the proxies'
// outlier detection has ejected, from their Leases (the Endpoints view's `ejected` state).
import { decodeEjected } from '../../crds/proxy-ejected.ts';
import { forEachLimited } from '../../platform/concurrency.ts';
import { counterIncrease, histogramQuantile, readMetrics, samplesOf } from '../../platform/prometheus.ts';
import { PolledModel } from './polled.ts';

const PROXY_READS_AT_ONCE = 8;

const RESPONSES = 'orrery_proxy_responses_total';
const BUCKETS = 'orrery_proxy_request_duration_seconds_bucket';
const WANTED = new Set([RESPONSES, BUCKETS]);

/** One proxy's counters per Service (`namespace/name`). */
interface Counts {
  at: number;
  requests: Map<string, number>;
  /** le (seconds, +Inf as Infinity) → cumulative count. */
  buckets: Map<string, Map<number, number>>;
}

export interface ServiceTraffic {
  /** Requests per second over the last window, every proxy. */
  rps: number;
  /** p99 latency over the same window, ms; undefined without a request in it. */
  p99Ms: number | undefined;
}

/** What the Services and Endpoints rows read. */
export interface MeshReader {
  service(key: string): ServiceTraffic | undefined;
  /** Whether a proxy's outlier detection has the replica ejected from the Service now. */
  ejected(namespace: string, service: string, replica: string): boolean;
}

/** A mesh proxy as its Lease describes it. */
export interface ProxyInfo {
  /** Its /metrics URL (orrery.dev/proxy-metrics); undefined when it publishes none. */
  metricsUrl: string | undefined;
  /** The endpoints it has ejected now (orrery.dev/proxy-ejected, crds/proxy-ejected.ts). */
  ejected: string | undefined;
}

/** A proxy's counters from its /metrics text. */
export function countsOf(text: string, at: number): Counts {
  const requests = new Map<string, number>();
  const buckets = new Map<string, Map<number, number>>();
  for (const { name, labels, value } of samplesOf(text, WANTED)) {
    if (!labels.namespace || !labels.service) continue;
    const key = `${labels.namespace}/${labels.service}`;
    if (name === RESPONSES) {
      requests.set(key, (requests.get(key) ?? 0) + value);
    } else {
      const le = labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(labels.le);
      if (Number.isNaN(le)) continue;
      const b = buckets.get(key) ?? new Map<number, number>();
      buckets.set(key, b);
      b.set(le, (b.get(le) ?? 0) + value); // summed over the Service's ports
    }
  }
  return { at, requests, buckets };
}

/** Each Service's traffic between two reads of the proxies (`before` per proxy, `after` per proxy). */
export function trafficBetween(
  before: ReadonlyMap<string, Counts>,
  after: ReadonlyMap<string, Counts>,
): Map<string, ServiceTraffic> {
  const rps = new Map<string, number>();
  const buckets = new Map<string, Map<number, number>>();
  for (const [proxy, now] of after) {
    const prev = before.get(proxy);
    if (!prev || now.at <= prev.at) continue;
    const seconds = (now.at - prev.at) / 1000;
    for (const [key, n] of now.requests) {
      rps.set(key, (rps.get(key) ?? 0) + counterIncrease(n, prev.requests.get(key) ?? 0) / seconds);
    }
    for (const [key, b] of now.buckets) {
      const wasB = prev.buckets.get(key);
      const sum = buckets.get(key) ?? new Map<number, number>();
      buckets.set(key, sum);
      for (const [le, n] of b) {
        sum.set(le, (sum.get(le) ?? 0) + counterIncrease(n, wasB?.get(le) ?? 0));
      }
    }
  }
  const out = new Map<string, ServiceTraffic>();
  for (const [key, r] of rps) {
    const q = buckets.get(key);
    const p99 = q ? histogramQuantile(0.99, q) : undefined;
    out.set(key, { rps: r, p99Ms: p99 === undefined ? undefined : p99 * 1000 });
  }
  return out;
}

export interface MeshModelOptions {
  /** The proxies now (their Leases). */
  proxies(): Promise<readonly ProxyInfo[]>;
  read?: (url: string, signal: AbortSignal) => Promise<string>;
  /** Default 2000. */
  intervalMs?: number;
}

export class MeshModel extends PolledModel implements MeshReader {
  readonly #opts: MeshModelOptions;
  #last = new Map<string, Counts>();
  #traffic = new Map<string, ServiceTraffic>();
  /** `namespace/service/replica` of every endpoint a proxy has ejected. */
  #ejected = new Set<string>();

  constructor(opts: MeshModelOptions) {
    super(opts.intervalMs ?? 2000);
    this.#opts = opts;
  }

  service(key: string): ServiceTraffic | undefined {
    return this.#traffic.get(key);
  }

  ejected(namespace: string, service: string, replica: string): boolean {
    return this.#ejected.has(`${namespace}/${service}/${replica}`);
  }

  /** One read of every proxy; with no proxy now and none before, nothing changed. */
  protected async read(): Promise<boolean> {
    const read = this.#opts.read ?? ((url, signal) => readMetrics(url, signal));
    const proxies = await this.#opts.proxies().catch(() => [] as readonly ProxyInfo[]);
    const ejected = new Set<string>();
    for (const p of proxies) {
      for (const port of decodeEjected(p.ejected).ports)
        for (const replica of port.replicas) ejected.add(`${port.namespace}/${port.service}/${replica}`);
    }
    const changed =
      proxies.length > 0 || this.#last.size > 0 || this.#traffic.size > 0 || this.#ejected.size > 0;
    this.#ejected = ejected;
    const urls = proxies.map((p) => p.metricsUrl).filter((u): u is string => Boolean(u));
    const now = new Map<string, Counts>();
    // A bounded number at once, as the autoscaler reads them: a thousand nodes, a thousand proxies.
    await forEachLimited(urls, PROXY_READS_AT_ONCE, async (url) => {
      try {
        now.set(url, countsOf(await read(url, this.abort.signal), performance.now()));
      } catch {
        // unreachable this time: no numbers from it for this window
      }
    });
    this.#traffic = trafficBetween(this.#last, now);
    this.#last = now;
    return changed;
  }
}
