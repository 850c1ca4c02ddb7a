import test from 'ava';
import { CircuitBreaker, retryAllowed, retryBackoffMs } from '../../mesh/limits.ts';
import { OutlierDetector } from '../../mesh/outlier.ts';

const options = {
  consecutiveErrors: 3,
  intervalSeconds: 10,
  baseEjectionSeconds: 30,
  maxEjectionPercent: 50,
};

function detector(ids = ['a', 'b', 'c'], opts = options) {
  const clock = { now: 0 };
  const d = new OutlierDetector(opts, () => clock.now);
  d.update(ids);
  return { d, clock };
}

test('an endpoint is ejected at its Nth consecutive error; a success resets the count', (t) => {
  const { d } = detector();
  t.false(d.record('a', false));
  t.false(d.record('a', false));
  t.false(d.record('a', true), 'a success in between');
  t.false(d.record('a', false));
  t.false(d.record('a', false));
  t.true(d.record('a', false), 'the third in a row ejects');
  t.true(d.isEjected('a'));
  t.deepEqual(
    d.select([{ id: 'a' }, { id: 'b' }, { id: 'c' }]).endpoints.map((e) => e.id),
    ['b', 'c'],
  );
});

test('ejection time grows with each ejection, and the multiplier falls while the endpoint behaves', (t) => {
  const { d, clock } = detector();
  const ejectA = () => {
    for (let i = 0; i < 3; i++) d.record('a', false);
  };
  ejectA();
  clock.now = 29_999;
  t.true(d.isEjected('a'));
  clock.now = 30_000;
  t.true(d.isEjected('a'), 'its time is up, but it is out until the next sweep');
  t.deepEqual(d.sweep(), ['a'], 'back after base × 1 = 30 s, at the sweep');
  t.false(d.isEjected('a'));
  ejectA();
  clock.now = 30_000 + 59_999;
  t.true(d.isEjected('a'), 'out for 60 s the second time');
  clock.now = 30_000 + 60_000;
  d.sweep(); // back in: the multiplier stays 2 this sweep
  d.sweep(); // an interval in: 2 -> 1
  ejectA(); // 1 + 1: out for 60 s again
  clock.now += 60_000;
  d.sweep();
  d.sweep(); // 2 -> 1
  d.sweep(); // 1 -> 0
  ejectA();
  const at = clock.now;
  clock.now = at + 29_999;
  t.true(d.isEjected('a'));
  clock.now = at + 30_000;
  t.deepEqual(d.sweep(), ['a'], 'two good intervals brought the multiplier down: 30 s again');
});

test('maxEjectionPercent bounds ejections, and one endpoint always stays in', (t) => {
  const { d } = detector();
  for (let i = 0; i < 3; i++) d.record('a', false);
  for (let i = 0; i < 3; i++) d.record('b', false);
  t.deepEqual(d.ejected(), ['a'], '2 of 3 would be 67 % > 50 %');
  const all = detector(['a', 'b'], { ...options, maxEjectionPercent: 100 }).d;
  for (let i = 0; i < 3; i++) all.record('a', false);
  for (let i = 0; i < 3; i++) all.record('b', false);
  t.deepEqual(all.ejected(), ['a'], 'even at 100 %, the last endpoint is kept');
});

test('panic: below half of the endpoints in, balancing goes over all of them', (t) => {
  const { d } = detector(['a', 'b', 'c', 'd'], { ...options, maxEjectionPercent: 100 });
  for (const id of ['a', 'b']) for (let i = 0; i < 3; i++) d.record(id, false);
  const four = ['a', 'b', 'c', 'd'].map((id) => ({ id }));
  t.deepEqual(d.select(four), { endpoints: [{ id: 'c' }, { id: 'd' }], panic: false }, '2 of 4 in: 50 %');
  for (let i = 0; i < 3; i++) d.record('c', false);
  t.deepEqual(d.select(four), { endpoints: four, panic: true }, '1 of 4 in: panic');
});

test('circuit breaker: a limit overflows instead of queueing, and counts the overflow', (t) => {
  const cb = new CircuitBreaker({ maxConnections: 2, maxPendingRequests: 1, maxRequests: 2, maxRetries: 0 });
  t.true(cb.tryAcquire('requests'));
  t.true(cb.tryAcquire('requests'));
  t.false(cb.tryAcquire('requests'));
  t.is(cb.overflows.requests, 1);
  cb.release('requests');
  t.true(cb.tryAcquire('requests'));
  t.false(cb.tryAcquire('retries'), 'maxRetries 0: no retry at all');
  t.is(cb.active('requests'), 2);
});

test('retry budget: 20 % of active requests, at least 3; back-off with full jitter up to 250 ms', (t) => {
  t.true(retryAllowed(1, 2, 20), 'a lone request may still retry (min 3)');
  t.false(retryAllowed(1, 3, 20));
  t.true(retryAllowed(100, 19, 20));
  t.false(retryAllowed(100, 20, 20), 'a storm of 100 failures: 20 retries in flight at most');
  t.is(
    retryBackoffMs(0, () => 0.999),
    25 * 0.999,
  );
  t.is(
    retryBackoffMs(10, () => 0.5),
    125,
    'capped at 250 ms',
  );
  t.is(
    retryBackoffMs(3, () => 0),
    0,
  );
});
