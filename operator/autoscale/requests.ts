/**
 * Requests per second per replica from the mesh (docs/DESIGN.md §4.6), the autoscaler's second
 * metric: every mesh proxy publishes its /metrics URL on its Lease (PROXY_METRICS_ANNOTATION), and
 * counts the HTTP requests it sends to each endpoint (`orrery_proxy_upstream_requests_total`, each
 * try, by namespace and endpoint: the replica). One read per proxy per period, a bounded number at
 * once; a replica's rate is the sum over the proxies of each one's counter increase over the time
 * between its last two reads. A counter that went down was reset (a proxy restarted, an endpoint's
 * series dropped and made again): its increase is its value, as Prometheus's rate() takes it.
 * Nothing is written to the API.
 */

import { forEachLimited } from '../../platform/concurrency.ts';
import { counterIncrease, readMetrics, samplesOf } from '../../platform/prometheus.ts';

const REQUESTS = new Set(['orrery_proxy_upstream_requests_total']);
/** Proxies read at once. */
export const PROXY_SCRAPE_CONCURRENCY = 8;

/** `namespace/endpoint` → requests sent, summed over the Services and ports of one proxy's text. */
export function endpointRequests(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const { labels, value } of samplesOf(text, REQUESTS)) {
    if (!labels.namespace || !labels.endpoint) continue;
    const key = `${labels.namespace}/${labels.endpoint}`;
    counts.set(key, (counts.get(key) ?? 0) + value);
  }
  return counts;
}

/** One proxy's counters at a time (ms, monotonic). */
export interface ProxySample {
  proxy: string;
  at: number;
  counts: Map<string, number>;
}

/** Reads one proxy's /metrics; rejects naming the URL. */
export async function scrapeProxy(url: string, signal?: AbortSignal): Promise<ProxySample> {
  const text = await readMetrics(url, signal).catch((err: Error) => {
    throw new Error(`mesh proxy ${err.message}`, { cause: err });
  });
  return { proxy: url, at: performance.now(), counts: endpointRequests(text) };
}

/** Every proxy URL, at most PROXY_SCRAPE_CONCURRENCY at a time; one that fails is reported, not fatal. */
export async function scrapeProxies(
  urls: readonly string[],
): Promise<{ samples: ProxySample[]; errors: string[] }> {
  const samples: ProxySample[] = [];
  const errors: string[] = [];
  await forEachLimited(urls, PROXY_SCRAPE_CONCURRENCY, async (url) => {
    try {
      samples.push(await scrapeProxy(url));
    } catch (err) {
      errors.push((err as Error).message);
    }
  });
  return { samples, errors };
}

/** Each proxy's last read and its rates since the one before. */
export class RequestRateTracker {
  readonly #last = new Map<string, ProxySample>();
  readonly #rates = new Map<string, Map<string, number>>();

  add(sample: ProxySample): void {
    const prev = this.#last.get(sample.proxy);
    this.#last.set(sample.proxy, sample);
    if (!prev || sample.at <= prev.at) return;
    const seconds = (sample.at - prev.at) / 1000;
    const rates = new Map<string, number>();
    for (const [key, count] of sample.counts) {
      const before = prev.counts.get(key) ?? 0;
      rates.set(key, counterIncrease(count, before) / seconds);
    }
    this.#rates.set(sample.proxy, rates);
  }

  /** Only these proxies are current (the others' Leases are gone). */
  keep(proxies: ReadonlySet<string>): void {
    for (const proxy of this.#last.keys()) {
      if (proxies.has(proxy)) continue;
      this.#last.delete(proxy);
      this.#rates.delete(proxy);
    }
  }

  /**
   * Requests per second to the replica, over every proxy with a rate: 0 for one no proxy sent a
   * request to; undefined until a proxy has been read twice.
   */
  rate(namespace: string, name: string): number | undefined {
    if (this.#rates.size === 0) return undefined;
    const key = `${namespace}/${name}`;
    let sum = 0;
    for (const rates of this.#rates.values()) sum += rates.get(key) ?? 0;
    return sum;
  }
}
