// The cgroups, the logs and the native spawn together: a child placed by the addon with the
// manager's spawnTarget (CLONE_INTO_CGROUP into the v2 directory, "0" written to every v1
// `tasks` file before exec), its output in the LogStore's file. cgroups-manager.test.ts covers the
// same behaviour without the addon.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import { detectCgroupLayout } from '../../node-runtime/cgroups/detect.ts';
import { CgroupManager } from '../../node-runtime/cgroups/manager.ts';
import { LogStore } from '../../node-runtime/logs/store.ts';
import {
  type ExitStatus,
  type SpawnRequest,
  sendSignal,
  spawn,
  watchExit,
} from '../../node-runtime/native/index.ts';
import { watched } from './fixtures/native-run.ts';

async function fixture(t: ExecutionContext) {
  const cgroups = new CgroupManager({
    layout: detectCgroupLayout(),
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

test('a workload spawned into the replica cgroup is OOM-killed at its limit and reported as such', async (t) => {
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
});

test('kill() leaves nothing of a workload that daemonized inside a pid namespace', async (t) => {
  const { cgroups, logs } = await fixture(t);
  const cgroup = await cgroups.create('daemon-0', { pids: 50 });
  const { pid, exited } = run(t, {
    file: '/bin/sh',
    argv: ['sh', '-c', `setsid sh -c 'sleep 1000 & echo daemon up; exit' & wait; exec sleep 1000`],
    env: [],
    namespaces: ['pid', 'mount', 'uts', 'ipc'],
    cgroup: cgroup.spawnTarget,
    logFile: await logs.prepareRun('daemon-0', 'main'),
  });
  for (let i = 0; i < 500 && (await logs.tail('daemon-0', 'main')) !== 'daemon up\n'; i++) await sleep(5);
  const members = await cgroup.pids();
  t.true(members.includes(pid));
  t.true(members.length >= 3, `init, the workload and the daemon: ${members.join(',')}`);
  for (const file of cgroup.plan.procsFiles) {
    const listed = (await readFile(file, 'utf8'))
      .trim()
      .split('\n')
      .map(Number)
      .sort((a, b) => a - b);
    t.deepEqual(listed, members, `${file} lists the same processes as the v2 cgroup`);
  }
  await cgroup.kill();
  t.deepEqual(await cgroup.pids(), []);
  t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
  await cgroup.remove();
  t.deepEqual(await cgroups.list(), []);
});
