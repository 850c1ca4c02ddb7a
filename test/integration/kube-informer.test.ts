// The informer against the real kube-apiserver: it sees adds/updates/deletes, converges after
// its resourceVersion expires (410 → relist with diffs), and survives a control plane restart.
import { execFileSync } from 'node:child_process';
import test from 'ava';
import { KubeApi } from '../../kube/api.ts';
import { loadKubeConfig } from '../../kube/config.ts';
import { Informer } from '../../kube/informer.ts';
import { CONFIGMAPS, ResourceClient } from '../../kube/resources.ts';
import type { KubeObject } from '../../kube/types.ts';
import { freshNamespace, privateControlPlane, testCluster } from '../helpers/cluster.ts';
import { compactEtcd } from '../helpers/etcd.ts';

interface ConfigMap extends KubeObject {
  data?: Record<string, string>;
}

type Seen = { type: 'add' | 'update' | 'delete'; key: string; data?: string; unknown?: boolean };

async function clientFor(kubeconfig: string): Promise<ResourceClient<ConfigMap>> {
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
  return new ResourceClient<ConfigMap>(api, CONFIGMAPS, { fieldManager: 'kube-informer-test' });
}

function record(informer: Informer<ConfigMap>): Seen[] {
  const seen: Seen[] = [];
  const key = (o: ConfigMap) => `${o.metadata?.namespace}/${o.metadata?.name}`;
  informer.addHandlers({
    add: (o) => seen.push({ type: 'add', key: key(o), data: o.data?.v }),
    update: (old, o) => {
      if (old !== o) seen.push({ type: 'update', key: key(o), data: o.data?.v });
    },
    delete: (o, info) => seen.push({ type: 'delete', key: key(o), unknown: info.finalStateUnknown }),
  });
  return seen;
}

async function until(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const cm = (namespace: string, name: string, v: string): ConfigMap => ({
  metadata: { name, namespace, labels: { app: 'kube-test' } },
  data: { v },
});

test('the informer caches ConfigMaps and reports add, update and delete', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const client = await clientFor(kubeconfig);
  t.teardown(() => client.api.close());
  await client.create(cm(ns, 'before', '0'));

  const informer = new Informer(client, { namespace: ns, labelSelector: 'app=kube-test' });
  const seen = record(informer);
  informer.addIndex('v', (o) => o.data?.v);
  informer.start();
  t.teardown(() => informer.stop());
  await informer.waitForSync({ timeoutMs: 20_000 });
  t.true(informer.hasSynced());
  t.deepEqual(informer.keys(), [`${ns}/before`]);
  t.is(informer.get(`${ns}/before`)?.metadata?.managedFields, undefined, 'managedFields are not cached');
  t.deepEqual(
    informer.byIndex('v', '0').map((o) => o.metadata?.name),
    ['before'],
  );

  await client.create(cm(ns, 'a', '1'));
  await client.mergePatch('a', { data: { v: '2' } }, { namespace: ns });
  await client.create({ metadata: { name: 'unlabelled', namespace: ns }, data: { v: 'x' } });
  await client.delete('before', { namespace: ns });
  await until('delete of before', () => seen.some((s) => s.type === 'delete' && s.key === `${ns}/before`));

  t.deepEqual(seen, [
    { type: 'add', key: `${ns}/before`, data: '0' },
    { type: 'add', key: `${ns}/a`, data: '1' },
    { type: 'update', key: `${ns}/a`, data: '2' },
    { type: 'delete', key: `${ns}/before`, unknown: false },
  ]);
  t.is(informer.get(`${ns}/a`)?.data?.v, '2');
  t.deepEqual(informer.byIndex('v', '1'), [], 'the index follows updates');
  t.deepEqual(
    informer.byIndex('v', '2').map((o) => o.metadata?.name),
    ['a'],
  );
  t.deepEqual(informer.byIndex('v', '0'), [], 'and deletes');
  t.is(informer.get(`${ns}/unlabelled`), undefined, 'the label selector filters server-side');
  t.deepEqual(
    informer.list().map((o) => o.metadata?.name),
    ['a'],
  );

  // Resync re-delivers the cache as updates with old === new.
  let resynced = 0;
  informer.addHandlers({ update: (o, n) => void (o === n && resynced++) });
  informer.resync();
  t.is(resynced, 1);
});

test('after its resourceVersion expires (410 Gone) the informer relists and reports what it missed', async (t) => {
  // A real 410: compact etcd's history past the informer's resourceVersion and restart the API
  // server so its watch cache starts empty at the current revision. Resuming the watch from the
  // old resourceVersion is then answered "too old resource version" (410), and the changes made
  // while the informer was away must come out of the relist as adds, updates and deletes.
  const cp = await privateControlPlane(t, 'orrery-kube-410-');
  const client = await clientFor(cp.current.kubeconfig);
  t.teardown(() => client.api.close());
  const ns = 'default';
  await client.create(cm(ns, 'kept', 'k'));
  await client.create(cm(ns, 'changed', '1'));
  await client.create(cm(ns, 'removed', 'r'));

  const informer = new Informer(client, { namespace: ns, labelSelector: 'app=kube-test' });
  informer.start();
  t.teardown(() => informer.stop());
  await informer.waitForSync({ timeoutMs: 20_000 });
  const seen = record(informer);
  seen.length = 0; // drop the replayed adds
  const lastRv = informer.lastSyncResourceVersion();

  // Hold the watch down while the API server restarts and things change.
  let changed!: () => void;
  const changesMade = new Promise<void>((r) => {
    changed = r;
  });
  informer.restartWatch({ after: changesMade });
  await client.create(cm(ns, 'added', 'a'));
  await client.mergePatch('changed', { data: { v: '2' } }, { namespace: ns });
  await client.delete('removed', { namespace: ns });
  await compactEtcd(cp.dataDir);
  await cp.stop();
  await cp.start();
  const listsBefore = informer.stats().lists;
  changed();

  await until('relist after 410', () => informer.stats().lists > listsBefore && seen.length >= 3).catch(
    (e) => {
      t.log(JSON.stringify({ stats: informer.stats(), seen, rv: informer.lastSyncResourceVersion() }));
      throw e;
    },
  );
  t.log(`resumed from resourceVersion ${lastRv}; stats ${JSON.stringify(informer.stats())}`);
  t.true(informer.stats().gone >= 1, 'the API server answered 410 Gone');
  t.deepEqual(
    seen.sort((a, b) => a.type.localeCompare(b.type)),
    [
      { type: 'add', key: `${ns}/added`, data: 'a' },
      { type: 'delete', key: `${ns}/removed`, unknown: true },
      { type: 'update', key: `${ns}/changed`, data: '2' },
    ],
  );
  t.deepEqual(informer.keys().sort(), [`${ns}/added`, `${ns}/changed`, `${ns}/kept`]);

  // And it keeps watching after the relist.
  await client.create(cm(ns, 'later', 'l'));
  await until('watch resumed after relist', () => informer.get(`${ns}/later`) !== undefined);
  t.is(seen.at(-1)?.key, `${ns}/later`);
});

test('the informer reconnects after the control plane restarts and sees changes made after it', async (t) => {
  const cp = await privateControlPlane(t, 'orrery-kube-restart-');
  const client = await clientFor(cp.current.kubeconfig);
  t.teardown(() => client.api.close());
  await client.create(cm('default', 'one', '1'));

  const informer = new Informer(client, {
    namespace: 'default',
    labelSelector: 'app=kube-test',
    backoffInitialMs: 50,
    backoffMaxMs: 500,
  });
  const seen = record(informer);
  informer.start();
  t.teardown(() => informer.stop());
  await informer.waitForSync({ timeoutMs: 20_000 });
  t.deepEqual(informer.keys(), ['default/one']);

  const stopT0 = performance.now();
  await cp.stop();
  t.log(
    `control plane stop took ${(performance.now() - stopT0).toFixed(0)} ms; informer ${JSON.stringify(informer.stats())}`,
  );
  await until(
    'the informer to notice the outage',
    () => informer.stats().errors >= 1 && !informer.health().watching,
  );
  const errorsWhileDown = informer.stats().errors;
  const down = informer.health();
  t.false(down.watching);
  t.truthy(down.lastError, 'health() says why it is not watching');
  t.truthy(down.failingSince);
  await cp.start();
  const upAt = performance.now();

  await client.create(cm('default', 'two', '2'));
  await client.mergePatch('one', { data: { v: 'updated' } }, { namespace: 'default' });
  await until(
    'changes after restart',
    () => informer.get('default/two') !== undefined && informer.get('default/one')?.data?.v === 'updated',
  );
  const seenMs = performance.now() - upAt;
  t.log(
    `changes after restart seen ${seenMs.toFixed(0)} ms after the API server was ready; stats ${JSON.stringify(informer.stats())}`,
  );
  t.true(errorsWhileDown >= 1, 'the informer noticed the outage');
  t.deepEqual(informer.health(), {
    synced: true,
    watching: true,
    lastError: undefined,
    failingSince: undefined,
  });
  t.true(seen.some((s) => s.type === 'add' && s.key === 'default/two'));
  t.true(seen.some((s) => s.type === 'update' && s.key === 'default/one' && s.data === 'updated'));
});

test('a watch silent past the idle timeout is replaced without losing events; bookmarks count as activity', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const client = await clientFor(kubeconfig);
  t.teardown(() => client.api.close());

  // Idle timer far below anything the server sends on a quiet namespace: every watch is cut.
  const idle = new Informer(client, { namespace: ns, idleTimeoutMs: 200 });
  idle.start();
  t.teardown(() => idle.stop());
  await idle.waitForSync({ timeoutMs: 20_000 });
  await until('idle timeouts', () => idle.stats().idleTimeouts >= 3);
  await client.create(cm(ns, 'after-idle', '1'));
  await until('event after idle reconnects', () => idle.get(`${ns}/after-idle`) !== undefined);
  t.is(idle.stats().lists, 1, 'idle reconnects resume from the last resourceVersion, no relist');

  // Short server-side timeouts: the API server ends each watch, and before that sends a bookmark
  // when the store's revision moved on (here: writes to objects outside the label selector). The
  // informer counts them and resumes from the bookmarked resourceVersion without any event.
  const short = new Informer(client, {
    namespace: ns,
    labelSelector: 'app=kube-test',
    minWatchTimeoutSeconds: 5,
  });
  short.start();
  t.teardown(() => short.stop());
  await short.waitForSync({ timeoutMs: 20_000 });
  const listedRv = Number(short.lastSyncResourceVersion());
  await client.create({ metadata: { name: 'noise', namespace: ns }, data: { n: '0' } });
  let n = 0;
  const noise = setInterval(() => {
    client.mergePatch('noise', { data: { n: String(++n) } }, { namespace: ns }).catch(() => {});
  }, 250);
  t.teardown(() => clearInterval(noise));
  await until(
    'bookmarks and server-side watch ends',
    () => short.stats().bookmarks >= 1 && short.stats().watches >= 2,
    30_000,
  ).catch((err) => {
    t.log(JSON.stringify(short.stats()));
    throw err;
  });
  clearInterval(noise);
  t.is(short.stats().events, 0, 'nothing matched the selector');
  t.true(Number(short.lastSyncResourceVersion()) > listedRv, 'bookmarks advanced the resourceVersion');
  t.is(short.stats().errors, 0);
  t.is(short.stats().lists, 1);
  t.log(
    `idle informer ${JSON.stringify(idle.stats())}; short-timeout informer ${JSON.stringify(short.stats())}`,
  );
});

// Serial: ava runs serial tests before the concurrent ones, so the connections reset below are
// only this test's (the pid filter excludes other test files' processes).
test.serial(
  'a dropped watch connection is resumed from the last resourceVersion: no relist, no lost event',
  async (t) => {
    const { kubeconfig, server } = await testCluster();
    const ns = await freshNamespace(t);
    const client = await clientFor(kubeconfig);
    t.teardown(() => client.api.close());
    const informer = new Informer(client, { namespace: ns, backoffInitialMs: 50, backoffMaxMs: 500 });
    const seen = record(informer);
    informer.start();
    t.teardown(() => informer.stop());
    await informer.waitForSync({ timeoutMs: 20_000 });
    await client.create(cm(ns, 'first', '1'));
    await until('first event', () => seen.length === 1);

    // Abort this process's TCP connections to the API server (ss -K: SOCK_DESTROY, the way a
    // NAT timeout or a middlebox reset looks to the client).
    const port = new URL(server).port;
    const ours = execFileSync('ss', ['-tnpH', 'state', 'established', `dport = :${port}`], {
      encoding: 'utf8',
    })
      .split('\n')
      .filter((l) => l.includes(`pid=${process.pid},`))
      .map((l) => /127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:\d+/.exec(l)?.[1])
      .filter((p): p is string => p !== undefined);
    t.true(ours.length >= 1, 'found our watch connection');
    for (const sport of ours) {
      execFileSync('ss', ['-K', '-tn', `sport = :${sport}`, `dport = :${port}`]);
    }
    await until('the drop noticed', () => informer.stats().errors >= 1);
    // Changes right after the drop, while the informer is backing off and reconnecting.
    await client.create(cm(ns, 'during', '2'));
    await client.mergePatch('first', { data: { v: '1b' } }, { namespace: ns });
    await client.delete('during', { namespace: ns });
    await until('all changes after the drop', () => seen.length === 4);
    t.deepEqual(seen.slice(1), [
      { type: 'add', key: `${ns}/during`, data: '2' },
      { type: 'update', key: `${ns}/first`, data: '1b' },
      { type: 'delete', key: `${ns}/during`, unknown: false },
    ]);
    const stats = informer.stats();
    t.log(`after dropping ${ours.length} connection(s): ${JSON.stringify(stats)}`);
    t.true(stats.errors >= 1, 'the drop was noticed');
    t.is(stats.lists, 1, 'resumed from the resourceVersion, no relist');
  },
);

test('periodic resync re-delivers every cached object as an update with old === new', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const client = await clientFor(kubeconfig);
  t.teardown(() => client.api.close());
  await client.create(cm(ns, 'x', '1'));
  await client.create(cm(ns, 'y', '1'));
  const informer = new Informer(client, { namespace: ns, resyncPeriodMs: 100 });
  const resynced = new Map<string, number>();
  informer.addHandlers({
    update: (o, n) => {
      if (o === n)
        resynced.set(n.metadata?.name as string, (resynced.get(n.metadata?.name as string) ?? 0) + 1);
    },
  });
  informer.start();
  t.teardown(() => informer.stop());
  await informer.waitForSync({ timeoutMs: 20_000 });
  await until(
    'two resyncs of both objects',
    () => (resynced.get('x') ?? 0) >= 2 && (resynced.get('y') ?? 0) >= 2,
  );
  t.true(informer.stats().resyncs >= 2);
  t.is(informer.stats().lists, 1, 'a resync re-delivers the cache; it does not relist');
});
