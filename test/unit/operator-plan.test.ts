import test from 'ava';
import type { Instance, Replica } from '../../crds/types.ts';
import { isReady, planInstance, replicaName } from '../../operator/instance/plan.ts';

function instance(replicas: number, maxUnavailable = 1, maxSurge = 0): Instance {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name: 'web', namespace: 'ns' },
    spec: {
      replicas,
      template: { processes: [] } as unknown as Instance['spec']['template'],
      updateStrategy: { maxUnavailable, maxSurge },
      persistentRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
    },
  };
}

function replica(ordinal: number, hash: string, ready = true): Replica {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Replica',
    metadata: { name: replicaName('web', ordinal), namespace: 'ns' },
    spec: { instance: 'web', ordinal, templateHash: hash, template: {} as Replica['spec']['template'] },
    status: { phase: ready ? 'Running' : 'Starting', ready },
  };
}

test('missing ordinals are created lowest first', (t) => {
  const plan = planInstance(instance(3), [replica(1, 'h')], 'h');
  t.deepEqual(plan.create, [0, 2]);
  t.deepEqual(plan.delete, []);
});

test('scaling down removes the highest ordinals', (t) => {
  const plan = planInstance(
    instance(2),
    [0, 1, 2, 3, 4].map((i) => replica(i, 'h')),
    'h',
  );
  t.deepEqual(plan.delete, ['web-4', 'web-3', 'web-2']);
  t.deepEqual(plan.create, []);
});

test('a converged instance needs nothing and reports complete', (t) => {
  const plan = planInstance(
    instance(3),
    [0, 1, 2].map((i) => replica(i, 'h')),
    'h',
  );
  t.deepEqual(plan, {
    create: [],
    delete: [],
    counts: { replicas: 3, readyReplicas: 3, updatedReplicas: 3, availableReplicas: 3 },
    complete: true,
    outdated: 0,
  });
});

test('a template change replaces one replica at a time with maxUnavailable 1', (t) => {
  const plan = planInstance(
    instance(3, 1, 0),
    [0, 1, 2].map((i) => replica(i, 'old')),
    'new',
  );
  t.deepEqual(plan.delete, ['web-2']);
  t.deepEqual(plan.create, []);
  t.is(plan.outdated, 3);
});

test('outdated replicas that are not ready are replaced before ready ones', (t) => {
  const plan = planInstance(
    instance(3, 1, 0),
    [replica(0, 'old'), replica(1, 'old', false), replica(2, 'old')],
    'new',
  );
  // web-1 costs no availability; then ready=2 = minReady, so nothing else may go.
  t.deepEqual(plan.delete, ['web-1']);
});

test('with maxUnavailable 0 the surge replica comes first and old ones wait for it', (t) => {
  const plan = planInstance(
    instance(3, 0, 1),
    [0, 1, 2].map((i) => replica(i, 'old')),
    'new',
  );
  t.deepEqual(plan.create, [3]);
  t.deepEqual(plan.delete, []);
  const next = planInstance(
    instance(3, 0, 1),
    [...[0, 1, 2].map((i) => replica(i, 'old')), replica(3, 'new')],
    'new',
  );
  t.deepEqual(next.delete, ['web-2']);
});

/**
 * Runs the controller against a model of the world: deletions take effect at once, created
 * replicas become ready one step later. Checks availability at every step and convergence.
 */
function simulate(
  t: import('ava').ExecutionContext,
  desired: number,
  maxUnavailable: number,
  maxSurge: number,
) {
  const spec = instance(desired, maxUnavailable, maxSurge);
  let world = new Map<number, Replica>(Array.from({ length: desired }, (_, i) => [i, replica(i, 'old')]));
  let minReadySeen = Number.POSITIVE_INFINITY;
  for (let step = 0; step < 100; step++) {
    const plan = planInstance(spec, [...world.values()], 'new');
    if (plan.complete) {
      t.is(world.size, desired);
      t.true([...world.values()].every((r) => r.spec.templateHash === 'new'));
      return { steps: step, minReadySeen };
    }
    const next = new Map(world);
    for (const [ordinal, r] of next)
      if (!isReady(r)) next.set(ordinal, replica(ordinal, r.spec.templateHash ?? '', true));
    for (const name of plan.delete) next.delete(Number(name.split('-')[1]));
    for (const ordinal of plan.create) next.set(ordinal, replica(ordinal, 'new', false));
    world = next;
    const ready = [...world.values()].filter(isReady).length;
    minReadySeen = Math.min(minReadySeen, ready);
    t.true(
      world.size <= desired + maxSurge,
      `step ${step}: ${world.size} replicas exceed replicas + maxSurge`,
    );
  }
  t.fail(`no convergence for replicas=${desired} maxUnavailable=${maxUnavailable} maxSurge=${maxSurge}`);
  return { steps: 100, minReadySeen };
}

for (const [desired, maxUnavailable, maxSurge] of [
  [3, 1, 0],
  [3, 0, 1],
  [5, 2, 0],
  [5, 1, 2],
  [1, 1, 0],
  [1, 0, 1],
  [10, 3, 3],
] as const) {
  test(`a rollout of ${desired} replicas with maxUnavailable ${maxUnavailable} and maxSurge ${maxSurge} converges and keeps availability`, (t) => {
    const { minReadySeen } = simulate(t, desired, maxUnavailable, maxSurge);
    t.true(minReadySeen >= desired - maxUnavailable, `ready dropped to ${minReadySeen}`);
  });
}
