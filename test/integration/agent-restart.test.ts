// `orrery runtime` as a child process, killed with SIGKILL and started again: workloads are
// re-adopted without a restart, and what changed while it was down is converged when it is back.
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { replicaId } from '../../node-runtime/agent/index.ts';
import { detectCgroupLayout } from '../../node-runtime/cgroups/detect.ts';
import { parentDirsOf } from '../../node-runtime/cgroups/paths.ts';
import {
  agentDirs,
  authed,
  cgroupExists,
  childAgent,
  getOrUndefined,
  kubeForTests,
  pidAlive,
  removeCgroupTree,
  replicaObject,
  testNamespace,
  waitFor,
} from '../helpers/agent-harness.ts';

test.before(async () => {
  await kubeForTests();
});

test('an agent killed with SIGKILL and started again re-adopts its replicas without restarting them, stops the ones deleted meanwhile and runs again one replaced meanwhile', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  // Registered after agentDirs' teardown so it runs first: nothing of ours may outlive the test.
  t.teardown(() => removeCgroupTree(dirs.cgroupParent));

  // The live-process records in a run dir of their own (--run-dir), as on tmpfs in production.
  const runDir = path.join(dirs.root, 'run');
  const args = ['--lease-duration', '30', '--run-dir', runDir];
  let agent = await childAgent(t, dirs, args);
  const names = ['keep-0', 'deleted-0', 'gone-0', 'renewed-0'];
  for (const name of names) {
    await k.replicas.create(
      replicaObject(ns, name, dirs.hostName, [
        { name: 'main', command: ['sh', '-c', 'echo up; exec sleep 600'], ports: [{ name: 'http' }] },
      ]),
    );
  }
  const before = new Map<string, { pid: number; port: number; startedAt: string }>();
  for (const name of names) {
    const r = await waitFor(`${name} Running`, async () => {
      const x = await k.replicas.get(name, { namespace: ns });
      return x.status?.phase === 'Running' ? x : undefined;
    });
    before.set(name, {
      pid: r.status?.processes?.[0]?.pid as number,
      port: r.status?.ports?.[0]?.port as number,
      startedAt: r.status?.startedAt as string,
    });
  }

  agent.child.kill('SIGKILL');
  await agent.exited;
  for (const { pid } of before.values()) t.true(pidAlive(pid), 'workloads survive the agent');

  // While the agent is down: one replica is deleted (its finalizer holds it, deletionTimestamp
  // set), another is removed outright (as the host-lifecycle controller does for a dead host).
  await k.replicas.delete('deleted-0', { namespace: ns });
  await k.replicas.mergePatch('gone-0', { metadata: { finalizers: null } }, { namespace: ns });
  await k.replicas.delete('gone-0', { namespace: ns });
  t.is(await getOrUndefined(k.replicas, ns, 'gone-0'), undefined);
  // Another is replaced by a new object of the same name (a new uid): what the agent ran it for,
  // recorded with the runtime's spec, no longer matches, so it must be stopped and run again.
  const oldUid = (await k.replicas.get('renewed-0', { namespace: ns })).metadata.uid;
  await k.replicas.mergePatch('renewed-0', { metadata: { finalizers: null } }, { namespace: ns });
  await k.replicas.delete('renewed-0', { namespace: ns });
  await waitFor('renewed-0 deleted', async () =>
    (await getOrUndefined(k.replicas, ns, 'renewed-0')) === undefined ? true : undefined,
  );
  await k.replicas.create(
    replicaObject(ns, 'renewed-0', dirs.hostName, [{ name: 'main', command: ['sleep', '600'] }]),
  );

  const restarted = Date.now();
  t.deepEqual(
    readdirSync(path.join(runDir, 'replicas')).sort(),
    names.map((n) => `${replicaId(ns, n)}.json`).sort(),
    'a record per replica, in the run dir',
  );
  t.false(existsSync(path.join(dirs.stateDir, 'replicas')), 'no records in the state dir');
  agent = await childAgent(t, dirs, args);
  await waitFor('deleted-0 gone', async () =>
    (await getOrUndefined(k.replicas, ns, 'deleted-0')) === undefined ? true : undefined,
  );
  await waitFor('gone-0 processes stopped', () =>
    pidAlive(before.get('gone-0')?.pid as number) ? undefined : true,
  );
  t.log(`agent restart -> deleted replicas stopped and finalized: ${Date.now() - restarted} ms`);
  t.false(pidAlive(before.get('deleted-0')?.pid as number));
  t.false(cgroupExists(dirs.cgroupParent, replicaId(ns, 'deleted-0')));
  t.false(cgroupExists(dirs.cgroupParent, replicaId(ns, 'gone-0')));

  const health = (await (await fetch(`${agent.apiEndpoint}/healthz`)).json()) as {
    readopted: { replicas: number; ms: number };
  };
  t.log(
    `re-adopted ${health.readopted.replicas} replicas in ${health.readopted.ms} ms (runtime.start after SIGKILL)`,
  );
  t.is(health.readopted.replicas, 4);
  const renewed = await waitFor('renewed-0 Running with a new pid', async () => {
    const x = await k.replicas.get('renewed-0', { namespace: ns });
    const pid = x.status?.processes?.[0]?.pid;
    return x.status?.phase === 'Running' && pid !== before.get('renewed-0')?.pid ? x : undefined;
  });
  t.not(renewed.metadata.uid, oldUid);
  t.false(pidAlive(before.get('renewed-0')?.pid as number), 'the process run for the old object is stopped');

  // The kept replica: same pid, same port, no restart, status unchanged.
  const keep = before.get('keep-0');
  t.true(pidAlive(keep?.pid as number));
  const res = await fetch(`${agent.apiEndpoint}/v1/replicas/${ns}/keep-0`, authed(agent.token));
  t.is(res.status, 200);
  const body = (await res.json()) as {
    status: { phase: string; processes: { pid: number; restarts: number }[]; ports: { port: number }[] };
  };
  t.is(body.status.phase, 'Running');
  t.is(body.status.processes[0]?.pid, keep?.pid);
  t.is(body.status.processes[0]?.restarts, 0);
  t.is(body.status.ports[0]?.port, keep?.port);
  const obj = await k.replicas.get('keep-0', { namespace: ns });
  t.is(obj.status?.phase, 'Running');
  t.is(obj.status?.processes?.[0]?.pid, keep?.pid);
  t.is(obj.status?.restarts, 0);
  t.is(obj.status?.startedAt, keep?.startedAt);

  // A new replica after the restart gets a port other than the re-adopted one.
  await k.replicas.create(
    replicaObject(ns, 'new-0', dirs.hostName, [
      { name: 'main', command: ['sleep', '600'], ports: [{ name: 'http' }] },
    ]),
  );
  const fresh = await waitFor('new-0 Running', async () => {
    const x = await k.replicas.get('new-0', { namespace: ns });
    return x.status?.phase === 'Running' ? x : undefined;
  });
  t.not(fresh.status?.ports?.[0]?.port, keep?.port);

  // SIGTERM: the agent exits cleanly and the workloads keep running.
  agent.child.kill('SIGTERM');
  t.is(await agent.exited, 0);
  t.true(pidAlive(keep?.pid as number));
  t.true(pidAlive(fresh.status?.processes?.[0]?.pid as number));
});

test('--stop-workloads-on-exit stops every replica on SIGTERM', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  t.teardown(() => removeCgroupTree(dirs.cgroupParent));
  const agent = await childAgent(t, dirs, ['--stop-workloads-on-exit']);
  await k.replicas.create(
    replicaObject(ns, 'w-0', dirs.hostName, [{ name: 'main', command: ['sleep', '600'] }]),
  );
  const r = await waitFor('w-0 Running', async () => {
    const x = await k.replicas.get('w-0', { namespace: ns });
    return x.status?.phase === 'Running' ? x : undefined;
  });
  const pid = r.status?.processes?.[0]?.pid as number;
  t.true(pidAlive(pid));
  agent.child.kill('SIGTERM');
  t.is(await agent.exited, 0);
  t.false(pidAlive(pid));
  t.false(cgroupExists(dirs.cgroupParent, replicaId(ns, 'w-0')));
  // Nothing left at all: the per-host parent goes too, in every hierarchy (`orrery up`'s Ctrl-C).
  const left = parentDirsOf(detectCgroupLayout(), dirs.cgroupParent).filter((dir) => existsSync(dir));
  t.deepEqual(left, []);
});

test('bad flags are refused with the flag and the expected value named', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const main = path.join(import.meta.dirname, 'fixtures', 'agent-main.ts');
  const run = (args: string[]) =>
    spawnSync(process.execPath, [main, 'runtime', ...args], { encoding: 'utf8' });
  const lease = run(['--lease-duration', '0.5']);
  t.not(lease.status, 0);
  t.regex(lease.stderr, /--lease-duration expects a whole number >= 1, got '0\.5'/);
  const listen = run(['--listen', 'nowhere']);
  t.not(listen.status, 0);
  t.regex(listen.stderr, /--listen must be host:port/);
  const address = run(['--address', 'host.example']);
  t.regex(address.stderr, /--address expects an IPv4 or IPv6 address, got 'host\.example'/);
  const host = run(['--host-name', 'Bad_Name']);
  t.regex(host.stderr, /--host-name expects a DNS-1123 subdomain/);
  const help = run(['--help']);
  t.is(help.status, 0);
  t.regex(help.stdout, /--stop-workloads-on-exit/);
  t.regex(help.stdout, /--lease-duration <seconds>/);
});
