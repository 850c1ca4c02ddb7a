// How the agent writes a Replica's status, against the real API server: a PUT of the whole
// status with the resourceVersion, chained on its own last write, and a merge patch when the
// object changed meanwhile.
import test from 'ava';
import { REPLICAS } from '../../crds/resources.ts';
import type { Replica } from '../../crds/types.ts';
import { resourceClient, typed } from '../../kube/index.ts';
import { type OwnWrites, replaceReplicaStatus } from '../../node-runtime/agent/status.ts';
import { kubeForTests, replicaObject, testNamespace } from '../helpers/agent-harness.ts';

test('status is replaced with the resourceVersion, chained on its own writes, and merge-patched after a conflict', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const created = await k.replicas.create(
    replicaObject(ns, 'st-0', 'no-such-host', [{ name: 'main', command: ['true'] }]),
  );
  let patches = 0;
  const replicas = resourceClient(k.api, typed<Replica>(REPLICAS), 'orrery-runtime/test');
  const patchStatus = replicas.patchStatus.bind(replicas);
  replicas.patchStatus = (...args) => {
    patches += 1;
    return patchStatus(...args);
  };
  const ownWrites: OwnWrites = new WeakMap();
  const get = () => k.replicas.get('st-0', { namespace: ns });

  // The scheduler's fields are replaced along with everything else.
  await k.replicas.patchStatus('st-0', { reason: 'Unschedulable', message: 'nowhere' }, { namespace: ns });
  const copy = await get(); // what the informer holds
  await replaceReplicaStatus(replicas, copy, { phase: 'Starting', ready: false }, ownWrites);
  // The same (now stale) copy again, as before the watch brings the first write back: no conflict.
  await replaceReplicaStatus(replicas, copy, { phase: 'Running', ready: true, restarts: 0 }, ownWrites);
  t.is(patches, 0, 'both went as a replace');
  t.deepEqual((await get()).status, { phase: 'Running', ready: true, restarts: 0 });

  // Someone changes a label: the copy's version is stale and the replace conflicts.
  await k.replicas.mergePatch('st-0', { metadata: { labels: { extra: 'yes' } } }, { namespace: ns });
  await replaceReplicaStatus(replicas, copy, { phase: 'Failed', ready: false }, ownWrites);
  t.is(patches, 1, 'the conflict fell back to a merge patch');
  const after = await get();
  t.deepEqual(after.status, { phase: 'Failed', ready: false });
  t.is(after.metadata.labels?.extra, 'yes');
  t.deepEqual(after.spec, created.spec as Replica['spec']);
});
