// A controller wired the controller-runtime way against the real API server: informers feed a
// work queue (own objects and owned objects mapped to their owner), reconcile(key) converges.
import test from 'ava';
import { installCrds } from '../../crds/install.ts';
import { INSTANCES, REPLICAS } from '../../crds/resources.ts';
import type { Instance } from '../../crds/types.ts';
import { KubeApi } from '../../kube/api.ts';
import { loadKubeConfig } from '../../kube/config.ts';
import { enqueueFromInformer, enqueueOwner, runController } from '../../kube/controller.ts';
import { isNotFound } from '../../kube/errors.ts';
import { Informer } from '../../kube/informer.ts';
import { ResourceClient } from '../../kube/resources.ts';
import { splitKey } from '../../kube/types.ts';
import { WorkQueue } from '../../kube/workqueue.ts';
import { freshNamespace, testCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/wait.ts';

let api: KubeApi;

test.before(async () => {
  const { kubeconfig } = await testCluster();
  const kc = loadKubeConfig({ kubeconfig });
  await installCrds(kc);
  api = await KubeApi.fromKubeConfig(kc);
});
test.after.always(() => api?.close());

test('owned Replica events reach the owning Instance key, and a failed reconcile is retried until status converges', async (t) => {
  const ns = await freshNamespace(t);
  const key = `${ns}/web`;
  const instances = new ResourceClient(api, INSTANCES, { fieldManager: 'kube-test-controller' });
  const replicas = new ResourceClient(api, REPLICAS, { fieldManager: 'kube-test-controller' });
  const instInformer = new Informer(instances, { namespace: ns });
  const repInformer = new Informer(replicas, { namespace: ns });
  const queue = new WorkQueue<string>({ name: 'instances' });
  enqueueFromInformer(instInformer, queue);
  enqueueOwner(repInformer, queue, 'Instance', 'orrery.dev');
  instInformer.start();
  repInformer.start();

  const reconciled: string[] = [];
  let failNext = false;
  // Each reconcile's outcome, and how many keys wait for a delay right after it (before done()).
  const outcomes: { failed: boolean; waiting: number }[] = [];
  // A toy reconcile: status.replicas = number of Replicas owned, read from the cache only.
  const ctrl = runController({
    name: 'toy-instance',
    queue,
    workers: 2,
    waitFor: [instInformer, repInformer],
    reconcile: async (k) => {
      reconciled.push(k);
      const inst = instInformer.get(k) as Instance | undefined;
      if (!inst) return;
      const owned = repInformer.list(
        (r) => r.metadata?.ownerReferences?.some((o) => o.uid === inst.metadata.uid) ?? false,
      ).length;
      if (inst.status?.replicas === owned) return;
      if (failNext) {
        failNext = false;
        throw new Error('transient failure: must be retried with backoff');
      }
      try {
        await instances.patchStatus(splitKey(k).name, { replicas: owned }, { namespace: ns });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    },
    onReconciled: (_k, outcome) =>
      outcomes.push({ failed: outcome.error !== undefined, waiting: queue.waitingLen() }),
  });
  t.teardown(async () => {
    await ctrl.stop();
    await Promise.all([instInformer.stop(), repInformer.stop()]);
  });

  const converged = async (count: number) => {
    await eventually(`status.replicas ${count}`, () => {
      const current = instInformer.get(key) as Instance | undefined;
      if (current?.status?.replicas === count) return true;
      throw new Error(`status.replicas ${current?.status?.replicas}, ${reconciled.length} reconciles`);
    });
    // The reconcile our own status write triggers has run too: nothing is queued, waiting or running.
    await eventually('an idle queue', () => queue.len() + queue.waitingLen() + queue.processingLen() === 0);
  };

  const inst = await instances.create({
    metadata: { name: 'web', namespace: ns },
    spec: { replicas: 2, template: { processes: [{ name: 'a', command: ['true'] }] } },
  });
  await converged(0);
  const replica = (ordinal: number) =>
    replicas.create({
      metadata: {
        name: `web-${ordinal}`,
        namespace: ns,
        ownerReferences: [
          {
            apiVersion: 'orrery.dev/v1alpha1',
            kind: 'Instance',
            name: 'web',
            uid: inst.metadata.uid as string,
            controller: true,
          },
        ],
      },
      spec: {
        instance: 'web',
        ordinal,
        host: 'h',
        template: { processes: [{ name: 'a', command: ['true'] }] },
      },
    });
  // With the Instance idle, only a Replica event mapped to its owner can move the count.
  await replica(0);
  await converged(1);
  await replica(1);
  await converged(2);
  t.true(
    reconciled.every((k) => k === key),
    `every event mapped to the Instance key: ${reconciled.join(', ')}`,
  );

  // The reconcile for this delete fails; nothing else touches these objects until it is retried,
  // so only the controller's backoff requeue can bring the count down to 1.
  const before = outcomes.length;
  failNext = true;
  await replicas.delete('web-1', { namespace: ns });
  await converged(1);
  const after = outcomes.slice(before);
  t.deepEqual(after[0], { failed: true, waiting: 1 }, 'the failed key was held for its backoff');
  t.true(after.length >= 2, 'the failed reconcile was retried');
  t.true(
    after.slice(1).every((o) => !o.failed),
    `after the failure, only successes: ${JSON.stringify(after)}`,
  );
  t.is(queue.numRequeues(key), 0, 'success forgot the failure');
});
