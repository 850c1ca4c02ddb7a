/**
 * Reading Prometheus text exposition (what every Orrery daemon's /metrics serves): the samples of
 * the metrics asked for, with their labels. Enough for the autoscaler and the TUI to read the
 * mesh proxies' counters and histograms; not a general parser (no timestamps, no exemplars).
 */

const READ_TIMEOUT_MS = 5_000;
/** An answer larger than this is not a daemon's metrics (a proxy with 1,000 endpoints serves ~0.5 MiB). */
const MAX_METRICS_BYTES = 16 * 1024 * 1024;

/** GET a /metrics URL's text (5 s at most); rejects naming the URL. */
export async function readMetrics(url: string, signal?: AbortSignal): Promise<string> {
  const timeout = AbortSignal.timeout(READ_TIMEOUT_MS);
  let res: Response;
  try {
    res = await fetch(url, { signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
  } catch (err) {
    throw new Error(`${url}: ${(err as Error).cause ?? (err as Error).message}`, { cause: err });
  }
  if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  const length = Number(res.headers.get('content-length'));
  if (length > MAX_METRICS_BYTES) {
    await res.body?.cancel();
    throw new Error(`${url}: ${length} bytes of metrics is too many`);
  }
  return res.text();
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function unescapeLabel(value: string): string {
  return value.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

/** The samples of the metrics named in `names` (a histogram's are `<name>_bucket`, `_sum`, `_count`). */
export function* samplesOf(text: string, names: ReadonlySet<string>): Generator<Sample> {
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    const nameEnd = brace >= 0 && (space < 0 || brace < space) ? brace : space;
    if (nameEnd <= 0) continue;
    const name = line.slice(0, nameEnd);
    if (!names.has(name)) continue;
    const labels: Record<string, string> = {};
    let rest = line.slice(nameEnd);
    if (rest.startsWith('{')) {
      const close = rest.lastIndexOf('}');
      if (close < 0) continue;
      for (const m of rest.slice(1, close).matchAll(LABEL))
        labels[m[1] as string] = unescapeLabel(m[2] as string);
      rest = rest.slice(close + 1);
    }
    const value = Number(rest.trim().split(' ')[0]);
    if (rest.trim() === '' || Number.isNaN(value)) continue;
    yield { name, labels, value };
  }
}

/**
 * How much a counter rose from `before` to `now`; a counter that went down was reset (its process
 * restarted, its series made again), so its rise is its value, as Prometheus's rate() takes it.
 */
export function counterIncrease(now: number, before: number): number {
  return now >= before ? now - before : now;
}

/**
 * The q-quantile of a histogram from its cumulative buckets (`le` → count, +Inf included), as
 * PromQL's histogram_quantile: linear within the bucket it falls in; the upper bound of the last
 * finite bucket when it falls in +Inf; undefined without observations.
 */
export function histogramQuantile(q: number, buckets: ReadonlyMap<number, number>): number | undefined {
  const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [le, count] of sorted) {
    if (count >= rank) {
      if (le === Number.POSITIVE_INFINITY) return lowerBound;
      const inBucket = count - lowerCount;
      return inBucket <= 0 ? le : lowerBound + ((le - lowerBound) * (rank - lowerCount)) / inBucket;
    }
    lowerBound = le;
    lowerCount = count;
  }
  return lowerBound;
}
