// The TUI's views (tui/model/views.ts, rows.ts, describe.ts): how each kind's objects become
// rows, what `enter` opens, and what `d` shows, from objects as the API server returns them.
import test from 'ava';
import type { Host, Instance, Replica, Service } from '../../crds/types.ts';
import type { CoreEvent, KubeObject } from '../../kube/index.ts';
import { describeLines } from '../../tui/model/describe.ts';
import { MeshModel } from '../../tui/model/mesh.ts';
import {
  eventRow,
  hostRow,
  instanceRow,
  lastExitText,
  processRow,
  replicaRow,
  serviceRow,
} from '../../tui/model/rows.ts';
import {
  type ClusterReader,
  type KindId,
  type KindObjects,
  keyOf,
  VIEWS,
  viewByAlias,
} from '../../tui/model/views.ts';

const NOW = Date.parse('2026-01-01T12:00:00Z');
const ago = (seconds: number) => new Date(NOW - seconds * 1000).toISOString();

function instance(name: string, ns: string, replicas: number, status: Instance['status'] = {}): Instance {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name, namespace: ns, uid: `uid-${name}`, creationTimestamp: ago(300) },
    spec: {
      replicas,
      template: { processes: [{ name: 'server', command: ['srv'] }] },
      updateStrategy: { maxUnavailable: 1, maxSurge: 0 },
    } as unknown as Instance['spec'],
    status,
  };
}

function replica(name: string, ns: string, inst: string, status: Replica['status'], host = 'a'): Replica {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Replica',
    metadata: {
      name,
      namespace: ns,
      creationTimestamp: ago(65),
      labels: { 'orrery.dev/instance': inst, app: inst },
    },
    spec: {
      instance: inst,
      ordinal: 0,
      host,
      template: { processes: [{ name: 'server' }] },
    } as unknown as Replica['spec'],
    status,
  };
}

function reader(
  objects: Partial<{ [K in KindId]: KindObjects[K][] }>,
  events: CoreEvent[] = [],
): ClusterReader {
  return {
    list: (kind) => (objects[kind] ?? []) as never,
    get: (kind, key) => (objects[kind] ?? []).find((o: KubeObject) => keyOf(o) === key) as never,
    eventsFor: (obj) => events.filter((e) => e.involvedObject.uid === obj.metadata?.uid),
  };
}

test('an Instance row: ready of desired, counts, the Available reason, its age; tone by health', (t) => {
  const healthy = instanceRow(
    instance('web', 'default', 3, {
      readyReplicas: 3,
      updatedReplicas: 3,
      availableReplicas: 3,
      conditions: [{ type: 'Available', status: 'True', reason: 'MinimumReplicasAvailable' }],
    }),
    NOW,
  );
  t.deepEqual(healthy.cells, ['web', '3/3', '3', '3', 'MinimumReplicasAvailable', '5m']);
  t.is(healthy.tone, undefined);
  const starting = instanceRow(instance('web', 'default', 3, { readyReplicas: 1 }), NOW);
  t.is(starting.cells[1], '1/3');
  t.is(starting.tone, 'warn');
  const degraded = instanceRow(
    instance('web', 'default', 3, {
      conditions: [{ type: 'Degraded', status: 'True', reason: 'Unschedulable' }],
    }),
    NOW,
  );
  t.is(degraded.cells[4], 'Unschedulable');
  t.is(degraded.tone, 'error');
  const deleting = instance('web', 'default', 3);
  deleting.metadata.deletionTimestamp = ago(1);
  t.is(instanceRow(deleting, NOW).cells[4], 'Terminating');
});

test('a Replica row: ready processes, phase, restarts, host, reason; a crash loop is red', (t) => {
  const running = replicaRow(
    replica('web-0', 'default', 'web', {
      phase: 'Running',
      ready: true,
      restarts: 2,
      address: '127.0.0.1',
      processes: [{ name: 'server', ready: true, state: 'Running' }],
    }),
    NOW,
  );
  t.deepEqual(running.cells, ['web-0', '1/1', 'Running', '2', 'a', '127.0.0.1', '', '65s']);
  t.is(running.tone, undefined);
  const crashing = replicaRow(
    replica('web-1', 'default', 'web', { phase: 'CrashLoopBackOff', reason: 'Error', message: 'exit 1' }),
    NOW,
  );
  t.is(crashing.cells[1], '0/1', 'no process status yet: counted from the template');
  t.is(crashing.cells[6], 'Error: exit 1');
  t.is(crashing.tone, 'error');
  t.is(replicaRow(replica('web-2', 'default', 'web', undefined), NOW).cells[2], 'Pending');
});

test('a process row says how it last ended', (t) => {
  const row = processRow(
    {
      name: 'server',
      pid: 4242,
      state: 'Running',
      ready: false,
      restarts: 1,
      startedAt: ago(3),
      lastExit: { signal: 'SIGKILL', reason: 'Killed', at: ago(3) },
    },
    NOW,
  );
  t.deepEqual(row.cells, ['server', 'Running', 'false', '4242', '1', 'Killed (SIGKILL) 3s ago', '3s']);
  t.is(row.tone, 'warn');
  t.is(lastExitText({ code: 1, reason: 'Error' }, NOW), 'Error (code 1)');
  t.is(
    processRow({ name: 'job', state: 'Exited', lastExit: { code: 0, reason: 'Completed' } }, NOW).tone,
    'muted',
  );
});

test('Service, Host and Event rows', (t) => {
  const svc = {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'default', creationTimestamp: ago(10) },
    spec: {
      selector: { app: 'web' },
      ports: [{ name: 'http', port: 80, protocol: 'http' }],
      loadBalancer: { policy: 'p2c-ewma' },
    },
    status: {
      virtualIP: '127.77.0.9',
      readyEndpoints: 1,
      totalEndpoints: 3,
      ejectedEndpoints: 1,
      conditions: [{ type: 'Proxied', status: 'False', reason: 'ProtocolNotProxied' }],
    },
  } as unknown as Service;
  t.deepEqual(serviceRow(svc, NOW).cells, [
    'web',
    '127.77.0.9',
    '80/http',
    '1/3',
    '1',
    '',
    '',
    'p2c-ewma',
    'ProtocolNotProxied',
    '10s',
  ]);
  t.is(serviceRow(svc, NOW).tone, 'warn');
  // With the mesh's numbers: requests per second and p99.
  t.deepEqual(serviceRow(svc, NOW, { rps: 12.34, p99Ms: 4.56 }).cells.slice(5, 7), ['12.3', '4.6ms']);
  t.deepEqual(serviceRow(svc, NOW, { rps: 0, p99Ms: undefined }).cells.slice(5, 7), ['0.0', '']);

  const host = {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Host',
    metadata: { name: 'a', creationTimestamp: ago(7200) },
    spec: { unschedulable: true },
    status: {
      address: '10.0.0.1',
      replicas: 4,
      allocatable: { cpu: '2', memory: '4Gi' },
      cgroup: { mode: 'v2' },
      kernel: { release: '6.8.0' },
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  } as Host;
  t.deepEqual(hostRow(host, NOW).cells, [
    'a',
    'Ready,SchedulingDisabled',
    '10.0.0.1',
    '4',
    '2',
    '4Gi',
    'v2',
    '6.8.0',
    '120m',
  ]);
  const lost = {
    ...host,
    spec: { unschedulable: false },
    status: { conditions: [{ type: 'Ready', status: 'Unknown' }] },
  } as Host;
  t.is(hostRow(lost, NOW).cells[1], 'Unknown');
  t.is(hostRow(lost, NOW).tone, 'error');

  const ev: CoreEvent = {
    metadata: { name: 'web.1', namespace: 'default' },
    involvedObject: { kind: 'Instance', name: 'web', uid: 'uid-web' },
    type: 'Warning',
    reason: 'FailedScheduling',
    message: '0/1 hosts are available:\ninsufficient memory',
    count: 3,
    lastTimestamp: ago(20),
  };
  t.deepEqual(eventRow(ev, NOW).cells, [
    '20s',
    'Warning',
    'FailedScheduling',
    'instance/web',
    '3',
    ev.message,
  ]);
  t.is(eventRow(ev, NOW).tone, 'warn');
});

test('all namespaces: a NAMESPACE column first, and rows sort by it by default', (t) => {
  const cluster = reader({ instances: [instance('web', 'b', 1), instance('api', 'a', 1)] });
  const view = VIEWS.inst;
  t.is(view.columns(true)[0]?.header, 'NAMESPACE');
  t.is(view.columns(false)[0]?.header, 'NAME');
  t.deepEqual(view.defaultSort(true), { column: 'NAMESPACE', descending: false });
  const rows = view.rows(cluster, undefined, { now: NOW, allNamespaces: true });
  t.deepEqual(
    rows.map((r) => r.cells.slice(0, 2)),
    [
      ['b', 'web'],
      ['a', 'api'],
    ],
  );
  t.is(rows[0]?.key, 'b/web');
  t.is(VIEWS.host.columns(true)[0]?.header, 'NAME', 'Hosts are cluster-scoped: no namespace column');
});

test('enter: an Instance opens its Replicas, a Service those it selects, a Host those bound to it, a Replica its processes', (t) => {
  const reps = [
    replica('web-0', 'default', 'web', { processes: [{ name: 'server' }, { name: 'sidecar' }] }, 'a'),
    replica('web-1', 'default', 'web', {}, 'b'),
    replica('web-0', 'other', 'web', {}, 'a'),
    replica('db-0', 'default', 'db', {}, 'a'),
  ];
  const svc = {
    metadata: { name: 'front', namespace: 'default' },
    spec: { selector: { app: 'web' } },
  } as unknown as Service;
  const host = { metadata: { name: 'a' } } as Host;
  const cluster = reader({
    instances: [instance('web', 'default', 2)],
    replicas: reps,
    services: [svc],
    hosts: [host],
  });
  const ctx = { now: NOW, allNamespaces: false };
  const open = (view: 'inst' | 'svc' | 'host' | 'rep', key: string) => {
    const drill = VIEWS[view].drill?.to(cluster, key);
    if (!drill) throw new Error(`no drill from ${view} ${key}`);
    return VIEWS[drill.view].rows(cluster, drill.scope, ctx).map((r) => r.key);
  };
  t.deepEqual(open('inst', 'default/web'), ['default/web-0', 'default/web-1']);
  t.deepEqual(open('svc', 'default/front'), ['default/web-0', 'default/web-1']);
  t.deepEqual(open('host', 'a'), ['default/web-0', 'other/web-0', 'default/db-0']);
  t.deepEqual(open('rep', 'default/web-0'), ['server', 'sidecar'], 'processes in the order they start');
  t.is(VIEWS.inst.drill?.to(cluster, 'default/gone'), undefined);
  const noSelector = {
    metadata: { name: 'none', namespace: 'default' },
    spec: { selector: {} },
  } as unknown as Service;
  const drill = VIEWS.svc.drill?.to(reader({ services: [noSelector] }), 'default/none');
  t.deepEqual(drill && VIEWS.rep.rows(cluster, drill.scope, ctx), [], 'an empty selector selects nothing');
});

test('views by the names : takes', (t) => {
  t.is(viewByAlias('inst')?.id, 'inst');
  t.is(viewByAlias('Instances')?.id, 'inst');
  t.is(viewByAlias('osvc')?.id, 'svc');
  t.is(viewByAlias('ev')?.id, 'ev');
  t.is(viewByAlias('proc'), undefined, 'processes are reached by enter only');
  t.is(viewByAlias('pods'), undefined);
  for (const view of Object.values(VIEWS)) {
    const letters = view.columns(true).map((c) => c.sortKey);
    t.is(new Set(letters).size, letters.length, `${view.id}: one column per sort letter`);
    t.false(letters.includes('G'), `${view.id}: G is "last row", not a sort letter`);
  }
});

test('describe: the object as YAML, then its Events oldest first, as kubectl describe lists them', (t) => {
  const inst = instance('web', 'default', 1);
  const events: CoreEvent[] = [
    {
      metadata: { name: 'e2' },
      involvedObject: { uid: 'uid-web' },
      type: 'Normal',
      reason: 'Scaled',
      message: 'scaled to 1',
      lastTimestamp: ago(5),
      source: { component: 'orrery-operator' },
    },
    {
      metadata: { name: 'e1' },
      involvedObject: { uid: 'uid-web' },
      type: 'Warning',
      reason: 'FailedScheduling',
      message: 'no host',
      count: 4,
      lastTimestamp: ago(60),
      source: { component: 'orrery-operator' },
    },
  ];
  const lines = describeLines(inst, events, NOW);
  t.is(lines[0], 'apiVersion: orrery.dev/v1alpha1');
  t.true(lines.includes('  name: web'));
  const at = lines.indexOf('Events:');
  t.true(at > 0);
  t.regex(lines[at + 1] ?? '', /^ {2}Type +Reason +Age +From +Message$/);
  t.regex(lines[at + 3] ?? '', /^ {2}Warning +FailedScheduling +60s \(x4\) +orrery-operator +no host$/);
  t.regex(lines[at + 4] ?? '', /^ {2}Normal +Scaled +5s +orrery-operator +scaled to 1$/);
  t.deepEqual(describeLines(inst, [], NOW).slice(-2), ['Events:', '  <none>']);
});

test('the Endpoints view: one row per endpoint of the EndpointSlices, each once, by Service', (t) => {
  const slice = (name: string, service: string, endpoints: unknown[]) =>
    ({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'EndpointSlice',
      metadata: { name, namespace: 'default' },
      service,
      endpoints,
    }) as unknown as KindObjects['endpointslices'];
  const ep = (replica: string, ready: boolean, terminating = false) => ({
    replica,
    host: 'a',
    address: '127.0.0.1',
    ports: [{ name: 'http', port: 20001 }],
    ready,
    serving: ready,
    terminating,
  });
  const cluster = reader({
    endpointslices: [
      slice('web-1', 'web', [ep('web-1', false), ep('web-0', true)]),
      // web-1 being moved between slices: in two at once.
      slice('web-2', 'web', [ep('web-1', false), ep('web-2', true, true)]),
      slice('api-1', 'api', [ep('api-0', true)]),
    ],
  });
  t.is(viewByAlias('ep')?.id, 'ep');
  const view = VIEWS.ep;
  const rows = view.rows(cluster, undefined, { now: NOW, allNamespaces: false });
  t.deepEqual(
    rows.map((r) => r.cells),
    [
      ['web', 'web-1', 'not ready', '127.0.0.1', 'http:20001', 'a'],
      ['web', 'web-0', 'ready', '127.0.0.1', 'http:20001', 'a'],
      ['web', 'web-2', 'terminating', '127.0.0.1', 'http:20001', 'a'],
      ['api', 'api-0', 'ready', '127.0.0.1', 'http:20001', 'a'],
    ],
  );
  t.deepEqual(
    rows.map((r) => r.tone),
    ['warn', undefined, 'muted', undefined],
  );
  t.is(view.columns(true)[0]?.header, 'NAMESPACE');
  t.is(view.rows(cluster, undefined, { now: NOW, allNamespaces: true })[0]?.cells[0], 'default');

  // A ready endpoint a mesh proxy has ejected (its Lease says so): `ejected`, in the warning tone.
  const withMesh: ClusterReader = {
    ...cluster,
    mesh: {
      service: () => undefined,
      ejected: (ns, service, replica) => `${ns}/${service}/${replica}` === 'default/web/web-0',
    },
  };
  const ejectedRow = view.rows(withMesh, undefined, { now: NOW, allNamespaces: false })[1];
  t.deepEqual(ejectedRow?.cells.slice(1, 3), ['web-0', 'ejected']);
  t.is(ejectedRow?.tone, 'warn');
});

test("the mesh model reads which endpoints the proxies' Leases say are ejected", async (t) => {
  const mesh = new MeshModel({
    proxies: async () => [
      { metricsUrl: undefined, ejected: 'shop/web/http=web-0,web-2;+3' },
      { metricsUrl: undefined, ejected: '' },
      { metricsUrl: undefined, ejected: undefined },
    ],
  });
  await mesh.poll();
  t.true(mesh.ejected('shop', 'web', 'web-0'));
  t.true(mesh.ejected('shop', 'web', 'web-2'));
  t.false(mesh.ejected('shop', 'web', 'web-1'));
  t.false(mesh.ejected('other', 'web', 'web-0'));
});

test('the mesh model tells no one after a read of no proxy, as before it; a proxy there does', async (t) => {
  let proxies: { metricsUrl: string | undefined; ejected: string | undefined }[] = [];
  const mesh = new MeshModel({ proxies: async () => proxies, read: async () => '' });
  let notified = 0;
  mesh.subscribe(() => notified++);
  await mesh.poll();
  t.is(notified, 0);
  proxies = [{ metricsUrl: undefined, ejected: 'shop/web/http=web-0' }];
  await mesh.poll();
  t.is(notified, 1);
  proxies = [];
  await mesh.poll();
  t.is(notified, 2, 'the ejected endpoint gone is a change');
  await mesh.poll();
  t.is(notified, 2);
});
