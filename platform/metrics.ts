/**
 * Prometheus metrics for the daemons: counters, gauges and histograms with labels, a registry that
 * writes the text exposition format (version 0.0.4), and the usual process_ and nodejs_ metrics.
 * platform/prometheus.ts reads what this writes.
 *
 * Why not prom-client: it loads ~85 modules (with @opentelemetry/api for exemplars, which no
 * Orrery daemon uses) for ~3.7 MiB of each daemon's idle RSS, and its default metrics sample the
 * event loop 100 times a second whether anyone scrapes or not. The API here is the subset the
 * daemons use, shaped like prom-client's (`inc(labels, n)`, `set`, `observe`, `collect()` hooks
 * run at each scrape), so code that knew one reads the other.
 */

import { readProcStatFields } from './proc.ts';

export type Labels<L extends string = string> = Partial<Record<L, string | number>>;

interface Series {
  labels: Labels;
  value: number;
}

/** What a registry can render: a metric here, or one made elsewhere with prom-client's `get()`. */
export interface Collector {
  readonly name: string;
  render(defaultLabels: Labels): Promise<string> | string;
}

/**
 * A metric of another shape, as prom-client's `registerMetric` takes: `get()` gives its samples
 * (`metricName` names a histogram's `_bucket`, `_sum` and `_count` lines).
 */
export interface CustomMetric {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  get(): { values: { labels: Labels; value: number; metricName?: string }[] };
}

/** Label values escaped as the text format wants: backslash, double quote, newline. */
function escapeLabel(value: string | number): string {
  return String(value).replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
}

function formatValue(v: number): string {
  if (v === Number.POSITIVE_INFINITY) return '+Inf';
  if (v === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(v);
}

/** `{a="1",b="x"}` of the series' labels and the defaults (the series' own win), or ''. */
function labelText(labels: Labels, defaults: Labels, extra?: [string, string]): string {
  // The series' own labels first, then the defaults, as prom-client writes them.
  const parts: string[] = [];
  for (const [k, v] of Object.entries(labels)) if (v !== undefined) parts.push(`${k}="${escapeLabel(v)}"`);
  for (const [k, v] of Object.entries(defaults))
    if (!(k in labels) && v !== undefined) parts.push(`${k}="${escapeLabel(v)}"`);
  if (extra) parts.push(`${extra[0]}="${extra[1]}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

function header(name: string, help: string, type: string): string {
  return `# HELP ${name} ${help.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\'))}\n# TYPE ${name} ${type}\n`;
}

export class Registry {
  readonly contentType = 'text/plain; version=0.0.4; charset=utf-8';
  readonly #collectors: Collector[] = [];
  #defaultLabels: Labels = {};

  /** Labels every series of this registry carries (a series' own label of that name wins). */
  setDefaultLabels(labels: Labels): void {
    this.#defaultLabels = { ...labels };
  }

  register(collector: Collector): void {
    if (this.#collectors.some((c) => c.name === collector.name))
      throw new Error(`metric ${collector.name} is registered already`);
    this.#collectors.push(collector);
  }

  /** Registers a metric given as prom-client's `get()` shape (see CustomMetric). */
  registerMetric(metric: CustomMetric): void {
    this.register({
      name: metric.name,
      render: (defaults) => {
        let out = header(metric.name, metric.help, metric.type);
        for (const v of metric.get().values)
          out += `${v.metricName ?? metric.name}${labelText(v.labels, defaults)} ${formatValue(v.value)}\n`;
        return out;
      },
    });
  }

  /** The text exposition of every metric, after each one's `collect()` ran. */
  async metrics(): Promise<string> {
    let out = '';
    for (const c of this.#collectors) out += await c.render(this.#defaultLabels);
    return out;
  }
}

interface MetricOptions<L extends string, M> {
  name: string;
  help: string;
  labelNames?: readonly L[];
  registers?: Registry[];
  /** Runs before each scrape, with the metric as `this` (set it from the current state). */
  collect?: (this: M) => void | Promise<void>;
}

/** What counters, gauges and histograms share: named labels, series by label values, rendering. */
abstract class Metric<L extends string, S> implements Collector {
  readonly name: string;
  readonly help: string;
  protected readonly series = new Map<string, S>();
  readonly #labelNames: ReadonlySet<string>;
  readonly #collect?: () => void | Promise<void>;

  constructor(options: Omit<MetricOptions<L, never>, 'collect'>, collect?: () => void | Promise<void>) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(options.name))
      throw new Error(`invalid metric name ${options.name}`);
    this.name = options.name;
    this.help = options.help;
    this.#labelNames = new Set(options.labelNames ?? []);
    this.#collect = collect;
    for (const r of options.registers ?? []) r.register(this);
  }

  protected abstract readonly type: string;
  protected abstract fresh(labels: Labels): S;
  protected abstract lines(s: S, defaults: Labels): string;

  /** The series of these label values, made when first asked for. */
  protected at(labels: Labels<L>): S {
    const key = this.keyOf(labels);
    let s = this.series.get(key);
    if (s === undefined) {
      s = this.fresh({ ...labels });
      this.series.set(key, s);
    }
    return s;
  }

  private keyOf(labels: Labels<L>): string {
    let key = '';
    for (const name of Object.keys(labels).sort()) {
      if (!this.#labelNames.has(name)) throw new Error(`metric ${this.name} has no label "${name}"`);
      key += `${name}\u0000${labels[name as L]}\u0001`;
    }
    return key;
  }

  /** Drops the series of these label values. */
  remove(labels: Labels<L>): void {
    this.series.delete(this.keyOf(labels));
  }

  /** Drops every series (a metric without labels starts again from zero). */
  reset(): void {
    this.series.clear();
    if (this.#labelNames.size === 0) this.at({});
  }

  async render(defaults: Labels): Promise<string> {
    if (this.#collect) await this.#collect();
    let out = header(this.name, this.help, this.type);
    for (const s of this.series.values()) out += this.lines(s, defaults);
    return out;
  }
}

/** A metric of one number per series: what counters and gauges share. */
abstract class SingleValue<L extends string> extends Metric<L, Series> {
  /** `labels, value` or `value` alone (no labels), 1 when no value is given; `sign` -1 subtracts. */
  protected add(labels: Labels<L> | number | undefined, value: number | undefined, sign: 1 | -1): void {
    const [l, v] = typeof labels === 'number' ? [{}, labels] : [labels ?? {}, value ?? 1];
    this.at(l).value += sign * v;
  }

  protected fresh(labels: Labels): Series {
    return { labels, value: 0 };
  }

  protected lines(s: Series, defaults: Labels): string {
    return `${this.name}${labelText(s.labels, defaults)} ${formatValue(s.value)}\n`;
  }
}

/** A value that only goes up (or is set from a counter kept elsewhere, in `collect()`). */
export class Counter<L extends string = string> extends SingleValue<L> {
  protected readonly type = 'counter';

  constructor(options: MetricOptions<L, Counter<L>>) {
    super(options, options.collect && (() => options.collect?.call(this)));
    this.reset();
  }

  inc(labels?: Labels<L> | number, value?: number): void {
    const v = typeof labels === 'number' ? labels : (value ?? 1);
    if (!(v >= 0)) throw new Error(`metric ${this.name}: a counter goes up, not by ${v}`);
    this.add(labels, value, 1);
  }
}

/** A value that goes up and down. */
export class Gauge<L extends string = string> extends SingleValue<L> {
  protected readonly type = 'gauge';

  constructor(options: MetricOptions<L, Gauge<L>>) {
    super(options, options.collect && (() => options.collect?.call(this)));
    this.reset();
  }

  set(labels: Labels<L> | number, value?: number): void {
    if (typeof labels === 'number') this.at({}).value = labels;
    else this.at(labels).value = value as number;
  }

  inc(labels?: Labels<L> | number, value?: number): void {
    this.add(labels, value, 1);
  }

  dec(labels?: Labels<L> | number, value?: number): void {
    this.add(labels, value, -1);
  }
}

interface HistogramSeries {
  labels: Labels;
  /** Observations per bucket (not cumulative); the last is above every bound. */
  counts: number[];
  sum: number;
  count: number;
}

/** Observations counted in buckets (upper bounds, ascending), with their sum and count. */
export class Histogram<L extends string = string> extends Metric<L, HistogramSeries> {
  protected readonly type = 'histogram';
  readonly #bounds: number[];

  constructor(options: MetricOptions<L, Histogram<L>> & { buckets: readonly number[] }) {
    super(options, options.collect && (() => options.collect?.call(this)));
    this.#bounds = [...options.buckets].sort((a, b) => a - b);
    this.reset();
  }

  observe(labels: Labels<L> | number, value?: number): void {
    const [l, v] = typeof labels === 'number' ? [{}, labels] : [labels, value as number];
    const s = this.at(l);
    let i = 0;
    while (i < this.#bounds.length && v > (this.#bounds[i] as number)) i++;
    s.counts[i] = (s.counts[i] as number) + 1;
    s.sum += v;
    s.count++;
  }

  protected fresh(labels: Labels): HistogramSeries {
    return { labels, counts: new Array(this.#bounds.length + 1).fill(0), sum: 0, count: 0 };
  }

  protected lines(s: HistogramSeries, defaults: Labels): string {
    let out = '';
    let cumulative = 0;
    for (let i = 0; i <= this.#bounds.length; i++) {
      cumulative += s.counts[i] as number;
      const le = i < this.#bounds.length ? formatValue(this.#bounds[i] as number) : '+Inf';
      out += `${this.name}_bucket${labelText(s.labels, defaults, ['le', le])} ${cumulative}\n`;
    }
    out += `${this.name}_sum${labelText(s.labels, defaults)} ${formatValue(s.sum)}\n`;
    out += `${this.name}_count${labelText(s.labels, defaults)} ${s.count}\n`;
    return out;
  }
}

/**
 * The process's own metrics, named as Prometheus's client libraries name them (after `prefix`):
 * CPU seconds, resident and virtual memory, start time, open and maximum file descriptors, the
 * V8 heap, active handles, the event loop's utilisation since the last scrape, and the Node.js
 * version. Everything is read when scraped: nothing runs between scrapes.
 */
export function collectDefaultMetrics(options: { register: Registry; prefix?: string }): void {
  const p = options.prefix ?? '';
  const registers = [options.register];
  const fs = process.getBuiltinModule('node:fs');
  const { performance } = process.getBuiltinModule('node:perf_hooks');
  const cpu = (key: 'user' | 'system' | 'total') =>
    new Counter({
      name: `${p}process_cpu_${key === 'total' ? '' : `${key}_`}seconds_total`,
      help: `${key === 'total' ? 'Total user and system' : key === 'user' ? 'User' : 'System'} CPU time spent in seconds`,
      registers,
      collect() {
        const u = process.cpuUsage();
        this.reset();
        this.inc(
          key === 'user' ? u.user / 1e6 : key === 'system' ? u.system / 1e6 : (u.user + u.system) / 1e6,
        );
      },
    });
  cpu('user');
  cpu('system');
  cpu('total');
  const startSeconds = Math.round(performance.timeOrigin / 1000);
  new Gauge({
    name: `${p}process_start_time_seconds`,
    help: 'Start time of the process since unix epoch in seconds',
    registers,
  }).set(startSeconds);
  new Gauge({
    name: `${p}process_resident_memory_bytes`,
    help: 'Resident memory size in bytes',
    registers,
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
  new Gauge({
    name: `${p}process_virtual_memory_bytes`,
    help: 'Virtual memory size in bytes',
    registers,
    collect() {
      this.set(Number(readProcStatFields('self')?.[23 - 3] ?? 0)); // field 23, vsize, in bytes
    },
  });
  new Gauge({
    name: `${p}process_open_fds`,
    help: 'Number of open file descriptors',
    registers,
    collect() {
      this.set(fs.readdirSync('/proc/self/fd').length - 1); // the directory's own descriptor
    },
  });
  const maxFds = /^Max open files\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
  if (maxFds !== undefined)
    new Gauge({
      name: `${p}process_max_fds`,
      help: 'Maximum number of open file descriptors',
      registers,
    }).set(Number(maxFds));
  const heap = (name: string, help: string, read: (m: NodeJS.MemoryUsage) => number) =>
    new Gauge({
      name: `${p}nodejs_${name}`,
      help,
      registers,
      collect() {
        this.set(read(process.memoryUsage()));
      },
    });
  heap('heap_size_total_bytes', 'Process heap size from Node.js in bytes', (m) => m.heapTotal);
  heap('heap_size_used_bytes', 'Process heap size used from Node.js in bytes', (m) => m.heapUsed);
  heap('external_memory_bytes', 'Node.js external memory size in bytes', (m) => m.external);
  new Gauge({
    name: `${p}nodejs_active_resources_total`,
    help: 'Number of active resources keeping the event loop alive (handles and requests)',
    registers,
    collect() {
      this.set(process.getActiveResourcesInfo().length);
    },
  });
  let lastElu = performance.eventLoopUtilization();
  new Gauge({
    name: `${p}nodejs_eventloop_utilization_ratio`,
    help: 'Share of the time since the previous scrape that the event loop spent running callbacks (0 to 1)',
    registers,
    collect() {
      const now = performance.eventLoopUtilization();
      this.set(performance.eventLoopUtilization(now, lastElu).utilization);
      lastElu = now;
    },
  });
  new Gauge({
    name: `${p}nodejs_version_info`,
    help: 'Node.js version info',
    labelNames: ['version', 'major', 'minor', 'patch'],
    registers,
  }).set(
    {
      version: process.version,
      major: process.versions.node.split('.')[0],
      minor: process.versions.node.split('.')[1],
      patch: process.versions.node.split('.')[2],
    },
    1,
  );
}
