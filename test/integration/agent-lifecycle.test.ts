// The host agent against the real API server, real processes and real cgroups: registration,
// heartbeat, running a bound Replica, and deleting it.
import { readFileSync, readlinkSync } from 'node:fs';
import test from 'ava';
import { RUNTIME_FINALIZER, SYSTEM_NAMESPACE } from '../../crds/labels.ts';
import type { Replica } from '../../crds/types.ts';
import { replicaId } from '../../node-runtime/agent/index.ts';
import {
  agentDirs,
  authed,
  cgroupExists,
  getOrUndefined,
  inProcessAgent,
  kubeForTests,
  pidAlive,
  replicaObject,
  testNamespace,
  waitFor,
} from '../helpers/agent-harness.ts';

test.before(async () => {
  await kubeForTests();
});

test('the agent registers its Host with capacity and Ready, and keeps renewing its Lease', async (t) => {
  const k = await kubeForTests();
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs, {
    labels: { zone: 'test-a' },
    registerUnschedulable: false,
    leaseDurationSeconds: 1,
  });

  const host = await k.hosts.get(dirs.hostName);
  t.is(host.metadata.labels?.zone, 'test-a');
  t.false(host.spec?.unschedulable);
  const s = host.status;
  t.truthy(s);
  t.is(s?.address, '127.0.0.1');
  t.is(s?.apiEndpoint, agent.apiEndpoint);
  t.regex(s?.apiEndpoint ?? '', /^http:\/\/127\.0\.0\.1:\d+$/);
  t.regex(s?.capacity?.cpu ?? '', /^\d+$/);
  t.regex(s?.capacity?.memory ?? '', /^\d+(Ki|Mi|Gi)?$/);
  t.true((s?.capacity?.pids ?? 0) > 0);
  t.is(s?.capacity?.replicas, 1000);
  t.truthy(s?.allocatable?.cpu);
  t.is(s?.cgroup?.parent, dirs.cgroupParent);
  t.true(['v1', 'v2', 'hybrid'].includes(s?.cgroup?.mode ?? ''));
  t.is(s?.kernel?.release, readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim());
  t.true(s?.kernel?.pidfd);
  const ready = s?.conditions?.find((c) => c.type === 'Ready');
  t.is(ready?.status, 'True');
  t.is(ready?.reason, 'RuntimeReady');
  const managers = (host.metadata.managedFields ?? []) as { manager?: string; subresource?: string }[];
  t.true(managers.some((m) => m.manager === `orrery-runtime/${dirs.hostName}` && m.subresource === 'status'));

  // A user's cordon survives the agent's next registration.
  await k.hosts.mergePatch(dirs.hostName, { spec: { unschedulable: true } });

  const first = await k.leases.get(`host-${dirs.hostName}`, { namespace: SYSTEM_NAMESPACE });
  t.is(first.spec?.holderIdentity, dirs.hostName);
  t.is(first.spec?.leaseDurationSeconds, 1);
  const renewed = await waitFor('a later renewTime', async () => {
    const l = await k.leases.get(`host-${dirs.hostName}`, { namespace: SYSTEM_NAMESPACE });
    return l.spec?.renewTime !== first.spec?.renewTime ? l : undefined;
  });
  t.true(Date.parse(renewed.spec?.renewTime ?? '') > Date.parse(first.spec?.renewTime ?? ''));
  const after = await k.hosts.get(dirs.hostName);
  t.true(after.spec?.unschedulable);

  // The operator marks a Host Unknown when it judged the Lease expired; a healthy runtime puts Ready back.
  await k.hosts.patchStatus(dirs.hostName, {
    conditions: [
      {
        type: 'Ready',
        status: 'Unknown',
        reason: 'HostLeaseExpired',
        message: 'test',
        lastTransitionTime: '2026-01-01T00:00:00Z',
      },
    ],
  });
  const back = await waitFor('Ready True again', async () => {
    const h = await k.hosts.get(dirs.hostName);
    return h.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True' ? h : undefined;
  });
  t.not(back.status?.conditions?.[0]?.lastTransitionTime, '2026-01-01T00:00:00Z');
  // A deleted Host is registered again.
  await k.hosts.delete(dirs.hostName);
  const recreated = await waitFor('the Host registered again', async () => {
    const h = await k.hosts.get(dirs.hostName).catch(() => undefined);
    return h && h.metadata.uid !== after.metadata.uid && h.status?.apiEndpoint === agent.apiEndpoint
      ? h
      : undefined;
  });
  t.is(recreated.metadata.labels?.zone, 'test-a');
});

test('a bound Replica runs with a real pid and allocated ports; deleting it stops it, removes the cgroup and the finalizer', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs, { portRange: { min: 24100, max: 24199 } });

  const created = Date.now();
  await k.replicas.create(
    replicaObject(ns, 'web-0', dirs.hostName, [
      {
        name: 'server',
        command: [
          'sh',
          '-c',
          'echo "port=$ORRERY_PORT_HTTP admin=$ORRERY_PORT_ADMIN_API ns=$ORRERY_NAMESPACE host=$ORRERY_HOST inst=$ORRERY_INSTANCE addr=$ORRERY_ADDRESS"; exec sleep 600',
        ],
        ports: [{ name: 'http', protocol: 'http' }, { name: 'admin-api' }, { name: 'fixed', port: 24555 }],
      },
      { name: 'helper', command: ['sleep', '600'] },
    ]),
  );
  const running = await waitFor('Replica Running', async () => {
    const r = await k.replicas.get('web-0', { namespace: ns });
    return r.status?.phase === 'Running' ? r : undefined;
  });
  t.log(`Replica created -> status Running seen by a polling client: ${Date.now() - created} ms`);
  const st = running.status;
  t.is(st?.address, '127.0.0.1');
  t.is(st?.observedGeneration, running.metadata.generation);
  t.is(st?.restarts, 0);
  t.is(st?.processes?.length, 2);
  const pids = (st?.processes ?? []).map((p) => p.pid as number);
  for (const pid of pids) t.true(pidAlive(pid), `pid ${pid} is alive`);
  const ports = new Map((st?.ports ?? []).map((p) => [p.name, p]));
  const http = ports.get('http');
  const admin = ports.get('admin-api');
  t.is(http?.process, 'server');
  t.is(http?.protocol, 'http');
  t.is(admin?.protocol, 'tcp');
  t.is(ports.get('fixed')?.port, 24555);
  t.true((http?.port ?? 0) >= 24100 && (http?.port ?? 0) <= 24199);
  t.true((admin?.port ?? 0) >= 24100 && (admin?.port ?? 0) <= 24199);
  t.not(http?.port, admin?.port);

  // ORRERY_PORT_* and the placement facts are what the process sees.
  const id = replicaId(ns, 'web-0');
  const logs = await waitFor('the first log line', async () => {
    const res = await fetch(
      `${agent.apiEndpoint}/v1/replicas/${ns}/web-0/logs?process=server`,
      authed(agent.token),
    );
    const text = await res.text();
    return text.includes('port=') ? text : undefined;
  });
  t.is(
    logs.trim(),
    `port=${http?.port} admin=${admin?.port} ns=${ns} host=${dirs.hostName} inst=demo addr=127.0.0.1`,
  );
  t.true(cgroupExists(dirs.cgroupParent, id));

  const h = await waitFor('Host.status.replicas = 1', async () => {
    const host = await k.hosts.get(dirs.hostName);
    return host.status?.replicas === 1 ? host : undefined;
  });
  t.is(h.status?.replicas, 1);

  const deleted = Date.now();
  await k.replicas.delete('web-0', { namespace: ns });
  await waitFor('the Replica object gone', async () =>
    (await getOrUndefined(k.replicas, ns, 'web-0')) === undefined ? true : undefined,
  );
  t.log(`delete -> object gone (processes stopped, finalizer removed): ${Date.now() - deleted} ms`);
  for (const pid of pids) t.false(pidAlive(pid), `pid ${pid} is gone`);
  t.false(cgroupExists(dirs.cgroupParent, id));
  t.false(agent.engine.has(id));
});

test('a Replica with a missing command reports ExecFailed, and deleting it still removes the finalizer', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  await inProcessAgent(t, dirs);
  await k.replicas.create(
    replicaObject(ns, 'broken-0', dirs.hostName, [{ name: 'main', command: ['/no/such/binary'] }], {
      supervision: { maxRestarts: 1, periodSeconds: 10, backoff: { initialSeconds: 30, maxSeconds: 60 } },
    }),
  );
  const failed = await waitFor('an ExecFailed status', async () => {
    const r = await k.replicas.get('broken-0', { namespace: ns });
    return r.status?.processes?.[0]?.lastExit?.reason === 'ExecFailed' ? r : undefined;
  });
  t.regex(failed.status?.processes?.[0]?.lastExit?.message ?? '', /ENOENT/);
  t.log(`phase ${failed.status?.phase}, reason ${failed.status?.reason}: ${failed.status?.message}`);
  await k.replicas.delete('broken-0', { namespace: ns });
  await waitFor('the Replica object gone', async () =>
    (await getOrUndefined(k.replicas, ns, 'broken-0')) === undefined ? true : undefined,
  );
  t.pass();
});

test('a Replica bound to another host is left alone', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  const created = await k.replicas.create(
    replicaObject(ns, 'other-0', 'some-other-host', [{ name: 'main', command: ['sleep', '600'] }]),
  );
  await k.replicas.create(
    replicaObject(ns, 'api.v2-0', dirs.hostName, [{ name: 'main', command: ['sleep', '600'] }]),
  );
  await waitFor('api.v2-0 Running (a dotted name)', async () =>
    (await k.replicas.get('api.v2-0', { namespace: ns })).status?.phase === 'Running' ? true : undefined,
  );
  const other = await k.replicas.get('other-0', { namespace: ns });
  t.is(other.metadata.resourceVersion, created.metadata.resourceVersion, 'nothing wrote to other-0');
  t.is(other.status, undefined);
  t.false(agent.engine.has(replicaId(ns, 'other-0')));

  // Both deleted, both held by the runtime finalizer: the agent finalizes its own replica (the
  // point by which it has seen both deletions) and leaves the other host's to that host.
  await k.replicas.delete('other-0', { namespace: ns });
  await k.replicas.delete('api.v2-0', { namespace: ns });
  await waitFor('api.v2-0 finalized and gone', async () =>
    (await getOrUndefined(k.replicas, ns, 'api.v2-0')) === undefined ? true : undefined,
  );
  const pending = await getOrUndefined(k.replicas, ns, 'other-0');
  t.truthy(pending?.metadata.deletionTimestamp, 'other-0 is still there, deleted and waiting');
  t.deepEqual(pending?.metadata.finalizers, [RUNTIME_FINALIZER], 'its runtime finalizer is still on it');
  t.false(agent.engine.has(replicaId(ns, 'other-0')));
  // The test plays the other host's runtime: drop the finalizer, and the object goes.
  await k.replicas.mergePatch('other-0', { metadata: { finalizers: null } }, { namespace: ns });
  await waitFor('other-0 gone', async () =>
    (await getOrUndefined(k.replicas, ns, 'other-0')) === undefined ? true : undefined,
  );
});

test('a readiness probe on a named, allocated port makes the Replica ready; a template change runs it again', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  await inProcessAgent(t, dirs, { portRange: { min: 24300, max: 24399 } });
  // http.server takes the port as its last argument: the shell passes the allocated one on.
  const proc = {
    name: 'server',
    command: ['sh', '-c', 'exec python3 -m http.server --bind 127.0.0.1 "$ORRERY_PORT_HTTP"'],
    ports: [{ name: 'http', protocol: 'http' as const }],
    env: [{ name: 'GREETING', value: 'one' }],
    readinessProbe: { http: { path: '/', port: 'http' }, periodSeconds: 1, initialDelaySeconds: 0 },
  };
  await k.replicas.create(replicaObject(ns, 'probe-0', dirs.hostName, [proc]));
  const ready = await waitFor('probe-0 ready', async () => {
    const r = await k.replicas.get('probe-0', { namespace: ns });
    return r.status?.ready === true ? r : undefined;
  });
  t.is(ready.status?.phase, 'Running');
  t.true(ready.status?.processes?.[0]?.ready);
  const port = ready.status?.ports?.[0]?.port as number;
  t.is((await fetch(`http://127.0.0.1:${port}/`)).status, 200);
  const pid = ready.status?.processes?.[0]?.pid as number;

  // The operator replaces replicas on template changes, but the agent copes with an edit too.
  await k.replicas.patch(
    'probe-0',
    [{ op: 'replace', path: '/spec/template/processes/0/env/0/value', value: 'two' }],
    { namespace: ns, type: 'json' },
  );
  const rerun = await waitFor('probe-0 running again with a new pid', async () => {
    const r = await k.replicas.get('probe-0', { namespace: ns });
    const p = r.status?.processes?.[0]?.pid;
    return r.status?.ready === true && p !== undefined && p !== pid ? r : undefined;
  });
  t.false(pidAlive(pid));
  t.true(pidAlive(rerun.status?.processes?.[0]?.pid as number));
  t.is(rerun.status?.observedGeneration, rerun.metadata.generation);
  const environ = readFileSync(`/proc/${rerun.status?.processes?.[0]?.pid}/environ`, 'utf8').split('\0');
  t.true(environ.includes('GREETING=two'));
});

test('binding takes over the status the scheduler wrote: Unschedulable is cleared, Scheduled and Ready are True', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  await inProcessAgent(t, dirs);
  const unbound = replicaObject(ns, 'late-0', dirs.hostName, [{ name: 'main', command: ['sleep', '600'] }]);
  delete (unbound.spec as { host?: string }).host;
  await k.replicas.create(unbound);
  // What the scheduler writes when nothing fits (operator/scheduler).
  await k.replicas.patchStatus(
    'late-0',
    {
      phase: 'Pending',
      ready: false,
      reason: 'Unschedulable',
      message: 'no host fits',
      conditions: [
        {
          type: 'Scheduled',
          status: 'False',
          reason: 'Unschedulable',
          message: 'no host fits',
          lastTransitionTime: '2026-01-01T00:00:00Z',
        },
      ],
    },
    { namespace: ns },
  );
  await k.replicas.mergePatch('late-0', { spec: { host: dirs.hostName } }, { namespace: ns });
  const r = await waitFor('late-0 Running', async () => {
    const x = await k.replicas.get('late-0', { namespace: ns });
    return x.status?.phase === 'Running' ? x : undefined;
  });
  t.is(r.status?.reason, undefined);
  t.is(r.status?.message, undefined);
  const cond = new Map((r.status?.conditions ?? []).map((c) => [c.type, c]));
  t.is(cond.get('Scheduled')?.status, 'True');
  t.is(cond.get('Scheduled')?.reason, 'Bound');
  t.is(cond.get('Ready')?.status, 'True');
});

test('a Replica with the default isolation (pid, mount, uts, ipc namespaces) runs with its name as hostname', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  await k.replicas.create(
    replicaObject(
      ns,
      'iso-0',
      dirs.hostName,
      [
        {
          name: 'main',
          command: ['sh', '-c', 'echo "host=$(hostname) pid=$$ port=$ORRERY_PORT_HTTP"; exec sleep 600'],
          ports: [{ name: 'http' }],
        },
      ],
      {
        isolation: { namespaces: ['pid', 'mount', 'uts', 'ipc'] },
        resources: { cpu: '250m', memory: '64Mi', pids: 32 },
      },
    ),
  );
  const r = await waitFor('iso-0 Running', async () => {
    const x = await k.replicas.get('iso-0', { namespace: ns });
    return x.status?.phase === 'Running' ? x : undefined;
  });
  t.true(pidAlive(r.status?.processes?.[0]?.pid as number));
  const line = await waitFor('the first log line', async () => {
    const res = await fetch(`${agent.apiEndpoint}/v1/replicas/${ns}/iso-0/logs`, authed(agent.token));
    const text = await res.text();
    return text.includes('host=') ? text.trim() : undefined;
  });
  // In its own pid namespace the shell is not PID 1 (orrery-init is) but a low pid; the hostname is the replica's.
  t.regex(line, new RegExp(`^host=iso-0 pid=\\d+ port=${r.status?.ports?.[0]?.port}$`));
  t.true(Number(/pid=(\d+)/.exec(line)?.[1]) < 10);
  await k.replicas.delete('iso-0', { namespace: ns });
  await waitFor('iso-0 gone', async () =>
    (await getOrUndefined(k.replicas, ns, 'iso-0')) === undefined ? true : undefined,
  );
  t.false(pidAlive(r.status?.processes?.[0]?.pid as number));
});

test('a Replica written by hand gets its template defaults from the agent; an invalid template is reported Failed, naming the field', async (t) => {
  // The Replica CRD keeps spec.template opaque (the operator copies an Instance's validated,
  // defaulted template): nothing in the API server defaults or checks a hand-written one.
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  await inProcessAgent(t, dirs);
  const bare = (name: string, template: Record<string, unknown>) =>
    ({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Replica',
      metadata: { name, namespace: ns, labels: { 'orrery.dev/instance': 'demo' } },
      spec: { instance: 'demo', ordinal: 0, host: dirs.hostName, template },
    }) as unknown as Replica;
  await k.replicas.create(bare('plain-0', { processes: [{ name: 'main', command: ['sleep', '600'] }] }));
  await k.replicas.create(bare('empty-0', { processes: [] }));
  await k.replicas.create(
    bare('cpu-0', { processes: [{ name: 'main', command: ['sleep', '600'] }], resources: { cpu: 'lots' } }),
  );
  const phaseOf = (name: string, phase: string) =>
    waitFor(`${name} ${phase}`, async () => {
      const r = await k.replicas.get(name, { namespace: ns });
      return r.status?.phase === phase ? r : undefined;
    });
  // isolation, restart, supervision and the grace period all come from the schema's defaults.
  const plain = await phaseOf('plain-0', 'Running');
  t.true(pidAlive(plain.status?.processes?.[0]?.pid as number));
  const empty = await phaseOf('empty-0', 'Failed');
  t.is(empty.status?.reason, 'InvalidSpec');
  t.regex(empty.status?.message ?? '', /spec\.template\.processes must be a non-empty list/);
  const cpu = await phaseOf('cpu-0', 'Failed');
  t.is(cpu.status?.reason, 'InvalidSpec');
  t.regex(cpu.status?.message ?? '', /'lots'/);
});

// Issue 15's reproduction: `id; grep CapEff` in a default replica said uid 0 with every
// capability on the host. Inside it may still say 0; outside it is an unprivileged uid.
test('a default Replica is root only inside its user namespace: the host sees an unprivileged uid', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  const script = "id -u; grep CapEff /proc/self/status; tr -s ' ' < /proc/self/uid_map; exec sleep 600";
  await k.replicas.create(
    replicaObject(ns, 'whoami-0', dirs.hostName, [{ name: 'main', command: ['sh', '-c', script] }], {
      isolation: { namespaces: ['pid', 'mount', 'uts', 'ipc'] },
    }),
  );
  const r = await waitFor('whoami-0 Running', async () => {
    const x = await k.replicas.get('whoami-0', { namespace: ns });
    return x.status?.phase === 'Running' ? x : undefined;
  });
  const log = await waitFor('its output', async () => {
    const res = await fetch(`${agent.apiEndpoint}/v1/replicas/${ns}/whoami-0/logs`, authed(agent.token));
    const text = await res.text();
    return /uid_map|\d+ \d+ \d+/.test(text) ? text : undefined;
  });
  const [inside, , map] = log.trim().split('\n');
  t.is(inside, '0', 'root inside');
  const [, hostUid, count] = (map ?? '').trim().split(' ').map(Number);
  t.true((hostUid as number) >= 65536 && count === 65536, `mapped onto an unprivileged range: ${map}`);
  // From outside: the process (orrery-init, PID 1 of the replica) has the range's uid on the host,
  // and its capabilities belong to a user namespace that is not the host's.
  const pid = r.status?.processes?.[0]?.pid as number;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  t.deepEqual(/^Uid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/).map(Number), [
    hostUid,
    hostUid,
    hostUid,
    hostUid,
  ]);
  t.is(/^NoNewPrivs:\s+(\d)/m.exec(status)?.[1], '1');
  t.not(readlinkSync(`/proc/${pid}/ns/user`), readlinkSync('/proc/self/ns/user'));
  await k.replicas.delete('whoami-0', { namespace: ns });
  await waitFor('whoami-0 gone', async () =>
    (await getOrUndefined(k.replicas, ns, 'whoami-0')) === undefined ? true : undefined,
  );
});
