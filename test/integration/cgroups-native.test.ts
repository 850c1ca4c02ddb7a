// The cgroups, the logs and the native spawn together: a child placed by the addon with the
// manager's spawnTarget (CLONE_INTO_CGROUP into the v2 directory, "0" written to every v1
// `tasks` file before exec), its output in the LogStore's file. cgroups-manager.test.ts covers the
// same behaviour without the addon.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { CgroupLayout } from '../../node-runtime/cgroups/detect.ts';
import { CgroupManager } from '../../node-runtime/cgroups/manager.ts';
import { LogStore } from '../../node-runtime/logs/store.ts';
import { type SpawnRequest, spawn } from '../../node-runtime/native/index.ts';
import { cgroupSkipReason, describeCgroupLayout, host, runs } from '../helpers/features.ts';
import { eventually } from '../helpers/wait.ts';
import { watched } from './fixtures/native-run.ts';

const can = (limit: 'memory' | 'pids') =>
  runs(cgroupSkipReason({ manager: true, limits: [limit] }), 'cgroups-native');

async function fixture(t: ExecutionContext) {
  const cgroups = new CgroupManager({
    layout: host.cgroups as CgroupLayout,
    parent: `orrery-test-${randomBytes(4).toString('hex')}`,
  });
  const root = await mkdtemp(join(tmpdir(), 'orrery-cg-native-'));
  t.teardown(async () => {
    await cgroups.removeAll();
    await rm(root, { recursive: true, force: true });
  });
  return { cgroups, logs: new LogStore({ root }) };
}

function run(t: ExecutionContext, request: SpawnRequest) {
  const child = spawn(request);
  return { pid: child.pid, exited: watched(t, child) };
}

/** Exists and is not a zombie. */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return stat !== '' && state !== 'Z' && state !== 'X';
}

/** `root` and every live process below it in the process tree, from /proc (not from any cgroup file). */
async function processTree(root: number): Promise<{ pids: number[]; comms: string[] }> {
  const children = new Map<number, number[]>();
  const comm = new Map<number, string>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const close = stat.lastIndexOf(')');
    if (close < 0) continue;
    // After "pid (comm) ": state, ppid, ...; a zombie has left its cgroups already.
    const [state, ppid] = stat.slice(close + 2).split(' ');
    if (state === 'Z' || state === 'X') continue;
    const pid = Number(entry);
    comm.set(pid, stat.slice(stat.indexOf('(') + 1, close));
    children.set(Number(ppid), [...(children.get(Number(ppid)) ?? []), pid]);
  }
  const pids = [root];
  for (let i = 0; i < pids.length; i++) pids.push(...(children.get(pids[i] as number) ?? []));
  pids.sort((a, b) => a - b);
  return { pids, comms: pids.map((p) => comm.get(p) ?? '?') };
}

test.runIf(can('memory'))(
  'a workload spawned into the replica cgroup is OOM-killed at its limit and reported as such',
  async (t) => {
    const { cgroups, logs } = await fixture(t);
    const cgroup = await cgroups.create('hog-0', { memoryBytes: 64 << 20 });
    const before = await cgroup.oomKills();
    const logFile = await logs.prepareRun('hog-0', 'main');
    const { exited } = run(t, {
      file: '/usr/bin/python3',
      argv: ['python3', '-c', "print('allocating', flush=True); x = b'x' * (512 << 20)"],
      env: [],
      namespaces: [],
      cgroup: cgroup.spawnTarget,
      logFile,
    });
    t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
    t.true(await cgroup.oomKilled(before), 'SIGKILL + oom_kill counter up = OOMKilled');
    t.is(await logs.tail('hog-0', 'main'), 'allocating\n');
  },
);

test.runIf(can('pids'))(
  'kill() leaves nothing of a workload that daemonized inside a pid namespace',
  async (t) => {
    const { cgroups, logs } = await fixture(t);
    t.log(describeCgroupLayout(cgroups.layout));
    const cgroup = await cgroups.create('daemon-0', { pids: 50 });
    const { pid, exited } = run(t, {
      file: '/bin/sh',
      argv: ['sh', '-c', `setsid sh -c 'sleep 1000 & echo daemon up; exit' & wait; exec sleep 1000`],
      env: [],
      namespaces: ['pid', 'mount', 'uts', 'ipc'],
      cgroup: cgroup.spawnTarget,
      logFile: await logs.prepareRun('daemon-0', 'main'),
    });
    // Settled: orrery-init (pid), the workload exec'd into sleep, and the daemon's sleep, reparented
    // to orrery-init when its session leader exited.
    const tree = await eventually('init, the workload and the daemon, all sleeping', async () => {
      if ((await logs.tail('daemon-0', 'main')) !== 'daemon up\n') return undefined;
      const found = await processTree(pid);
      const below = found.comms.filter((_, i) => found.pids[i] !== pid);
      return below.length === 2 && below.every((c) => c === 'sleep') ? found.pids : undefined;
    });
    // Every hierarchy holding the replica (v2 by CLONE_INTO_CGROUP, each joined v1 controller by
    // the child's own write before exec) lists exactly that tree, on any layout.
    t.true(cgroup.plan.dirs.length > 0);
    for (const dir of cgroup.plan.dirs) {
      const listed = (await readFile(join(dir, 'cgroup.procs'), 'utf8'))
        .split('\n')
        .filter((line) => line !== '')
        .map(Number)
        .sort((a, b) => a - b);
      t.deepEqual(listed, tree, `${dir}/cgroup.procs lists the workload's process tree`);
    }
    t.deepEqual(await cgroup.pids(), tree);
    await cgroup.kill();
    t.deepEqual(await cgroup.pids(), []);
    t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
    for (const p of tree) t.false(await alive(p), `pid ${p} of the tree is gone`);
    await cgroup.remove();
    t.deepEqual(await cgroups.list(), []);
  },
);
