// The HPA algorithm of operator/autoscale/hpa.ts against the cases the Kubernetes HPA documents:
// the ratio and its tolerance, replicas without samples or not ready, stabilisation, rates, bounds.
import test from 'ava';
import {
  type AutoscaleSpec,
  type ReplicaSample,
  recommend,
  ScaleHistory,
} from '../../operator/autoscale/hpa.ts';

const at = (cpu: (number | undefined)[], ready = true): ReplicaSample[] =>
  cpu.map((c, i) => ({ name: `r-${i}`, ready, cpuMillis: c }));

test('desired = ceil(current × utilisation / target); within 10 % nothing changes', (t) => {
  // Request 1000m, target 50 %: two replicas at 900m are at 90 %: ratio 1.8 → ceil(3.6) = 4.
  t.is(recommend(2, at([900, 900]), 1000, 50).desired, 4);
  t.is(recommend(2, at([900, 900]), 1000, 50).utilization, 90);
  // 54 % of a 50 % target is a ratio of 1.08: within the tolerance.
  t.is(recommend(3, at([540, 540, 540]), 1000, 50).desired, 3);
  t.regex(recommend(3, at([540, 540, 540]), 1000, 50).reason, /within tolerance/);
  // Down: 4 replicas at 10 % for a 50 % target → ceil(0.2 × 4) = 1.
  t.is(recommend(4, at([100, 100, 100, 100]), 1000, 50).desired, 1);
});

test('no sample at all: no change', (t) => {
  const r = recommend(3, at([undefined, undefined]), 1000, 50);
  t.is(r.desired, 3);
  t.is(r.utilization, undefined);
});

test('scaling up: replicas without a sample or not ready count at 0 %', (t) => {
  // One measured at 100 % (ratio 2), one without a sample, one not ready:
  // counted as 100 + 0 + 0 over 3 = 33 % → ratio 0.67: the direction reverses, so no change.
  const samples = [...at([1000, undefined]), { name: 'x', ready: false, cpuMillis: 1000 }];
  t.is(recommend(3, samples, 1000, 50).desired, 3);
  // Two measured at 100 %, one without: (200 %) / 3 = 67 % → ratio 1.33 → ceil(4) = 4.
  t.is(recommend(3, at([1000, 1000, undefined]), 1000, 50).desired, 4);
});

test('scaling down: replicas without a sample count at the target, not-ready ones are left out', (t) => {
  // Two measured at 10 %, two without: (10 + 10 + 50 + 50) / 4 = 30 % → ratio 0.6 → ceil(2.4) = 3.
  t.is(recommend(4, at([100, 100, undefined, undefined]), 1000, 50).desired, 3);
  // A not-ready replica does not hold a scale-down: two at 10 % → ceil(0.2 × 2) = 1.
  const samples = [...at([100, 100]), { name: 'x', ready: false, cpuMillis: undefined }];
  t.is(recommend(3, samples, 1000, 50).desired, 1);
});

const spec: AutoscaleSpec = { minReplicas: 1, maxReplicas: 10 };

test('scale-down waits for the stabilisation window: the highest recommendation of the window wins', (t) => {
  const h = new ScaleHistory();
  t.is(h.decide(0, 4, 4, spec).replicas, 4);
  const early = h.decide(100, 4, 1, spec);
  t.is(early.replicas, 4, 'a recommendation of 4 at t=0 is still in the 300 s window');
  t.regex(early.limitedBy ?? '', /stabilization/);
  t.is(h.decide(200, 4, 2, spec).replicas, 4);
  t.is(h.decide(301, 4, 1, spec).replicas, 2, 'the 4 left the window; the highest since is 2');
  t.is(h.decide(501, 4, 1, spec).replicas, 1);
  const short = new ScaleHistory();
  short.decide(0, 4, 4, { ...spec, scaleDownStabilizationSeconds: 10 });
  t.is(
    short.decide(11, 4, 1, { ...spec, scaleDownStabilizationSeconds: 10 }).replicas,
    1,
    'a shorter window',
  );
});

test('scale-up rate: at most max(4, 100 %) more per 15 s, counted from the start of the period', (t) => {
  const h = new ScaleHistory();
  const wide = { ...spec, maxReplicas: 100 };
  const first = h.decide(0, 2, 20, wide);
  t.is(first.replicas, 6, '2 + 4 (more than 100 % of 2)');
  t.regex(first.limitedBy ?? '', /scale-up rate/);
  h.scaled(0, 2, 6);
  t.is(h.decide(5, 6, 20, wide).replicas, 6, 'the period that began with 2 allows 6 at most');
  t.is(h.decide(16, 6, 20, wide).replicas, 12, 'a new period: 100 % of 6');
});

test('min and max always hold', (t) => {
  const h = new ScaleHistory();
  const bounded = { minReplicas: 2, maxReplicas: 3 };
  const up = h.decide(0, 3, 8, bounded);
  t.is(up.replicas, 3);
  t.regex(up.limitedBy ?? '', /maxReplicas/);
  const low = new ScaleHistory().decide(0, 1, 1, bounded);
  t.is(low.replicas, 2, 'a count below minReplicas (kubectl scale) is brought up');
  t.regex(low.limitedBy ?? '', /minReplicas/);
});
