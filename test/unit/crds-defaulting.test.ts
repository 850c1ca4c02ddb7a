import test from 'ava';
import { withDefaults } from '../../crds/defaulting.ts';
import { replicaTemplateDefaults } from '../../crds/defaults.ts';
import type { ReplicaTemplate } from '../../crds/types.ts';

test('withDefaults fills absent fields at every depth, from the template schema, without touching its input', (t) => {
  const raw = {
    processes: [
      { name: 'a', command: ['x'], ports: [{ name: 'http' }], readinessProbe: { http: { port: 'http' } } },
      { name: 'b', command: ['y'], restart: 'temporary', env: [{ name: 'K' }] },
    ],
    supervision: { maxRestarts: 7 },
  };
  const before = structuredClone(raw);
  const t1 = withDefaults<ReplicaTemplate>(replicaTemplateDefaults, raw);
  t.deepEqual(raw, before);
  const [a, b] = t1.processes;
  t.is(a?.restart, 'permanent');
  t.is(a?.stopSignal, 'SIGTERM');
  t.is(a?.ports?.[0]?.protocol, 'tcp');
  t.like(a?.readinessProbe, { periodSeconds: 10, failureThreshold: 3, http: { path: '/', port: 'http' } });
  t.is(b?.restart, 'temporary');
  t.is(b?.env?.[0]?.value, '');
  // A default object ({}) is itself defaulted; a given one keeps its values and gets the rest.
  t.deepEqual(t1.supervision, {
    maxRestarts: 7,
    strategy: 'one-for-one',
    periodSeconds: 10,
    backoff: { initialSeconds: 1, maxSeconds: 60 },
  });
  t.deepEqual(t1.isolation.namespaces, ['pid', 'mount', 'uts', 'ipc']);
  t.is(t1.terminationGracePeriodSeconds, 10);
  // Defaults are copies: changing one object's does not change the next one's.
  (t1.isolation.namespaces as string[]).push('net');
  t.deepEqual(withDefaults<ReplicaTemplate>(replicaTemplateDefaults, raw).isolation.namespaces, [
    'pid',
    'mount',
    'uts',
    'ipc',
  ]);
});

test('withDefaults leaves values of the wrong shape for validation to name', (t) => {
  t.is(withDefaults(replicaTemplateDefaults, 'text'), 'text');
  t.deepEqual(withDefaults<ReplicaTemplate>(replicaTemplateDefaults, { processes: 'x' }).processes, 'x');
});
