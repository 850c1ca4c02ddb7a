// The operator against the real API server. Hosts here are what the operator sees of them — a
// Host object and a heartbeat Lease that this test renews (or stops renewing, to lose a host);
// no runtime runs processes in this file (test/integration/e2e-*.test.ts do that).
import { randomBytes } from 'node:crypto';
import test, { type ExecutionContext } from 'ava';
import { pino } from 'pino';
import { INSTANCE_LABEL, RUNTIME_FINALIZER, SYSTEM_NAMESPACE } from '../../crds/labels.ts';
import { HOSTS, INSTANCES, REPLICAS } from '../../crds/resources.ts';
import type { Host, Instance, Replica } from '../../crds/types.ts';
import {
  EVENTS,
  isAlreadyExists,
  KubeApi,
  leaseClient,
  loadKubeConfig,
  NAMESPACES,
  renewLease,
  resourceClient,
  typed,
} from '../../kube/index.ts';
import { type Operator, startOperator } from '../../operator/operator.ts';
import { freshNamespace } from '../helpers/cluster.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { eventually } from '../helpers/wait.ts';

const log = pino({ level: process.env.ORRERY_TEST_LOG ?? 'silent' });

interface Harness {
  api: KubeApi;
  ns: string;
  testLabel: string;
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
  startOperator(identity?: string): Promise<Operator>;
}

async function harness(
  t: ExecutionContext,
  opts: { hostGraceMs?: number; deferOperator?: boolean } = {},
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
  const testLabel = `orrery.dev/test=${id}`;
  const leases = leaseClient(api, 'orrery-test');
  const hosts = resourceClient(api, typed<Host>(HOSTS), 'orrery-test');
  const stops: (() => void)[] = [];
  const operators: Operator[] = [];

  const start = async (identity?: string) => {
    const operator = await startOperator({
      kubeConfig,
      log,
      namespace: ns,
      hostSelector: testLabel,
      leaderLeaseName: `orrery-operator-${id}`,
      leaseDurationSeconds: 2,
      renewDeadlineMs: 1500,
      retryPeriodMs: 200,
      hostGraceMs: opts.hostGraceMs ?? 1000,
      ...(identity ? { identity } : {}),
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
    ns,
    testLabel,
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
    { timeoutMs: 15_000 },
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
  await new Promise((resolve) => setTimeout(resolve, 500));
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
