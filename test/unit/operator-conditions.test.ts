import test from 'ava';
import { sameConditions, setConditions } from '../../crds/conditions.ts';

test('setConditions moves lastTransitionTime only when the status changes', (t) => {
  const t0 = new Date('2026-01-01T00:00:00Z');
  const t1 = new Date('2026-01-01T00:01:00Z');
  const first = setConditions(
    undefined,
    [{ type: 'Ready', status: 'False', reason: 'Starting', message: 'a' }],
    1,
    t0,
  );
  const sameStatus = setConditions(
    first,
    [{ type: 'Ready', status: 'False', reason: 'Waiting', message: 'b' }],
    2,
    t1,
  );
  t.is(sameStatus[0]?.lastTransitionTime, '2026-01-01T00:00:00Z');
  t.is(sameStatus[0]?.observedGeneration, 2);
  const flipped = setConditions(
    sameStatus,
    [{ type: 'Ready', status: 'True', reason: 'Up', message: '' }],
    2,
    t1,
  );
  t.is(flipped[0]?.lastTransitionTime, '2026-01-01T00:01:00Z');
});

test('sameConditions ignores transition times, and messages only when asked', (t) => {
  const a = setConditions(
    undefined,
    [{ type: 'Available', status: 'True', reason: 'Min', message: '3 of 5' }],
    1,
  );
  const b = setConditions(
    undefined,
    [{ type: 'Available', status: 'True', reason: 'Min', message: '4 of 5' }],
    1,
    new Date(0),
  );
  t.false(sameConditions(a, b));
  t.true(sameConditions(a, b, { ignoreMessages: true }));
  const c = setConditions(
    undefined,
    [{ type: 'Available', status: 'False', reason: 'Min', message: '4 of 5' }],
    1,
  );
  t.false(sameConditions(a, c, { ignoreMessages: true }), 'a status change is a change');
  t.true(sameConditions(a, setConditions(a, [], 1, new Date(0))));
});
