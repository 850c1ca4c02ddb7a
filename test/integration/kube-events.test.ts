// The EventRecorder against the real API server: events land on the object, repeats are
// aggregated into one Event with a count, and `kubectl describe` shows them.
import test from 'ava';
import { installCrds } from '../../crds/install.ts';
import { HOSTS } from '../../crds/resources.ts';
import { KubeApi } from '../../kube/api.ts';
import { loadKubeConfig } from '../../kube/config.ts';
import { EventRecorder } from '../../kube/events.ts';
import { CONFIGMAPS, ResourceClient } from '../../kube/resources.ts';
import { freshNamespace, kubectl, testCluster } from '../helpers/cluster.ts';

let api: KubeApi;
let kubeconfig: string;

test.before(async () => {
  ({ kubeconfig } = await testCluster());
  const kc = loadKubeConfig({ kubeconfig });
  await installCrds(kc);
  api = await KubeApi.fromKubeConfig(kc);
});
test.after.always(() => api?.close());

test('repeated identical events are aggregated into one Event whose count grows', async (t) => {
  const ns = await freshNamespace(t);
  const cms = new ResourceClient(api, CONFIGMAPS, { fieldManager: 'kube-test' });
  const cm = await cms.create({ metadata: { name: 'web', namespace: ns } });
  const recorder = new EventRecorder(api, {
    reportingController: 'orrery-operator',
    reportingInstance: 'test-1',
  });

  // Fired concurrently, as a controller would: the recorder must still count them all.
  await Promise.all([
    recorder.warning(cm, 'FailedScheduling', 'no Ready host fits 500m cpu'),
    recorder.warning(cm, 'FailedScheduling', 'no Ready host fits 500m cpu'),
    recorder.warning(cm, 'FailedScheduling', 'no Ready host fits 500m cpu'),
  ]);
  await recorder.normal(cm, 'Scheduled', 'bound web-0 to host-a');

  const events = (await recorder.client.list({ namespace: ns })).items;
  t.is(events.length, 2, 'one Event per distinct (reason, message)');
  const failed = events.find((e) => e.reason === 'FailedScheduling');
  t.is(failed?.count, 3);
  t.is(failed?.type, 'Warning');
  t.is(failed?.involvedObject.uid, cm.metadata?.uid);
  t.is(failed?.involvedObject.kind, 'ConfigMap');
  t.is(failed?.source?.component, 'orrery-operator');
  t.is(failed?.reportingInstance, 'test-1');
  t.is(events.find((e) => e.reason === 'Scheduled')?.count, 1);

  const described = await kubectl(kubeconfig, ['describe', 'configmap', 'web', '-n', ns]);
  t.is(described.code, 0, described.stderr);
  t.regex(
    described.stdout,
    /Warning\s+FailedScheduling\s+.*\(x3 over .*\)\s+orrery-operator\s+no Ready host fits 500m cpu/,
  );
  t.regex(described.stdout, /Normal\s+Scheduled\s+.*orrery-operator\s+bound web-0 to host-a/);
});

test('a storm of identical events costs one write per round trip and loses no occurrence', async (t) => {
  const ns = await freshNamespace(t);
  const cms = new ResourceClient(api, CONFIGMAPS, { fieldManager: 'kube-test' });
  const cm = await cms.create({ metadata: { name: 'flappy', namespace: ns } });
  const recorder = new EventRecorder(api, { reportingController: 'orrery-runtime' });
  await recorder.warning(cm, 'BackOff', 'back-off restarting failed process');
  const storm = await Promise.all(
    Array.from({ length: 20 }, () => recorder.warning(cm, 'BackOff', 'back-off restarting failed process')),
  );
  t.is(new Set(storm.map((e) => e?.metadata?.resourceVersion)).size, 1, 'one PATCH for the whole storm');
  t.is(storm[0]?.count, 21);
  const stored = (await recorder.client.list({ namespace: ns })).items;
  t.is(stored.length, 1);
  t.is(stored[0]?.count, 21);
});

test('an aggregated Event that was deleted starts a new series instead of failing', async (t) => {
  const ns = await freshNamespace(t);
  const cms = new ResourceClient(api, CONFIGMAPS, { fieldManager: 'kube-test' });
  const cm = await cms.create({ metadata: { name: 'db', namespace: ns } });
  const recorder = new EventRecorder(api, { reportingController: 'orrery-runtime' });
  const first = await recorder.warning(cm, 'BackOff', 'restarting failed process');
  t.truthy(first);
  await recorder.client.delete(first?.metadata?.name as string, { namespace: ns });
  const second = await recorder.warning(cm, 'BackOff', 'restarting failed process');
  t.is(second?.count, 1);
  t.not(second?.metadata?.name, first?.metadata?.name);
});

test('events about cluster-scoped objects go to the default namespace and show in describe', async (t) => {
  const hosts = new ResourceClient(api, HOSTS, { fieldManager: 'kube-test' });
  const name = `kube-events-host-${Date.now().toString(36)}`;
  // Unschedulable, so operators other tests run against the same API server never bind to it.
  const host = await hosts.apply({ metadata: { name }, spec: { unschedulable: true } });
  t.teardown(() => hosts.delete(name).catch(() => {}));
  const recorder = new EventRecorder(api, { reportingController: 'orrery-operator' });
  const ev = await recorder.warning(host, 'NodeNotReady', 'lease host-x expired');
  t.is(ev?.metadata?.namespace, 'default');
  t.is(ev?.involvedObject.namespace, undefined);
  const described = await kubectl(kubeconfig, ['describe', 'host', name]);
  t.regex(described.stdout, /Warning\s+NodeNotReady\s+.*lease host-x expired/);
  t.teardown(() =>
    recorder.client.delete(ev?.metadata?.name as string, { namespace: 'default' }).catch(() => {}),
  );
});
