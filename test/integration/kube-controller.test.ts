// A controller wired the controller-runtime way against the real API server: informers feed a
// work queue (own objects and owned objects mapped to their owner), reconcile(key) converges.
import test from 'ava';
import { installCrds } from '../../crds/install.ts';
import type { Instance } from '../../crds/types.ts';
import { KubeApi } from '../../kube/api.ts';
import { loadKubeConfig } from '../../kube/config.ts';
import { enqueueFromInformer, enqueueOwner, runController } from '../../kube/controller.ts';
import { isNotFound } from '../../kube/errors.ts';
import { Informer } from '../../kube/informer.ts';
import { INSTANCES, REPLICAS, ResourceClient } from '../../kube/resources.ts';
import { splitKey } from '../../kube/types.ts';
import { WorkQueue } from '../../kube/workqueue.ts';
import { freshNamespace, testCluster } from '../helpers/cluster.ts';

let api: KubeApi;

test.before(async () => {
  const { kubeconfig } = await testCluster();
  const kc = loadKubeConfig({ kubeconfig });
  await installCrds(kc);
  api = await KubeApi.fromKubeConfig(kc);
});
test.after.always(() => api?.close());

test('owned Replica events reach the owning Instance key, and reconcile converges status', async (t) => {
  const ns = await freshNamespace(t);
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
  let failOnce = true;
  // A toy reconcile: status.replicas = number of Replicas owned, read from the cache only.
  const ctrl = runController({
    name: 'toy-instance',
    queue,
    workers: 2,
    waitFor: [instInformer, repInformer],
    reconcile: async (key) => {
      reconciled.push(key);
      const inst = instInformer.get(key) as Instance | undefined;
      if (!inst) return;
      if (failOnce) {
        failOnce = false;
        throw new Error('transient failure: must be retried with backoff');
      }
      const owned = repInformer.list(
        (r) => r.metadata?.ownerReferences?.some((o) => o.uid === inst.metadata.uid) ?? false,
      ).length;
      if (inst.status?.replicas === owned) return;
      try {
        await instances.patchStatus(splitKey(key).name, { replicas: owned }, { namespace: ns });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    },
  });
  t.teardown(async () => {
    await ctrl.stop();
    await Promise.all([instInformer.stop(), repInformer.stop()]);
  });

  const inst = await instances.create({
    metadata: { name: 'web', namespace: ns },
    spec: { replicas: 2, template: { processes: [{ name: 'a', command: ['true'] }] } },
  });
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
  await replica(0);
  await replica(1);

  const deadline = Date.now() + 20_000;
  for (;;) {
    const current = instInformer.get(`${ns}/web`) as Instance | undefined;
    if (current?.status?.replicas === 2) break;
    if (Date.now() > deadline) throw new Error(`status never converged; reconciled ${reconciled.join(',')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  t.true(
    reconciled.every((k) => k === `${ns}/web`),
    'every event mapped to the Instance key',
  );
  t.true(reconciled.length >= 2, 'the failed reconcile was retried');
  t.is(queue.numRequeues(`${ns}/web`), 0, 'success forgot the failure');
});
