// The operator against the real API server. Hosts here are what the operator sees of them — a
// Host object and a heartbeat Lease that this test renews (or stops renewing, to lose a host);
// no runtime runs processes in this file (test/integration/e2e-*.test.ts do that).
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import test, { type ExecutionContext } from 'ava';
import { pino } from 'pino';
import { INSTANCE_LABEL, RUNTIME_FINALIZER, SYSTEM_NAMESPACE } from '../../crds/labels.ts';
import { HOSTS, INSTANCES, REPLICAS } from '../../crds/resources.ts';
import type { Host, Instance, Replica } from '../../crds/types.ts';
import { credentialsFor } from '../../kube/credentials.ts';
import {
  EVENTS,
  isAlreadyExists,
  KubeApi,
  type KubeConfig,
  kubeConfigFromString,
  leaseClient,
  loadKubeConfig,
  NAMESPACES,
  renewLease,
  resourceClient,
  typed,
} from '../../kube/index.ts';
import { type Operator, type OperatorOptions, startOperator } from '../../operator/operator.ts';
import { freshNamespace } from '../helpers/cluster.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { eventually } from '../helpers/wait.ts';

const log = pino({ level: process.env.ORRERY_TEST_LOG ?? 'silent' });

type LeaderTimings = Pick<OperatorOptions, 'leaseDurationSeconds' | 'renewDeadlineMs' | 'retryPeriodMs'>;

interface Harness {
  api: KubeApi;
  kubeConfig: KubeConfig;
  ns: string;
  testLabel: string;
  /** The operators' leader election Lease in orrery-system (one per test). */
  leaderLease: string;
  /** The first operator; undefined with `deferOperator` (the test starts one itself). */
  operator: Operator | undefined;
  instances: ReturnType<typeof resourceClient<Instance>>;
  replicas: ReturnType<typeof resourceClient<Replica>>;
  hosts: ReturnType<typeof resourceClient<Host>>;
  /** Registers a Host and keeps its Lease renewed until `stop()` (a lost host) or the test ends. */
  addHost(
    name: string,
    opts?: { memory?: string; labels?: Record<string, string> },
  ): Promise<{ name: string; stop(): void }>;
  /** Another operator on the same namespace; `extra` overrides its options (its kubeconfig, say). */
  startOperator(identity?: string, extra?: Partial<OperatorOptions>): Promise<Operator>;
}

async function harness(
  t: ExecutionContext,
  opts: { hostGraceMs?: number; deferOperator?: boolean; leaderTimings?: LeaderTimings } = {},
): Promise<Harness> {
  const { kubeconfig } = await orreryCluster();
  const kubeConfig = loadKubeConfig({ kubeconfig });
  const api = await KubeApi.fromKubeConfig(kubeConfig);
  // Host heartbeats and the leader Lease live in orrery-system. An operator creates it when it
  // starts, but a test may register hosts before any operator ran on this control plane.
  await resourceClient(api, NAMESPACES, 'orrery-test')
    .create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: SYSTEM_NAMESPACE } })
    .catch((error: unknown) => {
      if (!isAlreadyExists(error)) throw error;
    });
  const ns = await freshNamespace(t);
  const id = randomBytes(3).toString('hex');
  const leaderLease = `orrery-operator-${id}`;
  const testLabel = `orrery.dev/test=${id}`;
  const leases = leaseClient(api, 'orrery-test');
  const hosts = resourceClient(api, typed<Host>(HOSTS), 'orrery-test');
  const stops: (() => void)[] = [];
  const operators: Operator[] = [];

  const start = async (identity?: string, extra: Partial<OperatorOptions> = {}) => {
    const operator = await startOperator({
      kubeConfig,
      log,
      namespace: ns,
      hostSelector: testLabel,
      leaderLeaseName: leaderLease,
      leaseDurationSeconds: 2,
      renewDeadlineMs: 1500,
      retryPeriodMs: 200,
      ...opts.leaderTimings,
      hostGraceMs: opts.hostGraceMs ?? 1000,
      ...(identity ? { identity } : {}),
      ...extra,
    });
    operators.push(operator);
    return operator;
  };

  t.teardown(async () => {
    for (const stop of stops) stop();
    await Promise.all(operators.map((o) => o.stop()));
    for (const host of (await hosts.list({ labelSelector: testLabel })).items) {
      await hosts.delete(host.metadata.name as string).catch(() => {});
      await leases.delete(`host-${host.metadata.name}`, { namespace: SYSTEM_NAMESPACE }).catch(() => {});
    }
    api.close();
  });

  return {
    api,
    kubeConfig,
    ns,
    testLabel,
    leaderLease,
    operator: opts.deferOperator ? undefined : await start(),
    startOperator: start,
    instances: resourceClient(api, typed<Instance>(INSTANCES), 'orrery-test'),
    replicas: resourceClient(api, typed<Replica>(REPLICAS), 'orrery-test'),
    hosts,
    async addHost(name, hostOpts = {}) {
      const fullName = `${name}-${id}`;
      await hosts.create({
        apiVersion: 'orrery.dev/v1alpha1',
        kind: 'Host',
        metadata: { name: fullName, labels: { 'orrery.dev/test': id, ...hostOpts.labels } },
        spec: { unschedulable: false },
      });
      await hosts.patchStatus(fullName, {
        address: '127.0.0.1',
        allocatable: { cpu: '4', memory: hostOpts.memory ?? '8Gi', pids: 10000, replicas: 100 },
        conditions: [
          {
            type: 'Ready',
            status: 'True',
            reason: 'RuntimeReady',
            lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
          },
        ],
      });
      const renew = () =>
        renewLease(leases, {
          namespace: SYSTEM_NAMESPACE,
          name: `host-${fullName}`,
          holderIdentity: fullName,
          // 4 s: on a loaded machine (two control planes and agents from parallel test files) the
          // watch that brings renewals to the operator lagged past 2 s, and a live host was
          // evicted. The lost-host test still sees its eviction after max(grace, 4 s).
          leaseDurationSeconds: 4,
        });
      await renew();
      const timer = setInterval(() => void renew().catch(() => {}), 200);
      const stop = () => clearInterval(timer);
      stops.push(stop);
      return { name: fullName, stop };
    },
  };
}

function instance(
  name: string,
  replicas: number,
  template: Partial<Instance['spec']['template']> = {},
): Instance {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name },
    spec: {
      replicas,
      template: {
        metadata: { labels: { app: name } },
        processes: [{ name: 'main', command: ['sleep', 'infinity'] }],
        ...template,
      },
    } as Instance['spec'],
  };
}

async function replicasOf(h: Harness, name: string): Promise<Replica[]> {
  const list = await h.replicas.list({ namespace: h.ns, labelSelector: `${INSTANCE_LABEL}=${name}` });
  return list.items.sort((a, b) => a.spec.ordinal - b.spec.ordinal);
}

test('an Instance gets Replicas with stable ordinals, owner references and finalizers, spread over the hosts', async (t) => {
  // Hosts first, then the operator: its caches start with both, so spreading is deterministic
  // (with hosts added while it runs, a loaded machine may bind before it has seen the second).
  const h = await harness(t, { deferOperator: true });
  const [a, b] = [await h.addHost('a'), await h.addHost('b')];
  await h.startOperator();
  await h.instances.create(instance('web', 4), { namespace: h.ns });
  const replicas = await eventually('4 bound replicas', async () => {
    const items = await replicasOf(h, 'web');
    return items.length === 4 && items.every((r) => r.spec.host) && items;
  });
  t.deepEqual(
    replicas.map((r) => r.metadata.name),
    ['web-0', 'web-1', 'web-2', 'web-3'],
  );
  for (const r of replicas) {
    t.is(r.metadata.ownerReferences?.[0]?.kind, 'Instance');
    t.true(r.metadata.ownerReferences?.[0]?.controller);
    t.deepEqual(r.metadata.finalizers, [RUNTIME_FINALIZER]);
    t.is(r.metadata.labels?.app, 'web');
    t.is(r.spec.template.processes[0]?.restart, 'permanent', 'the template is copied with its defaults');
  }
  const perHost = (name: string) => replicas.filter((r) => r.spec.host === name).length;
  t.is(perHost(a.name), 2);
  t.is(perHost(b.name), 2);
});

test('scaling up creates the next ordinals and scaling down removes the highest first', async (t) => {
  const h = await harness(t);
  await h.addHost('a');
  await h.instances.create(instance('web', 2), { namespace: h.ns });
  await eventually('2 replicas', async () => (await replicasOf(h, 'web')).length === 2);
  await h.instances.scale('web', 5, { namespace: h.ns });
  // Bound, so that the runtime finalizer keeps the deleted ones visible (unbound replicas are
  // finalized by the operator at once).
  const five = await eventually('5 bound replicas', async () => {
    const items = await replicasOf(h, 'web');
    return items.length === 5 && items.every((r) => r.spec.host) && items;
  });
  t.deepEqual(
    five.map((r) => r.spec.ordinal),
    [0, 1, 2, 3, 4],
  );
  await h.instances.scale('web', 2, { namespace: h.ns });
  // Bound replicas wait for their runtime's finalizer; the ones marked for deletion are the highest.
  const marked = await eventually('3 replicas marked for deletion', async () => {
    const items = (await replicasOf(h, 'web')).filter((r) => r.metadata.deletionTimestamp);
    return items.length === 3 && items;
  });
  t.deepEqual(marked.map((r) => r.metadata.name).sort(), ['web-2', 'web-3', 'web-4']);
});

test('an Instance that fits nowhere stays Pending with an Unschedulable condition and Event', async (t) => {
  const h = await harness(t);
  await h.addHost('small', { memory: '64Mi' });
  await h.instances.create(instance('big', 1, { resources: { memory: '1Gi' } }), { namespace: h.ns });
  const replica = await eventually('an unschedulable replica', async () => {
    const [r] = await replicasOf(h, 'big');
    // On a loaded machine the host's 2 s Lease can look expired for a moment ("not ready"); the
    // message converges to the real reason at the next attempt.
    return r?.status?.reason === 'Unschedulable' && /Insufficient memory/.test(r.status.message ?? '') && r;
  });
  t.is(replica.status?.phase, 'Pending');
  t.regex(replica.status?.message ?? '', /0\/1 hosts are available: 1 Insufficient memory/);
  t.is(replica.spec.host, undefined);
  const degraded = await eventually('Degraded=Unschedulable on the Instance', async () => {
    const inst = await h.instances.get('big', { namespace: h.ns });
    const c = inst.status?.conditions?.find((x) => x.type === 'Degraded');
    return c?.reason === 'Unschedulable' && c;
  });
  t.is(degraded.status, 'True');
  const events = resourceClient(h.api, EVENTS, 'orrery-test');
  const event = await eventually('a FailedScheduling event', async () => {
    const list = await events.list({ namespace: h.ns });
    return (list.items as { reason?: string; type?: string; message?: string }[]).find(
      (e) => e.reason === 'FailedScheduling',
    );
  });
  t.is(event.type, 'Warning');
  t.regex(event.message ?? '', /Insufficient memory/);

  // Room appears: the pending replica is bound without any change to it.
  const roomy = await h.addHost('roomy', { memory: '4Gi' });
  await eventually(
    'the replica bound to the new host',
    async () => (await replicasOf(h, 'big'))[0]?.spec.host === roomy.name,
  );
  t.pass();
});

test('a lost host: its replicas are recreated on the others after the grace', async (t) => {
  const h = await harness(t);
  const a = await h.addHost('a');
  await h.instances.create(instance('web', 2), { namespace: h.ns });
  const before = await eventually('2 replicas on host a', async () => {
    const items = await replicasOf(h, 'web');
    return items.length === 2 && items.every((r) => r.spec.host === a.name) && items;
  });
  const b = await h.addHost('b');
  const lostAt = Date.now();
  a.stop(); // host a stops renewing its Lease
  const after = await eventually(
    'both replicas recreated on host b',
    async () => {
      const items = await replicasOf(h, 'web');
      return (
        items.length === 2 &&
        items.every((r) => r.spec.host === b.name && !r.metadata.deletionTimestamp) &&
        items
      );
    },
    // Against a hang only: 10x the ~4 s expected (the 4 s host Lease, then a reschedule).
    { timeoutMs: 40_000 },
  );
  t.log(`replicas rebound ${Date.now() - lostAt} ms after the host's last renewal`);
  t.deepEqual(
    after.map((r) => r.metadata.name),
    ['web-0', 'web-1'],
    'the same ordinals',
  );
  t.notDeepEqual(
    after.map((r) => r.metadata.uid),
    before.map((r) => r.metadata.uid),
  );
  const hostA = await eventually('host a NotReady', async () => {
    const host = await h.hosts.get(a.name);
    return host.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'Unknown' && host;
  });
  t.is(hostA.status?.conditions?.find((c) => c.type === 'Ready')?.reason, 'HostLeaseExpired');
});

test('deleting an Instance removes its Replicas without a garbage collector', async (t) => {
  const h = await harness(t);
  // No host at all: the replicas stay unbound, so no runtime holds them and the operator finalizes them.
  await h.instances.create(instance('web', 3), { namespace: h.ns });
  await eventually('3 replicas', async () => (await replicasOf(h, 'web')).length === 3);
  await h.instances.delete('web', { namespace: h.ns });
  await eventually('replicas gone', async () => (await replicasOf(h, 'web')).length === 0);
  await eventually('instance gone', async () => {
    try {
      await h.instances.get('web', { namespace: h.ns });
      return false;
    } catch {
      return true;
    }
  });
  t.pass();
});

test('two operators: exactly one leads, and the other takes over when it stops', async (t) => {
  const h = await harness(t);
  const first = h.operator ?? (await h.startOperator('first'));
  const second = await h.startOperator('second');
  await eventually('a leader', () => first.isLeader() || second.isLeader());
  // Watched while the leader renews its Lease three times (its renewTime seen to change): never
  // two leaders meanwhile, and the other one still follows after.
  const leases = leaseClient(h.api, 'orrery-test');
  const renewTimes = new Set<string>();
  let twoLeaders = false;
  await eventually('three renewals of the leader Lease', async () => {
    if (first.isLeader() && second.isLeader()) twoLeaders = true;
    const lease = await leases.get(h.leaderLease, { namespace: SYSTEM_NAMESPACE });
    if (lease.spec?.renewTime) renewTimes.add(lease.spec.renewTime);
    return renewTimes.size > 3;
  });
  t.false(twoLeaders, 'two leaders at the same time');
  t.not(first.isLeader(), second.isLeader(), 'exactly one leads');
  const leader = first.isLeader() ? first : second;
  const follower = leader === first ? second : first;
  await leader.stop();
  await eventually('the other operator leads', () => follower.isLeader(), { timeoutMs: 10_000 });
  // And it works: a new Instance gets its replicas.
  await h.instances.create(instance('after', 1), { namespace: h.ns });
  await eventually('a replica from the new leader', async () => (await replicasOf(h, 'after')).length === 1);
  t.pass();
});

interface ProxiedRequest {
  method: string;
  /** Path and query, as the client sent them. */
  path: string;
  /** The API server's answer; undefined until it came. */
  status: number | undefined;
}

/**
 * A pass-through to the real API server for one client, recording every request it sends: the
 * client gets a kubeconfig for plain HTTP on loopback, and the proxy forwards each request (watch
 * streams included) over TLS with the credentials of `target`. What the client sent is then known
 * exactly, whichever field manager, user agent or identity it would put on its writes.
 */
async function recordingProxy(
  t: ExecutionContext,
  target: KubeConfig,
): Promise<{ kubeConfig: KubeConfig; requests: ProxiedRequest[] }> {
  const upstream = new URL(target.cluster.server);
  const credentials = await credentialsFor(target);
  const agent = new https.Agent({ keepAlive: true, ...credentials.tls });
  const requests: ProxiedRequest[] = [];
  const server = http.createServer((req, res) => {
    const entry: ProxiedRequest = { method: req.method ?? '', path: req.url ?? '', status: undefined };
    requests.push(entry);
    void credentials.headers().then((auth) => {
      const { host: _h, authorization: _a, connection: _c, ...headers } = req.headers;
      let answered = false;
      const out = https.request(
        new URL(entry.path, upstream),
        { method: entry.method, headers: { ...headers, ...auth }, agent },
        (answer) => {
          entry.status = answer.statusCode;
          const { connection: _c2, 'keep-alive': _k, ...back } = answer.headers;
          res.writeHead(answer.statusCode ?? 502, back);
          answer.pipe(res);
          answer.on('end', () => {
            answered = true;
          });
        },
      );
      out.on('error', () => res.destroy());
      // The client gave up (a watch it stopped): so does the upstream request.
      res.on('close', () => {
        if (!answered) out.destroy();
      });
      req.pipe(out);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
    agent.destroy();
  });
  const { port } = server.address() as AddressInfo;
  const kubeConfig = kubeConfigFromString(
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'proxy', cluster: { server: `http://127.0.0.1:${port}` } }],
      // Dropped by the proxy, which authenticates as `target`; the loader wants some credential.
      users: [{ name: 'proxy', user: { token: 'replaced-by-the-proxy' } }],
      contexts: [{ name: 'proxy', context: { cluster: 'proxy', user: 'proxy' } }],
      'current-context': 'proxy',
    }),
  );
  return { kubeConfig, requests };
}

/** Requests that change something: every verb but get, list and watch. */
const writesOf = (requests: ProxiedRequest[]) => requests.filter((r) => r.method !== 'GET');
/** `METHOD /path`, without the query. */
const verbAndPath = (r: ProxiedRequest) => `${r.method} ${new URL(r.path, 'http://x').pathname}`;

test('a follower makes no API writes while the leader reconciles, and writes once it leads', async (t) => {
  // A Lease of 30 s: the leader keeps it through any stall of a loaded machine shorter than the
  // 20 s renew deadline, so the follower has no reason to write until the leader stops.
  const h = await harness(t, {
    leaderTimings: { leaseDurationSeconds: 30, renewDeadlineMs: 20_000, retryPeriodMs: 200 },
  });
  const leader = h.operator as Operator;
  await eventually('the first operator leads', () => leader.isLeader());
  await h.addHost('a', { memory: '1Gi' });
  const proxy = await recordingProxy(t, h.kubeConfig);
  const follower = await h.startOperator('follower', { kubeConfig: proxy.kubeConfig });
  t.teardown(() => follower.stop());
  // Its start finds orrery-system there (a GET): no write at all.
  t.deepEqual(writesOf(proxy.requests).map(verbAndPath), []);
  const following = proxy.requests.length;

  // The leader's work, of every kind it writes: Replicas created, bound, deleted on a scale down,
  // Instance status, and an Event for a replica that fits nowhere.
  await h.instances.create(instance('web', 2), { namespace: h.ns });
  await eventually('2 bound replicas', async () => {
    const items = await replicasOf(h, 'web');
    return items.length === 2 && items.every((r) => r.spec.host);
  });
  await h.instances.scale('web', 5, { namespace: h.ns });
  await eventually('5 bound replicas', async () => {
    const items = await replicasOf(h, 'web');
    return items.length === 5 && items.every((r) => r.spec.host);
  });
  await h.instances.scale('web', 1, { namespace: h.ns });
  await eventually('4 replicas marked for deletion', async () => {
    const items = (await replicasOf(h, 'web')).filter((r) => r.metadata.deletionTimestamp);
    return items.length === 4;
  });
  await eventually('the Instance status of the last scale', async () => {
    const web = await h.instances.get('web', { namespace: h.ns });
    return web.status?.observedGeneration === web.metadata.generation;
  });
  await h.instances.create(instance('big', 1, { resources: { memory: '4Gi' } }), { namespace: h.ns });
  const events = resourceClient(h.api, EVENTS, 'orrery-test');
  await eventually('a FailedScheduling event', async () => {
    const list = await events.list({ namespace: h.ns });
    return (list.items as { reason?: string }[]).some((e) => e.reason === 'FailedScheduling');
  });

  // The follower is still there, reading the Lease at its retry period, after all of that.
  const isLeaseRead = (r: ProxiedRequest) =>
    verbAndPath(r) ===
    `GET /apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NAMESPACE}/leases/${h.leaderLease}`;
  const done = proxy.requests.length;
  await eventually('a read of the leader Lease by the follower', () =>
    proxy.requests.slice(done).some(isLeaseRead),
  );
  const followed = proxy.requests.slice(following);
  t.true(leader.isLeader(), 'the leader led throughout');
  t.false(follower.isLeader());
  t.deepEqual(writesOf(followed), [], 'no write from the follower');
  t.log(
    `the follower read the leader Lease ${followed.filter(isLeaseRead).length} times meanwhile, and wrote nothing`,
  );

  // The same measure sees the follower's writes once it leads.
  const takeover = proxy.requests.length;
  await leader.stop();
  await eventually('the follower leads', () => follower.isLeader(), { timeoutMs: 10_000 });
  await h.instances.create(instance('after', 1), { namespace: h.ns });
  await eventually('a bound replica from the new leader', async () =>
    Boolean((await replicasOf(h, 'after'))[0]?.spec.host),
  );
  const written = writesOf(proxy.requests.slice(takeover)).map(verbAndPath);
  const said = written.join('\n');
  t.true(
    written.includes(
      `PUT /apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NAMESPACE}/leases/${h.leaderLease}`,
    ),
    said,
  );
  t.true(written.includes(`POST /apis/orrery.dev/v1alpha1/namespaces/${h.ns}/replicas`), said);
});
