// Pool.setLocalDown (mesh/pool.ts): the same-host fast path marks replicas down on top of the
// slices' readiness, through outlier selection as before.
import test from 'ava';
import type { Upstream } from '../../mesh/endpoints.ts';
import { Pool } from '../../mesh/pool.ts';

const outlier = {
  consecutiveErrors: 2,
  intervalSeconds: 10,
  baseEjectionSeconds: 30,
  maxEjectionPercent: 100,
};

function up(replica: string, port: number, ready = true): Upstream {
  return { id: `${replica}@127.0.0.1:${port}`, replica, address: '127.0.0.1', port, ready };
}

function pool(upstreams: Upstream[], clock = { now: 0 }) {
  const p = new Pool({ policy: 'round-robin', outlier, now: () => clock.now });
  p.update(upstreams);
  return p;
}

const picks = (p: Pool, n: number) => Array.from({ length: n }, () => p.pick('k')?.replica);

test('a replica marked down locally leaves the pool at once, and comes back when unmarked', (t) => {
  const p = pool([up('a', 1), up('b', 2), up('c', 3)]);
  t.deepEqual(picks(p, 3), ['a', 'b', 'c']);
  t.true(p.setLocalDown(new Set(['b'])));
  t.deepEqual(
    p.ready.map((u) => u.replica),
    ['a', 'c'],
  );
  t.deepEqual(p.localDown(), ['b@127.0.0.1:2']);
  t.deepEqual(new Set(picks(p, 6)), new Set(['a', 'c']), 'b is never picked');
  t.true(p.setLocalDown(new Set()));
  t.deepEqual(new Set(picks(p, 6)), new Set(['a', 'b', 'c']));
  t.deepEqual(p.localDown(), []);
});

test('the mark outlives slice updates; a replica the slices call not ready stays out either way', (t) => {
  const p = pool([up('a', 1), up('b', 2), up('c', 3)]);
  const down = new Set(['b']);
  p.setLocalDown(down);
  // A new slice (c not ready, a new endpoint d) keeps b out.
  t.true(p.update([up('a', 1), up('b', 2), up('c', 3, false), up('d', 4)]));
  t.deepEqual(
    p.ready.map((u) => u.replica),
    ['a', 'd'],
  );
  // Unmarking b brings it back; c stays out, as the slice says.
  p.setLocalDown(new Set());
  t.deepEqual(
    p.ready.map((u) => u.replica),
    ['a', 'b', 'd'],
  );
  // Marking a replica the slices already leave out changes nothing.
  t.false(p.setLocalDown(new Set(['c'])));
  t.false(p.setLocalDown(new Set(['c'])), 'the same set again');
  t.false(p.setLocalDown(new Set(['x'])), 'a replica of no endpoint');
});

test('every endpoint of a replica goes (two ports of one replica), others of the same address stay', (t) => {
  const p = pool([up('a', 1), up('a', 5), up('b', 2)]);
  p.setLocalDown(new Set(['a']));
  t.deepEqual(
    p.ready.map((u) => u.id),
    ['b@127.0.0.1:2'],
  );
});

test('all replicas down locally: nothing to pick (no panic over endpoints that are gone)', (t) => {
  const p = pool([up('a', 1), up('b', 2)]);
  p.setLocalDown(new Set(['a', 'b']));
  t.is(p.pick('k'), undefined);
  t.false(p.panic);
  t.is(p.ready.length, 0);
});

test('through outlier selection: panic counts only what is not down locally', (t) => {
  const clock = { now: 0 };
  const p = pool([up('a', 1), up('b', 2), up('c', 3), up('d', 4), up('e', 5)], clock);
  // Eject a and b: 3 of 5 in, no panic.
  const [a, b] = p.ready as [Upstream, Upstream];
  for (const u of [a, b]) {
    p.failed(u);
    t.true(p.failed(u));
  }
  t.false(p.panic);
  t.deepEqual(new Set(picks(p, 6)), new Set(['c', 'd', 'e']));
  // d and e down locally: of the 3 left (a and b ejected, c), 1 is in: panic, over a, b and c.
  p.setLocalDown(new Set(['d', 'e']));
  t.true(p.panic);
  t.deepEqual(new Set(picks(p, 6)), new Set(['a', 'b', 'c']));
  t.deepEqual(p.ejected().sort(), [a.id, b.id], 'the ejections are kept');
  // e back: 2 of 4 in, no panic; a and b still ejected.
  p.setLocalDown(new Set(['d']));
  t.false(p.panic);
  t.deepEqual(new Set(picks(p, 4)), new Set(['c', 'e']));
});

test('an endpoint back from a local mark starts with a clean outlier record', (t) => {
  const p = pool([up('a', 1), up('b', 2), up('c', 3)]);
  const b = p.ready[1] as Upstream;
  t.false(p.failed(b), 'one failure of two');
  p.setLocalDown(new Set(['b']));
  p.setLocalDown(new Set());
  t.false(p.failed(b), 'the count started again: one failure of two');
  t.true(p.failed(b));
});
