// Reading Prometheus text (platform/prometheus.ts) and the quantile of a histogram, as the TUI and
// the autoscaler read the mesh proxies' metrics.
import test from 'ava';
import { histogramQuantile, samplesOf } from '../../platform/prometheus.ts';

test('samples of the metrics asked for, labels unescaped, comments and others skipped', (t) => {
  const text = [
    '# HELP a_total help',
    '# TYPE a_total counter',
    'a_total{x="1",msg="say \\"hi\\"\\\\n"} 3',
    'a_total 4',
    'b_total{x="1"} 5',
    'a_total{x="2"} NaN',
    'h_bucket{le="0.5"} 2',
    'h_bucket{le="+Inf"} 3',
  ].join('\n');
  t.deepEqual(
    [...samplesOf(text, new Set(['a_total', 'h_bucket']))],
    [
      { name: 'a_total', labels: { x: '1', msg: 'say "hi"\\n' }, value: 3 },
      { name: 'a_total', labels: {}, value: 4 },
      { name: 'h_bucket', labels: { le: '0.5' }, value: 2 },
      { name: 'h_bucket', labels: { le: '+Inf' }, value: 3 },
    ],
  );
});

test("histogramQuantile interpolates within the bucket the rank falls in, as PromQL's does", (t) => {
  const buckets = new Map([
    [0.01, 0],
    [0.025, 50],
    [0.05, 100],
    [Number.POSITIVE_INFINITY, 100],
  ]);
  t.is(histogramQuantile(0.5, buckets), 0.025);
  t.is(histogramQuantile(0.25, buckets), 0.01 + 0.015 * 0.5);
  t.is(histogramQuantile(0.99, buckets), 0.025 + 0.025 * (49 / 50));
  // Falling in +Inf: the last finite bound.
  t.is(
    histogramQuantile(
      0.99,
      new Map([
        [0.1, 1],
        [Number.POSITIVE_INFINITY, 10],
      ]),
    ),
    0.1,
  );
  t.is(
    histogramQuantile(
      0.99,
      new Map([
        [0.1, 0],
        [Number.POSITIVE_INFINITY, 0],
      ]),
    ),
    undefined,
  );
});
