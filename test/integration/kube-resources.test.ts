// The generic resource client against the real API server: CRUD, typed errors, preconditions,
// server-side apply with field managers, the status and scale subresources, cluster-scoped
// kinds, and the Replica `spec.host` field selector the host agent relies on.
import test from 'ava';
import { installCrds } from '../../crds/install.ts';
import { HOSTS, INSTANCES, REPLICAS } from '../../crds/resources.ts';
import type { Instance, Replica } from '../../crds/types.ts';
import { KubeApi } from '../../kube/api.ts';
import { loadKubeConfig } from '../../kube/config.ts';
import { isAlreadyExists, isConflict, isInvalid, isNotFound, type KubeApiError } from '../../kube/errors.ts';
import { Informer } from '../../kube/informer.ts';
import { type Applied, CONFIGMAPS, ResourceClient } from '../../kube/resources.ts';
import type { KubeObject } from '../../kube/types.ts';
import { freshNamespace, testCluster } from '../helpers/cluster.ts';

interface ConfigMap extends KubeObject {
  data?: Record<string, string>;
}

let api: KubeApi;

test.before(async () => {
  const { kubeconfig } = await testCluster();
  const kc = loadKubeConfig({ kubeconfig });
  await installCrds(kc); // idempotent; a run-wide control plane already has them
  api = await KubeApi.fromKubeConfig(kc);
});

test.after.always(() => api?.close());

test('create, get, list, patch, replace and delete a ConfigMap, with typed errors', async (t) => {
  const ns = await freshNamespace(t);
  const cms = new ResourceClient<ConfigMap>(api, CONFIGMAPS, { fieldManager: 'kube-test' });
  const created = await cms.create({ metadata: { name: 'a', namespace: ns }, data: { k: '1' } });
  t.truthy(created.metadata?.uid);

  const dup = await t.throwsAsync(cms.create({ metadata: { name: 'a', namespace: ns } }));
  t.true(isAlreadyExists(dup));
  t.false(isConflict(dup), 'AlreadyExists is not an optimistic-concurrency conflict');
  t.is((dup as KubeApiError).status, 409);

  const missing = await t.throwsAsync(cms.get('nope', { namespace: ns }));
  t.true(isNotFound(missing));
  t.regex((missing as Error).message, /GET .*configmaps\/nope failed with HTTP 404 \(NotFound\)/);

  const list = await cms.list({ namespace: ns });
  t.deepEqual(
    list.items.map((o) => o.metadata?.name),
    ['a'],
  );
  t.truthy(list.metadata.resourceVersion);

  const patched = await cms.mergePatch('a', { data: { k: '2' } }, { namespace: ns });
  t.is(patched.data?.k, '2');

  // Optimistic concurrency: a replace carrying the old resourceVersion conflicts.
  const stale = await t.throwsAsync(cms.replace({ ...created, data: { k: 'stale' } }));
  t.true(isConflict(stale));
  const replaced = await cms.replace({ ...patched, data: { k: '3' } });
  t.is(replaced.data?.k, '3');

  // Delete preconditions: a wrong uid is refused with 409.
  const wrongUid = await t.throwsAsync(
    cms.delete('a', { namespace: ns, preconditions: { uid: 'not-the-uid' } }),
  );
  t.true(isConflict(wrongUid));
  await cms.delete('a', {
    namespace: ns,
    preconditions: { uid: created.metadata?.uid as string },
    propagationPolicy: 'Background',
  });
  t.true(isNotFound(await t.throwsAsync(cms.get('a', { namespace: ns }))));

  // Paged listing returns everything with the snapshot's resourceVersion.
  for (let i = 0; i < 5; i++) await cms.create({ metadata: { name: `p${i}`, namespace: ns } });
  const all = await cms.listAll({ namespace: ns, limit: 2 });
  t.is(all.items.length, 5);
  t.truthy(all.resourceVersion);
});

const instance = (ns: string, name: string): Applied<Instance> => ({
  metadata: { name, namespace: ns },
  spec: {
    replicas: 1,
    template: { processes: [{ name: 'main', command: ['sleep', '100'] }] },
  },
});

test('server-side apply records the field manager; status and scale subresources', async (t) => {
  const ns = await freshNamespace(t);
  const user = new ResourceClient(api, INSTANCES, { fieldManager: 'kube-test-user' });
  const operator = new ResourceClient(api, INSTANCES, { fieldManager: 'kube-test-operator' });

  const applied = await user.apply(instance(ns, 'web'));
  t.is(applied.spec.replicas, 1);
  const managers = (applied.metadata.managedFields as { manager: string }[]).map((m) => m.manager);
  t.true(managers.includes('kube-test-user'), `managers: ${managers.join(', ')}`);

  // Status goes through /status only: spec in the same request is ignored.
  const withStatus = await operator.applyStatus({
    metadata: { name: 'web', namespace: ns },
    status: { replicas: 1, readyReplicas: 0, observedGeneration: 1 },
  });
  t.is(withStatus.status?.replicas, 1);
  const statusManagers = (withStatus.metadata.managedFields as { manager: string; subresource?: string }[])
    .filter((m) => m.subresource === 'status')
    .map((m) => m.manager);
  t.deepEqual(statusManagers, ['kube-test-operator']);

  const merged = await operator.patchStatus('web', { readyReplicas: 1 }, { namespace: ns });
  t.is(merged.status?.readyReplicas, 1);
  t.is(merged.status?.replicas, 1, 'merge patch keeps the other status fields');
  const ignored = await operator.patch(
    'web',
    { spec: { replicas: 9 } },
    { namespace: ns, subresource: 'status' },
  );
  t.is(ignored.spec.replicas, 1, 'the status subresource ignores spec');

  const scale = await operator.scale('web', 4, { namespace: ns });
  t.is(scale.spec?.replicas, 4);
  t.is((await user.get('web', { namespace: ns })).spec.replicas, 4);
  t.is((await operator.getScale('web', { namespace: ns })).spec?.replicas, 4);

  // Validation errors are 422 and name the field.
  const bad = await t.throwsAsync(
    user.create({
      metadata: { name: 'bad', namespace: ns },
      spec: { replicas: -1, template: { processes: [] } },
    }),
  );
  t.true(isInvalid(bad));
  t.regex((bad as Error).message, /spec\.(replicas|template\.processes)/);
});

test('cluster-scoped kinds have no namespace in their path', async (t) => {
  const hosts = new ResourceClient(api, HOSTS, { fieldManager: 'kube-test' });
  const name = `kube-test-host-${Date.now().toString(36)}`;
  t.teardown(() => hosts.delete(name).catch(() => {}));
  const created = await hosts.apply({ metadata: { name }, spec: { unschedulable: true } });
  t.is(created.metadata.name, name);
  t.is(hosts.objectPath(name), `/apis/orrery.dev/v1alpha1/hosts/${name}`);
  t.is((await hosts.get(name)).spec?.unschedulable, true);
  t.throws(() => new ResourceClient(api, INSTANCES, { fieldManager: 'x' }).objectPath('web'), {
    message: /Instance is namespaced: a namespace is required/,
  });
});

test('an informer with the spec.host field selector sees only the Replicas bound to that host', async (t) => {
  const ns = await freshNamespace(t);
  const replicas = new ResourceClient<Replica>(api, REPLICAS, { fieldManager: 'kube-test' });
  const replica = (name: string, host: string) => ({
    metadata: { name, namespace: ns },
    spec: {
      instance: 'web',
      ordinal: Number(name.split('-')[1]),
      host,
      template: { processes: [{ name: 'a', command: ['true'] }] },
    },
  });
  await replicas.create(replica('web-0', 'host-a'));
  await replicas.create(replica('web-1', 'host-b'));

  const informer = new Informer(replicas, { namespace: ns, fieldSelector: 'spec.host=host-a' });
  informer.start();
  t.teardown(() => informer.stop());
  await informer.waitForSync({ timeoutMs: 20_000 });
  t.deepEqual(informer.keys(), [`${ns}/web-0`]);

  await replicas.create(replica('web-2', 'host-a'));
  await replicas.create(replica('web-3', 'host-b'));
  const deadline = Date.now() + 10_000;
  while (!informer.get(`${ns}/web-2`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.deepEqual(informer.keys().sort(), [`${ns}/web-0`, `${ns}/web-2`]);
});
