import test from 'ava';
import { createBalancer, type Endpoint, EWMA_DECAY_MS } from '../../mesh/balancer.ts';

/** mulberry32: a seeded generator, so the distribution tests are reproducible. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const endpoints = (n: number, weight?: (i: number) => number): Endpoint[] =>
  Array.from({ length: n }, (_, i) => ({ id: `e${i}`, ...(weight ? { weight: weight(i) } : {}) }));

function counts(picks: (Endpoint | undefined)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of picks) if (p) out[p.id] = (out[p.id] ?? 0) + 1;
  return out;
}

test('round-robin: exact order, smooth weights, exclusions, and a stable order across updates', (t) => {
  const b = createBalancer('round-robin');
  b.update(endpoints(3));
  t.deepEqual(
    Array.from({ length: 6 }, () => b.pick()?.id),
    ['e0', 'e1', 'e2', 'e0', 'e1', 'e2'],
  );
  t.is(b.pick({ exclude: new Set(['e0']) })?.id, 'e1');
  const w = createBalancer('round-robin');
  w.update(endpoints(2, (i) => (i === 0 ? 2 : 1)));
  // nginx's smooth weighted round-robin spreads the heavier endpoint out: a, b, a (not a, a, b).
  t.deepEqual(
    Array.from({ length: 6 }, () => w.pick()?.id),
    ['e0', 'e1', 'e0', 'e0', 'e1', 'e0'],
  );
  t.is(createBalancer('round-robin').pick(), undefined, 'no endpoint: nothing picked');
  t.is(w.pick({ exclude: new Set(['e0', 'e1']) }), undefined);
});

test('random: uniform within statistical bounds', (t) => {
  const b = createBalancer('random', { random: seeded(1) });
  b.update(endpoints(3));
  const c = counts(Array.from({ length: 30_000 }, () => b.pick()));
  for (const id of ['e0', 'e1', 'e2']) {
    // Binomial(30000, 1/3): sd ≈ 82; 5 sd either side.
    t.true(Math.abs((c[id] ?? 0) - 10_000) < 410, `${id}: ${c[id]}`);
  }
});

test('least-request: power of two choices never picks the busiest of three', (t) => {
  const b = createBalancer('least-request', { random: seeded(2) });
  const list = endpoints(3);
  b.update(list);
  for (let i = 0; i < 5; i++) b.started(list[0] as Endpoint);
  b.started(list[1] as Endpoint);
  const c = counts(Array.from({ length: 3_000 }, () => b.pick()));
  t.is(c.e0, undefined, 'e0 (5 active) is always the worse of any two');
  t.true((c.e2 ?? 0) > (c.e1 ?? 0), `the idle one wins when both are drawn: ${JSON.stringify(c)}`);
  for (let i = 0; i < 5; i++) b.ended(list[0] as Endpoint, 1);
  b.ended(list[1] as Endpoint, 1);
  const even = counts(Array.from({ length: 30_000 }, () => b.pick()));
  for (const id of ['e0', 'e1', 'e2'])
    t.true(Math.abs((even[id] ?? 0) - 10_000) < 1_000, `${id}: ${even[id]}`);
});

test('p2c-ewma: a slow endpoint is avoided, and comes back as its peak decays', (t) => {
  let now = 0;
  const b = createBalancer('p2c-ewma', { random: seeded(3), now: () => now });
  const [fast, slow] = endpoints(2) as [Endpoint, Endpoint];
  b.update([fast, slow]);
  b.started(slow);
  b.ended(slow, 300); // a 300 ms peak
  b.started(fast);
  b.ended(fast, 5);
  const c = counts(Array.from({ length: 1_000 }, () => b.pick()));
  t.is(c.e1, undefined, 'with two endpoints, p2c compares both: the slow one loses');
  // Pending requests multiply the cost: 5 ms × 100 in flight is worse than 300 ms × 1.
  for (let i = 0; i < 100; i++) b.started(fast);
  t.is(b.pick()?.id, 'e1');
  for (let i = 0; i < 100; i++) b.ended(fast, 5);
  t.is(b.pick()?.id, 'e0');
  // Ten time constants later the slow one's old peak has faded (Linkerd decays the estimate
  // toward nothing between observations) while the fast one was just observed again.
  now += 10 * EWMA_DECAY_MS;
  b.started(fast);
  b.ended(fast, 5);
  t.is(b.pick()?.id, 'e1', 'an old peak fades');
});

test('ring-hash: a key stays on its endpoint; N -> N+1 endpoints remaps about 1/(N+1) of the keys', (t) => {
  const b = createBalancer('ring-hash');
  const ten = endpoints(10);
  b.update(ten);
  const keys = Array.from({ length: 10_000 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
  const before = keys.map((key) => b.pick({ key })?.id);
  t.deepEqual(
    keys.slice(0, 100).map((key) => b.pick({ key })?.id),
    before.slice(0, 100),
    'the same key, the same endpoint',
  );
  const spread = counts(before.map((id) => ({ id: id as string })));
  t.is(Object.keys(spread).length, 10);
  for (const [id, n] of Object.entries(spread))
    t.true(n > 500 && n < 1_600, `${id} holds ${n} of 10,000 keys`);
  b.update(endpoints(11));
  const after = keys.map((key) => b.pick({ key })?.id);
  const moved = after.filter((id, i) => id !== before[i]);
  t.true(moved.length <= (1.5 / 11) * keys.length, `${moved.length} of 10,000 keys moved`);
  t.true(
    moved.every((id) => id === 'e10'),
    'keys move only to the new endpoint',
  );
  // A retry skips the endpoint that failed and lands on the next one on the ring.
  const key = keys[0] as string;
  const first = b.pick({ key })?.id as string;
  const next = b.pick({ key, exclude: new Set([first]) })?.id;
  t.truthy(next);
  t.not(next, first);
});
