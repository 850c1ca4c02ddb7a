import test from 'ava';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from '../../platform/metrics.ts';
import { samplesOf } from '../../platform/prometheus.ts';

const sample = (text: string, name: string) => [...samplesOf(text, new Set([name]))];

test('counters and gauges: the text format with HELP and TYPE, default labels, escaped values', async (t) => {
  const registry = new Registry();
  registry.setDefaultLabels({ host: 'vm-0' });
  const plain = new Counter({ name: 'x_total', help: 'Plain\nline', registers: [registry] });
  const byReason = new Counter({
    name: 'y_total',
    help: 'By reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  const gauge = new Gauge({ name: 'z', help: 'Z', labelNames: ['host', 'k'], registers: [registry] });
  plain.inc();
  plain.inc(2);
  byReason.inc({ reason: 'a "quoted"\\ \nvalue' }, 3);
  byReason.inc({ reason: 'b' }, 0);
  gauge.set({ k: '1', host: 'own' }, -1.5);
  gauge.inc({ k: '1', host: 'own' });
  const text = await registry.metrics();
  t.is(
    text,
    [
      '# HELP x_total Plain\\nline',
      '# TYPE x_total counter',
      'x_total{host="vm-0"} 3',
      '# HELP y_total By reason',
      '# TYPE y_total counter',
      'y_total{reason="a \\"quoted\\"\\\\ \\nvalue",host="vm-0"} 3',
      'y_total{reason="b",host="vm-0"} 0',
      '# HELP z Z',
      '# TYPE z gauge',
      'z{k="1",host="own"} -0.5',
      '',
    ].join('\n'),
  );
  t.deepEqual(
    sample(text, 'y_total').map((s) => s.labels.reason),
    ['a "quoted"\\ \nvalue', 'b'],
    'platform/prometheus.ts reads back what was written',
  );
  t.throws(() => byReason.inc({ other: 'x' } as never), { message: 'metric y_total has no label "other"' });
  t.throws(() => plain.inc(-1), { message: /goes up/ });
  t.throws(() => new Counter({ name: 'x_total', help: 'again', registers: [registry] }), {
    message: /registered already/,
  });
  byReason.remove({ reason: 'b' });
  plain.reset();
  const after = await registry.metrics();
  t.deepEqual(sample(after, 'y_total').length, 1);
  t.is(sample(after, 'x_total')[0]?.value, 0, 'a metric without labels starts again at zero');
});

test('collect() hooks run at each scrape with the metric as this', async (t) => {
  const registry = new Registry();
  let n = 0;
  new Gauge({
    name: 'live',
    help: 'Live',
    labelNames: ['i'],
    registers: [registry],
    collect() {
      n++;
      this.reset();
      this.set({ i: String(n) }, n * 10);
    },
  });
  t.deepEqual(sample(await registry.metrics(), 'live'), [{ name: 'live', labels: { i: '1' }, value: 10 }]);
  t.deepEqual(sample(await registry.metrics(), 'live'), [{ name: 'live', labels: { i: '2' }, value: 20 }]);
});

test('histograms: cumulative buckets with le last, +Inf, sum and count', async (t) => {
  const registry = new Registry();
  const h = new Histogram({
    name: 'd_seconds',
    help: 'D',
    labelNames: ['c'],
    buckets: [0.5, 0.1],
    registers: [registry],
  });
  for (const v of [0.05, 0.1, 0.3, 2]) h.observe({ c: 'x' }, v);
  const text = await registry.metrics();
  t.deepEqual(
    sample(text, 'd_seconds_bucket').map((s) => [s.labels.le, s.value]),
    [
      ['0.1', 2],
      ['0.5', 3],
      ['+Inf', 4],
    ],
  );
  t.true(text.includes('d_seconds_bucket{c="x",le="0.1"} 2\n'));
  t.is(sample(text, 'd_seconds_sum')[0]?.value, 2.45);
  t.is(sample(text, 'd_seconds_count')[0]?.value, 4);
  const unlabelled = new Histogram({ name: 'e', help: 'E', buckets: [1], registers: [registry] });
  unlabelled.observe(3);
  t.deepEqual(
    sample(await registry.metrics(), 'e_bucket').map((s) => s.value),
    [0, 1],
  );
});

test("a metric in prom-client's get() shape renders as its samples say", async (t) => {
  const registry = new Registry();
  registry.registerMetric({
    name: 'lat',
    help: 'Lat',
    type: 'histogram',
    get: () => ({
      values: [
        { labels: { le: 1 }, value: 2, metricName: 'lat_bucket' },
        { labels: { le: '+Inf' }, value: 3, metricName: 'lat_bucket' },
        { labels: {}, value: 3, metricName: 'lat_count' },
      ],
    }),
  });
  t.is(
    await registry.metrics(),
    '# HELP lat Lat\n# TYPE lat histogram\nlat_bucket{le="1"} 2\nlat_bucket{le="+Inf"} 3\nlat_count 3\n',
  );
});

test('the default process and Node.js metrics are read when scraped', async (t) => {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'p_' });
  const text = await registry.metrics();
  const one = (name: string) => sample(text, name)[0]?.value ?? Number.NaN;
  t.true(one('p_process_resident_memory_bytes') > 10 * 1024 * 1024);
  t.true(one('p_process_virtual_memory_bytes') >= one('p_process_resident_memory_bytes'));
  t.true(one('p_process_cpu_seconds_total') > 0);
  t.true(
    Math.abs(
      one('p_process_cpu_seconds_total') -
        one('p_process_cpu_user_seconds_total') -
        one('p_process_cpu_system_seconds_total'),
    ) < 0.05,
  );
  t.true(Math.abs(one('p_process_start_time_seconds') - (Date.now() / 1000 - process.uptime())) < 5);
  t.true(one('p_process_open_fds') > 2);
  t.true(one('p_process_max_fds') >= one('p_process_open_fds'));
  t.true(one('p_nodejs_heap_size_used_bytes') > 0);
  const elu = one('p_nodejs_eventloop_utilization_ratio');
  t.true(elu >= 0 && elu <= 1);
  t.is(sample(text, 'p_nodejs_version_info')[0]?.labels.version, process.version);
});
