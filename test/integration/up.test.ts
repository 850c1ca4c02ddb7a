// `orrery up` as a user runs it: a real control plane, operator and host agents under one `up`
// process, stopped by a terminal's Ctrl-C (with one host and with two, leaving nothing behind),
// surviving the death of an agent, and refusing a second run on its data dir.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { formatLogLine } from '../../cli/up-children.ts';
import { ensureControlPlaneBinary } from '../../controlplane/controlplane.ts';
import { HOSTS, INSTANCES, REPLICAS } from '../../crds/resources.ts';
import type { Host, Instance, Replica } from '../../crds/types.ts';
import {
  isForbidden,
  KubeApi,
  leaseClient,
  loadKubeConfig,
  type ResourceClient,
  resourceClient,
  typed,
} from '../../kube/index.ts';
import { BPFFS, fastPathUnavailable } from '../../node-runtime/bpf/index.ts';
import { CgroupManager, detectCgroupLayout } from '../../node-runtime/cgroups/index.ts';
import { liveStartTime } from '../../platform/proc.ts';
import { kubectl, whoAmI } from '../helpers/cluster.ts';
import { cgroupSkipReason, host, runs } from '../helpers/features.ts';
import { eventually } from '../helpers/wait.ts';
import { processesUnder, startUp, type UpProcess, within } from './fixtures/up-process.ts';

/** Control plane, CRDs, operator and agent started, `export` lines printed (binary cached). */
const bringUpMs = 120_000;
const running = /^\[up\] running the operator and 1 host\(s\)/;

test.before(async () => {
  await ensureControlPlaneBinary({ log: (msg) => console.error(`[controlplane] ${msg}`) });
});

interface Api {
  kubeconfig: string;
  instances: ResourceClient<Instance>;
  replicas: ResourceClient<Replica>;
  hosts: ResourceClient<Host>;
}

async function apiOf(t: ExecutionContext, up: UpProcess): Promise<Api> {
  const kubeconfig = (await up.waitForLine(/^export KUBECONFIG=(\S+)$/, bringUpMs))[1] as string;
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
  t.teardown(() => api.close());
  return {
    kubeconfig,
    instances: resourceClient(api, typed<Instance>(INSTANCES), 'orrery-test'),
    replicas: resourceClient(api, typed<Replica>(REPLICAS), 'orrery-test'),
    hosts: resourceClient(api, typed<Host>(HOSTS), 'orrery-test'),
  };
}

/**
 * The cgroups below `parent` in every mounted hierarchy (the v2 tree and each v1 controller's,
 * whether or not the runtime uses it), as `<hierarchy>/<parent>/<child>`.
 */
function cgroupsUnder(parent: string): string[] {
  return parentDirs(parent).flatMap((dir) =>
    readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(dir, e.name)),
  );
}

/** `parent` in every mounted hierarchy where it exists. */
function parentDirs(parent: string): string[] {
  const layout = host.cgroups;
  if (!layout) throw new Error(`no cgroup layout: ${host.cgroupsError}`);
  const roots = new Set([...(layout.v2Root ? [layout.v2Root] : []), ...Object.values(layout.v1)]);
  return [...roots].map((root) => join(root, parent)).filter((dir) => existsSync(dir));
}

/** One Instance of one long-running process; resolves with its Replica once Running. */
async function runningReplica(api: Api, name: string): Promise<Replica> {
  await api.instances.create(
    {
      metadata: { name, namespace: 'default' },
      spec: { replicas: 1, template: { processes: [{ name: 'main', command: ['sleep', 'infinity'] }] } },
    },
    { namespace: 'default' },
  );
  return eventually(
    `${name}-0 Running with a pid`,
    async () => {
      const r = await api.replicas.get(`${name}-0`, { namespace: 'default' });
      return r.status?.phase === 'Running' && r.status.processes?.[0]?.pid !== undefined && r;
    },
    { timeoutMs: 30_000 },
  );
}

function childPid(up: UpProcess, name: string): number {
  const child = up.record().children.find((c) => c.name === name);
  if (!child) throw new Error(`${up.dataDir}/up.pid names no ${name}: ${JSON.stringify(up.record())}`);
  return child.pid;
}

test.serial(
  'one Ctrl-C delivered to the process group and relayed again by npm is one graceful stop',
  async (t) => {
    const up = startUp(t);
    const api = await apiOf(t, up);
    await up.waitForLine(running, bringUpMs);
    // The mesh proxy reads the agent's event stream (the same-host fast path), with up's token.
    await up.waitForLine(/runtime event stream open/, 30_000);
    const replica = await runningReplica(api, 'sleeper');
    const workload = replica.status?.processes?.[0]?.pid as number;
    const cgroupParent = (await up.waitForLine(/cgroupParent=(\S+)/, 1000))[1] as string;
    const children = up.record().children;
    t.deepEqual(children.map((c) => c.name.replace(/^host agent .*/, 'host agent')).sort(), [
      'control plane',
      'host agent',
      'mesh proxy',
      'operator',
    ]);

    // The terminal signals the whole foreground group; npm relays the same Ctrl-C to its child.
    const stopAt = performance.now();
    process.kill(-up.pid, 'SIGINT');
    process.kill(up.pid, 'SIGINT');
    const exit = await within(up.exited, 60_000);
    const stopMs = Math.round(performance.now() - stopAt);
    t.log(`graceful stop in ${stopMs} ms`);

    t.deepEqual(exit, { code: 0, signal: null }, up.lines.slice(-30).join('\n'));
    const output = up.lines.join('\n');
    t.false(/SIGKILL|killing everything/.test(output), output);
    t.false(output.includes('(re)initializing'), 'no informer started before the CRDs were watchable');
    t.is(up.lines.filter((l) => l.startsWith('[up] stopping')).length, 1);
    // In order: the agent (its workloads stopped) before the operator before the control plane.
    const agentExit = up.lines.findIndex(
      (l) => /^\[[^\]]+\] exited \(code 0\)$/.test(l) && !l.startsWith('[operator]'),
    );
    const operatorStops = up.lines.findIndex((l) => /^\[operator\] info +stopping$/.test(l));
    const operatorExit = up.lines.indexOf('[operator] exited (code 0)');
    const stopped = up.lines.findIndex((l) => /^\[up\] stopped in/.test(l));
    t.true(agentExit >= 0 && agentExit < operatorStops && operatorExit < stopped, output);
    for (const c of children) t.is(liveStartTime(c.pid), undefined, `${c.name} (pid ${c.pid}) is gone`);
    t.is(liveStartTime(workload), undefined, 'the workload is stopped');
    t.deepEqual(await new CgroupManager({ layout: detectCgroupLayout(), parent: cgroupParent }).list(), []);
    t.throws(() => up.record(), { code: 'ENOENT' }, 'up.pid is removed by a clean stop');
  },
);

/**
 * Each host agent runs with a kubeconfig of its own (DATA_DIR/credentials/hosts/HOST), whose token
 * the API server takes for the runtimes' account on that node, and which cannot write the other
 * host's Host; the mesh proxy with the proxy account's, which writes no Host; the operator with the
 * operator account's, which reads no Secret.
 */
/** A client with the credentials `up` gave its child `child` (its --kubeconfig), checked to be DATA_DIR/credentials/`dir`. */
async function credentialsOf(
  t: ExecutionContext,
  up: UpProcess,
  child: string,
  dir: string,
): Promise<KubeApi | undefined> {
  const found = up.record().children.find((c) => c.name === child);
  if (!found) return void t.fail(`no ${child} in up.pid`);
  const args = readFileSync(`/proc/${found.pid}/cmdline`, 'utf8').split('\0');
  const kubeconfig = args[args.indexOf('--kubeconfig') + 1] as string;
  t.is(kubeconfig, join(up.dataDir, 'credentials', dir, 'kubeconfig'));
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
  t.teardown(() => api.close());
  return api;
}

/** The error a request failed with, or undefined when it succeeded. */
const errorOf = (request: Promise<unknown>) =>
  request.then(
    () => undefined,
    (e: unknown) => e,
  );

async function eachAgentHasItsOwnIdentity(
  t: ExecutionContext,
  up: UpProcess,
  names: string[],
): Promise<void> {
  t.is(statSync(up.dataDir).mode & 0o777, 0o700, "the data dir is its owner's only");
  for (const name of names) {
    const api = await credentialsOf(t, up, `host agent ${name}`, join('hosts', name));
    if (!api) return;
    const user = await whoAmI(api);
    t.is(user.username, 'system:serviceaccount:orrery-system:orrery-runtime');
    t.deepEqual(user.extra?.['authentication.kubernetes.io/node-name'], [name]);
    const other = names.find((n) => n !== name) as string;
    const hosts = resourceClient(api, typed<Host>(HOSTS), 'orrery-test');
    const err = await errorOf(hosts.patchStatus(other, { replicas: 99 } as never));
    t.true(isForbidden(err), `host ${name} writing the Host ${other}: ${String(err ?? 'allowed')}`);
  }
  // The mesh proxy: deploy/'s read-only proxy account, not the admin.
  const api = await credentialsOf(t, up, 'mesh proxy', 'proxy');
  if (!api) return;
  const err = await errorOf(
    resourceClient(api, typed<Host>(HOSTS), 'orrery-test').patchStatus(
      names[0] as string,
      {
        replicas: 99,
      } as never,
    ),
  );
  t.true(isForbidden(err), `the proxy writing a Host: ${String(err ?? 'allowed')}`);
  // And it serves: its heartbeat Lease (proxy-up-<data dir key>) is written with that account.
  const key = createHash('sha256').update(up.dataDir).digest('hex').slice(0, 8);
  const lease = await eventually('the mesh proxy Lease', () =>
    leaseClient(api, 'orrery-test')
      .get(`proxy-up-${key}`, { namespace: 'orrery-system' })
      .catch(() => undefined),
  );
  t.truthy(lease.spec?.renewTime);

  // The operator: deploy/'s operator account, not the admin: it cannot read Secrets.
  const opApi = await credentialsOf(t, up, 'operator', 'operator');
  if (!opApi) return;
  t.is((await whoAmI(opApi)).username, 'system:serviceaccount:orrery-system:orrery-operator');
  const secrets = await errorOf(
    opApi.request({ method: 'GET', path: '/api/v1/namespaces/orrery-system/secrets' }),
  );
  t.true(isForbidden(secrets), `the operator listing Secrets: ${String(secrets ?? 'allowed')}`);
}

test.serial.runIf(runs(cgroupSkipReason({ manager: true }), 'up with 2 hosts'))(
  'up with 2 hosts: Ctrl-C to its process group stops every part and workload and leaves no process or cgroup',
  async (t) => {
    const up = startUp(t, ['--hosts', '2']);
    const api = await apiOf(t, up);
    await up.waitForLine(/^\[up\] running the operator and 2 host\(s\)/, bringUpMs);
    const hosts = await eventually(
      'both Hosts Ready',
      async () => {
        const { items } = await api.hosts.list();
        const ready = items.filter(
          (h) => h.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True',
        );
        return ready.length === 2 && ready;
      },
      { timeoutMs: 30_000 },
    );
    // The parents `up` gave its agents (cli/up.ts), as the Hosts report them.
    const parents = hosts.map((h) => h.status?.cgroup?.parent as string);
    for (const [i, h] of hosts.entries()) {
      const name = (h.metadata.name as string).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      t.regex(parents[i] ?? '', new RegExp(`^orrery/up-[0-9a-f]{8}-${name}$`));
    }

    await eachAgentHasItsOwnIdentity(
      t,
      up,
      hosts.map((h) => h.metadata.name as string),
    );

    const applied = await kubectl(api.kubeconfig, ['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'orrery.dev/v1alpha1',
        kind: 'Instance',
        metadata: { name: 'spread', namespace: 'default' },
        spec: { replicas: 4, template: { processes: [{ name: 'main', command: ['sleep', 'infinity'] }] } },
      }),
    });
    t.is(applied.code, 0, applied.stderr);
    const replicas = await eventually(
      '4 replicas Running with a pid',
      async () => {
        const { items } = await api.replicas.list({ namespace: 'default' });
        const running = items.filter((r) => r.status?.phase === 'Running' && r.status.processes?.[0]?.pid);
        return running.length === 4 && running;
      },
      { timeoutMs: 60_000 },
    );
    t.deepEqual(
      [...new Set(replicas.map((r) => r.spec.host))].sort(),
      hosts.map((h) => h.metadata.name).sort(),
      'the replicas run on both hosts',
    );
    const workloads = replicas.map((r) => {
      const pid = r.status?.processes?.[0]?.pid as number;
      return { name: r.metadata.name, pid, startTime: liveStartTime(pid) };
    });
    for (const w of workloads) t.not(w.startTime, undefined, `${w.name} (pid ${w.pid}) runs`);
    const children = up.record().children;
    t.deepEqual(children.map((c) => c.name.replace(/^host agent .*/, 'host agent')).sort(), [
      'control plane',
      'host agent',
      'host agent',
      'mesh proxy',
      'operator',
    ]);
    // What the checks after the stop look at, seen while it all runs: they would see a leftover.
    const before = processesUnder(up.dataDir).map((p) => p.pid);
    for (const c of [...children, { name: 'up', pid: up.pid }]) {
      t.true(before.includes(c.pid), `${c.name} (pid ${c.pid}) is found by its command line`);
    }
    for (const parent of parents) t.true(cgroupsUnder(parent).length >= 1, `replica cgroups under ${parent}`);
    // up passes --kernel-fastpath: where BPF and cgroup v2 are, each host pins its programs in
    // bpffs under its cgroup parent's name, and the Host says so; elsewhere it says why not.
    const kernel = fastPathUnavailable(host.cgroups?.v2Root ?? '/sys/fs/cgroup') === undefined;
    for (const h of hosts) {
      const path = (await api.hosts.get(h.metadata.name as string)).status?.meshDataPath;
      if (kernel) t.deepEqual(path, { kernel: true }, `${h.metadata.name} balances in the kernel`);
      else t.is(path?.kernel, false, `${h.metadata.name}: ${path?.reason}`);
    }
    for (const parent of parents) t.is(existsSync(join(BPFFS, parent)), kernel, `pins in ${BPFFS}/${parent}`);
    // Every daemon runs as deploy/'s account for it: none was refused what it reads or writes (the
    // host agents' fast path once could not list EndpointSlices, and retried forever).
    t.deepEqual(
      up.lines.filter((l) => /HTTP 403|forbidden/i.test(l)),
      [],
      'no request of a daemon refused by RBAC or admission',
    );
    // With a tmpfs at /run, the hosts keep their process records in /run/orrery/up-<key>/<host>
    // (cli/up.ts), which a clean stop removes; otherwise they are in the data dir.
    const runRoots = [
      ...new Set(up.lines.flatMap((l) => /runDir=(\S+)/.exec(l)?.[1] ?? []).map((d) => dirname(d))),
    ].filter((dir) => /\/up-[0-9a-f]{8}$/.test(dir));
    for (const dir of runRoots) t.true(existsSync(dir), `${dir} exists while up runs`);

    const stopAt = performance.now();
    process.kill(-up.pid, 'SIGINT');
    // Agents get 30 s each after SIGTERM and the operator 10 s: a stop that needs a SIGKILL
    // does not exit 0, so the bound only catches a hang.
    const exit = await within(up.exited, 90_000);
    t.log(`graceful stop of 2 hosts and 4 replicas in ${Math.round(performance.now() - stopAt)} ms`);
    t.deepEqual(exit, { code: 0, signal: null }, up.lines.slice(-40).join('\n'));

    for (const w of workloads) {
      t.not(liveStartTime(w.pid), w.startTime, `${w.name}'s process (pid ${w.pid}) is gone`);
    }
    for (const c of children) {
      t.not(liveStartTime(c.pid), c.startTime, `${c.name} (pid ${c.pid}) is gone`);
    }
    t.deepEqual(processesUnder(up.dataDir), [], `no process of the run is left`);
    for (const parent of parents) {
      t.false(existsSync(join(BPFFS, parent)), `no pin left in ${BPFFS}/${parent}`);
      t.deepEqual(cgroupsUnder(parent), [], `no cgroup under ${parent}`);
      t.deepEqual(parentDirs(parent), [], `the agent removed its parent ${parent} too`);
    }
    for (const dir of runRoots) t.false(existsSync(dir), `${dir} (the hosts' run records) is removed`);
    t.throws(() => up.record(), { code: 'ENOENT' }, 'up.pid is removed by a clean stop');
    // BPF: the runtime pins no BPF programs or maps yet (the mesh is not built). When it does,
    // check here that nothing of this run is left under /sys/fs/bpf.
  },
);

test.serial(
  'a host agent killed with SIGKILL is restarted and re-adopts its replica without restarting it',
  async (t) => {
    const up = startUp(t);
    const api = await apiOf(t, up);
    await up.waitForLine(running, bringUpMs);
    const before = await runningReplica(api, 'sleeper');
    const process0 = before.status?.processes?.[0];
    const workload = process0?.pid as number;
    const workloadStart = liveStartTime(workload);
    const agentName = up.record().children.find((c) => c.name.startsWith('host agent'))?.name as string;
    const agent = childPid(up, agentName);

    const from = up.lines.length;
    process.kill(agent, 'SIGKILL');
    const restarted = await up.waitForLine(
      /^\[up\] restarted host agent (\S+) \(pid (\d+), restart 1\)$/,
      15_000,
      from,
    );
    t.truthy(
      up.lines
        .slice(from)
        .find((l) =>
          /^\[up\] host agent \S+ exited unexpectedly \(signal SIGKILL, after [\d.]+ s\); restarting it in 1 s$/.test(
            l,
          ),
        ),
    );
    t.not(Number(restarted[2]), agent);
    t.is(childPid(up, agentName), Number(restarted[2]), 'up.pid names the new agent');
    const started = await up.waitForLine(
      /runtime agent started .*apiEndpoint=(\S+) .*readopted=(\d+)/,
      15_000,
      from,
    );
    t.is(started[2], '1');
    // It listens where it did (up fixed the port), so the mesh proxy's stream opens again there.
    await up.waitForLine(/runtime event stream open/, 15_000, from);

    // Once the new agent reconciled the re-adopted replica against its object, nothing restarted it.
    const token = readFileSync(join(up.dataDir, 'api-token'), 'utf8').trim();
    await eventually(
      'a reconcile by the new agent',
      async () => {
        const res = await fetch(`${started[1]}/metrics`, { headers: { authorization: `Bearer ${token}` } });
        const ok = /^orrery_runtime_reconciles_total\{outcome="ok"[^}]*\} (\d+)/m.exec(await res.text());
        return Number(ok?.[1] ?? 0) >= 1;
      },
      { timeoutMs: 15_000 },
    );
    const after = await api.replicas.get(before.metadata?.name as string, { namespace: 'default' });
    t.is(after.status?.phase, 'Running');
    t.is(after.status?.processes?.[0]?.pid, workload);
    t.is(after.status?.restarts ?? 0, before.status?.restarts ?? 0);
    t.is(after.status?.processes?.[0]?.restarts ?? 0, process0?.restarts ?? 0);
    t.is(liveStartTime(workload), workloadStart, 'the same process, not a reused pid');
  },
);

test.serial(
  'a second up on the same data dir says in one line that Orrery runs there, and leaves it running',
  async (t) => {
    const first = startUp(t);
    await first.waitForLine(running, bringUpMs);
    const children = first.record().children;

    const second = startUp(t, [], first.dataDir);
    const exit = await within(second.exited, 30_000);
    t.not(exit === 'timeout' ? 'timeout' : exit.code, 0);
    const said = second.lines.filter((l) => l.trim() !== '');
    t.is(said.length, 1, said.join('\n'));
    t.regex(
      said[0] as string,
      new RegExp(`already runs on ${first.dataDir} .*pid ${first.pid}\\b.*--data-dir`),
    );

    t.is(first.child.exitCode, null);
    for (const c of children) t.is(liveStartTime(c.pid), c.startTime, `${c.name} still runs`);
    t.false(first.lines.some((l) => l.startsWith('[up] stopping')));
    t.deepEqual(first.record().children, children);
  },
);

test('formatLogLine: pino records as level, message and fields; other JSON as fields; text as it is', (t) => {
  t.is(
    formatLogLine('{"level":30,"time":1,"pid":2,"hostname":"h","msg":"started","host":"vm"}'),
    'info  started host=vm',
  );
  t.is(formatLogLine('{"level":40,"n":1}'), 'warn  n=1');
  t.is(
    formatLogLine('{"host":"vm","apiEndpoint":"http://127.0.0.1:1"}'),
    'host=vm apiEndpoint=http://127.0.0.1:1',
  );
  t.is(formatLogLine('{not json'), '{not json');
  t.is(formatLogLine('plain text'), 'plain text');
});
