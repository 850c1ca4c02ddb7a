import test from 'ava';
import type { Host, Replica } from '../../crds/types.ts';
import { SchedulerCache } from '../../operator/scheduler/controller.ts';
import { addUsage, type HostUsage, pickHost, usageIn } from '../../operator/scheduler/fit.ts';

function host(
  name: string,
  opts: {
    ready?: boolean;
    unschedulable?: boolean;
    labels?: Record<string, string>;
    memory?: string;
    replicas?: number;
  } = {},
): Host {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Host',
    metadata: { name, labels: opts.labels ?? {} },
    spec: { unschedulable: opts.unschedulable ?? false },
    status: {
      allocatable: { cpu: '2', memory: opts.memory ?? '1Gi', pids: 1000, replicas: opts.replicas ?? 100 },
      conditions: [{ type: 'Ready', status: opts.ready === false ? 'False' : 'True' }],
    },
  };
}

function replica(
  instance: string,
  ordinal: number,
  resources: { cpu?: string; memory?: string; pids?: number } = {},
  hostSelector?: Record<string, string>,
): Replica {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Replica',
    metadata: { name: `${instance}-${ordinal}`, namespace: 'ns' },
    spec: {
      instance,
      ordinal,
      template: {
        processes: [],
        resources,
        ...(hostSelector ? { hostSelector: { matchLabels: hostSelector } } : {}),
      } as unknown as Replica['spec']['template'],
    },
  };
}

function usageTable() {
  const table = new Map<string, HostUsage>();
  const of = (name: string) => usageIn(table, name);
  return { of, bind: (r: Replica, h: string) => addUsage(of(h), r) };
}

test('replicas of one instance spread over the hosts', (t) => {
  const hosts = [host('a'), host('b'), host('c')];
  const usage = usageTable();
  const placed: string[] = [];
  for (let i = 0; i < 6; i++) {
    const r = replica('web', i);
    const result = pickHost(r, hosts, usage.of);
    if (result.host === undefined) return t.fail(result.message);
    usage.bind(r, result.host);
    placed.push(result.host);
  }
  t.deepEqual(placed.sort(), ['a', 'a', 'b', 'b', 'c', 'c']);
});

test('hosts that are not ready, cordoned or do not match the selector are skipped', (t) => {
  const hosts = [
    host('down', { ready: false }),
    host('cordoned', { unschedulable: true }),
    host('gpu', { labels: { gpu: 'yes' } }),
    host('plain'),
  ];
  const usage = usageTable();
  t.deepEqual(pickHost(replica('web', 0), hosts.slice(0, 2).concat(hosts[3] as Host), usage.of), {
    host: 'plain',
  });
  t.deepEqual(pickHost(replica('ml', 0, {}, { gpu: 'yes' }), hosts, usage.of), { host: 'gpu' });
});

test('when nothing fits the message counts the reasons', (t) => {
  const hosts = [host('a', { memory: '64Mi' }), host('b', { memory: '64Mi' }), host('c', { ready: false })];
  const result = pickHost(replica('big', 0, { memory: '1Gi' }), hosts, usageTable().of);
  t.is(result.host, undefined);
  t.is(
    (result as { message: string }).message,
    '0/3 hosts are available: 2 Insufficient memory, 1 host(s) were not ready',
  );
});

test('allocatable is consumed by bound replicas', (t) => {
  const hosts = [host('a', { memory: '256Mi' })];
  const usage = usageTable();
  for (let i = 0; i < 2; i++) {
    const r = replica('web', i, { memory: '128Mi' });
    const result = pickHost(r, hosts, usage.of);
    t.is(result.host, 'a');
    usage.bind(r, 'a');
  }
  t.regex(
    (pickHost(replica('web', 2, { memory: '128Mi' }), hosts, usage.of) as { message: string }).message,
    /Insufficient memory/,
  );
});

test('the host with more free room wins between equally spread hosts', (t) => {
  const hosts = [host('a'), host('b')];
  const usage = usageTable();
  usage.bind(replica('other', 0, { memory: '512Mi' }), 'a');
  t.deepEqual(pickHost(replica('web', 0, { memory: '64Mi' }), hosts, usage.of), { host: 'b' });
});

test('the scheduler cache counts an assumption at once, once, and forgets it when the write failed', (t) => {
  const cache = new SchedulerCache();
  const hosts = [host('a', { replicas: 2 }), host('b', { replicas: 2 })];
  const r0 = replica('web', 0);
  // Assumed before its write is answered: the next decision already spreads away from it.
  cache.assume('ns/web-0', r0, 'a');
  t.is(cache.replicasOn('a'), 1);
  t.deepEqual(pickHost(replica('web', 1), hosts, cache.usageOf), { host: 'b' });
  // The informer's copy of the same binding is not counted twice.
  cache.observe('ns/web-0', { ...r0, spec: { ...r0.spec, host: 'a' } });
  t.is(cache.replicasOn('a'), 1);
  // A failed write takes the assumption back; forgetting under another host is a no-op.
  cache.assume('ns/web-1', replica('web', 1), 'b');
  cache.forget('ns/web-1', 'a', undefined);
  t.is(cache.replicasOn('b'), 1);
  cache.forget('ns/web-1', 'b', undefined);
  t.is(cache.replicasOn('b'), 0);
  // A create that met an existing Replica (AlreadyExists): the existing one stays counted.
  const existing = { ...replica('web', 2), spec: { ...replica('web', 2).spec, host: 'b' } };
  cache.observe('ns/web-2', existing);
  cache.assume('ns/web-2', replica('web', 2), 'b');
  cache.forget('ns/web-2', 'b', existing);
  t.is(cache.replicasOn('b'), 1);
  // An unbound copy seen before the binding comes back does not drop the assumption.
  cache.observe('ns/web-0', r0);
  t.is(cache.replicasOn('a'), 1);
  cache.observe('ns/web-0', undefined);
  t.is(cache.replicasOn('a'), 0);
});

test('a replica without resources asks for none (BestEffort), whatever limits its host will give it', (t) => {
  // Its runtime caps it at --default-memory / --default-pids (Host.status.defaultResources); the
  // scheduler does not count those limits as requests, or a host would hold a few dozen replicas.
  const a = host('a', { memory: '1Gi' });
  a.status = { ...a.status, defaultResources: { memory: '512Mi', pids: 100 } };
  const cache = new SchedulerCache();
  for (let i = 0; i < 50; i++) {
    const r = replica('web', i);
    t.deepEqual(pickHost(r, [a], cache.usageOf), { host: 'a' }, `web-${i} fits`);
    cache.assume(`ns/web-${i}`, r, 'a');
  }
  t.is(cache.usageOf('a').memoryBytes, 0);
  t.is(cache.usageOf('a').pids, 0);
  // One that sets its own memory and pids is counted by them, and refused when they do not fit.
  const usage = usageTable();
  addUsage(usage.of('a'), replica('small', 0, { memory: '16Mi', pids: 10 }));
  t.is(usage.of('a').memoryBytes, 16 * 2 ** 20);
  t.is(usage.of('a').pids, 10);
  const big = pickHost(replica('big', 0, { memory: '2Gi' }), [a], cache.usageOf);
  t.is(big.host, undefined);
  t.regex((big as { message: string }).message, /Insufficient memory/);
});

/** db-<ordinal> with a persistent volume, and a host holding the data of the given ordinals of ns/db. */
function dbReplica(ordinal: number): Replica {
  const r = replica('db', ordinal);
  r.spec.template.volumes = [{ name: 'data', persistent: {} }];
  return r;
}
function holding(h: Host, ...ordinals: number[]): Host {
  h.status = {
    ...h.status,
    persistentData: ordinals.map((ordinal) => ({
      namespace: 'ns',
      instance: 'db',
      ordinal,
      volumes: ['data'],
    })),
  };
  return h;
}

test('an ordinal with persistent data goes to the host that holds it, whatever the other scores say', (t) => {
  const usage = usageTable();
  for (let i = 0; i < 5; i++) usage.bind(replica('other', i), 'b'); // b: the worse fit otherwise
  const hosts = [host('a'), holding(host('b'), 0), holding(host('c'), 1)];
  t.deepEqual(pickHost(dbReplica(0), hosts, usage.of), { host: 'b' });
  t.deepEqual(pickHost(dbReplica(1), hosts, usage.of), { host: 'c' });
  // An ordinal without data anywhere, or a template without persistent volumes: the usual choice.
  t.deepEqual(pickHost(dbReplica(2), hosts, usage.of), { host: 'a' });
  t.deepEqual(pickHost(replica('db', 0), hosts, usage.of), { host: 'a' });
  // Another namespace's db-0 is another ordinal.
  const elsewhere = dbReplica(0);
  elsewhere.metadata.namespace = 'other';
  t.deepEqual(pickHost(elsewhere, hosts, usage.of), { host: 'a' });
});

test('when the host of its data cannot take it, the replica waits, told that the data dies with the host', (t) => {
  const usage = usageTable();
  for (const [h, why] of [
    [holding(host('b', { unschedulable: true }), 0), 'host(s) were unschedulable'],
    [holding(host('b', { ready: false }), 0), 'host(s) were not ready'],
    [holding(host('b', { replicas: 0 }), 0), 'Too many replicas'],
  ] as const) {
    const result = pickHost(dbReplica(0), [host('a'), h], usage.of);
    t.is(result.host, undefined);
    if (result.host !== undefined) continue;
    t.is(result.reason, 'PersistentDataHostUnavailable');
    t.regex(result.message, /^0\/2 hosts are available: /);
    t.true(result.message.includes("1 host(s) didn't hold the replica's persistent data"), result.message);
    t.true(result.message.includes(`The persistent data of db-0 is on host b (b: ${why})`), result.message);
    t.regex(result.message, /if the host is lost, the data is lost with it; deleting Host b lets db-0 start/);
  }
  // The Host deleted (its record gone): db-0 starts elsewhere, empty.
  t.deepEqual(pickHost(dbReplica(0), [host('a')], usage.of), { host: 'a' });
  const none = pickHost(replica('x', 0), [host('a', { ready: false })], usage.of);
  t.is(none.host === undefined ? none.reason : undefined, 'Unschedulable');
});
