import test from 'ava';
import { operatorHealth } from '../../operator/health.ts';

const synced = { synced: true, watching: true, lastError: undefined, failingSince: undefined };
const base = { identity: 'me', stopped: false, leaderIdentity: 'me', informers: {} };

test('a standby is healthy and says who leads', (t) => {
  const h = operatorHealth({ ...base, leader: false, leaderIdentity: 'other', leadingSince: undefined }, 0);
  t.true(h.ok);
  t.is(h.role, 'standby');
  t.is(h.leaderIdentity, 'other');
});

test('a leader is unhealthy once a watch has failed for 30 s, naming the informer and the error', (t) => {
  const facts = {
    ...base,
    leader: true,
    leadingSince: 0,
    informers: {
      replicas: synced,
      hosts: { synced: true, watching: false, lastError: 'connect ECONNREFUSED', failingSince: 100_000 },
    },
  };
  t.true(operatorHealth(facts, 129_999).ok, 'within 30 s');
  const h = operatorHealth(facts, 130_000);
  t.false(h.ok);
  t.deepEqual(h.problems, ['the hosts watch has failed for 30s: connect ECONNREFUSED']);
});

test('a leader whose informers have not synced 60 s after taking the lead is unhealthy', (t) => {
  const facts = {
    ...base,
    leader: true,
    leadingSince: 1_000,
    informers: { instances: { ...synced, synced: false } },
  };
  t.true(operatorHealth(facts, 60_999).ok);
  t.deepEqual(operatorHealth(facts, 61_000).problems, [
    'the instances informer has not synced 60s after taking the lead',
  ]);
});

test('a stopped operator is unhealthy', (t) => {
  const h = operatorHealth({ ...base, stopped: true, leader: false, leadingSince: undefined }, 0);
  t.false(h.ok);
  t.is(h.role, 'stopped');
});
