import { spawn } from 'node:child_process';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { USER_NAMESPACE_FIRST_HOST_ID } from '../../node-runtime/engine.ts';
import { USER_NAMESPACE_SIZE } from '../../node-runtime/supervisor/spec.ts';
import {
  isAlive,
  newRuntime,
  nextEvent,
  readLog,
  recordEvents,
  replica,
  runtimeDirs,
  waitFor,
} from '../helpers/engine-harness.ts';
import { host as machine } from '../helpers/features.ts';

/** Where runtimes on this machine claim their user namespace ranges (the engine's default). */
const CLAIM_DIR = '/run/orrery/userns';

const hostScript = fileURLToPath(new URL('./fixtures/engine-host.ts', import.meta.url));

test('runtime killed with SIGKILL while 20 replicas run: a new one adopts all 20, same pids, no restart', async (t) => {
  const dirs = await runtimeDirs(t);
  const host = spawn(
    process.execPath,
    [hostScript, dirs.stateDir, dirs.logDir, dirs.parent, '20', 'pid,mount'],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  t.teardown(() => {
    if (host.exitCode === null && host.signalCode === null) host.kill('SIGKILL');
  });
  const first = await new Promise<{ pids: Record<string, number> }>((resolve, reject) => {
    createInterface({ input: host.stdout }).once('line', (line) => resolve(JSON.parse(line)));
    host.once('exit', (code) => reject(new Error(`engine-host exited early with ${code}`)));
  });
  t.is(Object.keys(first.pids).length, 20);

  const gone = new Promise((r) => host.once('exit', r));
  host.kill('SIGKILL');
  await gone;

  const rt = newRuntime(dirs);
  t.teardown(async () => {
    await rt.stopAll({ graceSeconds: 0 }).catch(() => {});
    await rt.close();
  });
  const events = recordEvents(rt);
  const began = performance.now();
  await rt.start();
  t.log(`re-adopted 20 replicas in ${(performance.now() - began).toFixed(1)} ms`);

  t.is(events.filter((e) => e.type === 'adopted').length, 20);
  t.is(events.filter((e) => e.type === 'started').length, 0, 'nothing was restarted');
  for (const [id, pid] of Object.entries(first.pids)) {
    const s = rt.status(id);
    t.is(s.processes[0]?.pid, pid, `${id} kept its pid`);
    t.is(s.processes[0]?.restarts, 0);
    t.is(s.phase, 'Running');
  }

  // Supervision works on adopted processes: a later SIGKILL is seen and the process restarted.
  const [victimId, victimPid] = Object.entries(first.pids)[0] as [string, number];
  // Without PIDFD_INFO_EXIT, a kernel before 6.13 (no PIDFD_GET_INFO at all) retries for 30 s
  // before it reports an exit it cannot read; allow for that.
  const restarted = nextEvent<'started'>(
    rt,
    (e) => e.type === 'started' && e.replica === victimId,
    machine.native.pidfdInfoExit ? 10_000 : 45_000,
  );
  process.kill(victimPid, 'SIGKILL');
  const e = await restarted;
  t.not(e.pid, victimPid);
  t.is(rt.status(victimId).processes[0]?.restarts, 1);
  const exit = events.find((x) => x.type === 'exited' && x.replica === victimId);
  t.truthy(exit, 'the exit of the adopted process was reported');
  const status = exit?.type === 'exited' ? { code: exit.code, signal: exit.signal } : undefined;
  // Not our child any more: the status comes from the zombie's stat line while the process that
  // adopted it (the host's init or a subreaper) has not reaped it, and once it has, from
  // PIDFD_INFO_EXIT (Linux 6.15+). Without PIDFD_INFO_EXIT a quick reaper leaves it unknown.
  if (machine.native.pidfdInfoExit) t.deepEqual(status, { code: null, signal: 'SIGKILL' });
  else
    t.true(
      status?.signal === 'SIGKILL' || (status?.code === null && status.signal === null),
      `SIGKILL, or unknown on a kernel without PIDFD_INFO_EXIT: ${JSON.stringify(status)}`,
    );
});

test('logs survive a runtime restart: the adopted process keeps appending to the same file', async (t) => {
  const dirs = await runtimeDirs(t);
  const spec = replica([
    { command: ['sh', '-c', 'i=0; while :; do echo "line $i"; i=$((i+1)); sleep 0.05; done'] },
  ]);

  const rt1 = newRuntime(dirs);
  t.teardown(() => rt1.close());
  await rt1.start();
  const pid = (await rt1.run(spec)).processes[0]?.pid;
  await waitFor(async () => (await readLog(dirs, spec.id, 'p0')).includes('line 2'), 5000, 'first lines');
  await rt1.close();
  const linesBefore = (await readLog(dirs, spec.id, 'p0')).trim().split('\n').length;

  const rt2 = newRuntime(dirs);
  t.teardown(async () => {
    await rt2.stopAll({ graceSeconds: 0 }).catch(() => {});
    await rt2.close();
  });
  await rt2.start();
  t.is(rt2.status(spec.id).processes[0]?.pid, pid, 'adopted, not restarted');
  // New lines appended after the history from before the restart: the same file goes on.
  await waitFor(
    async () => (await readLog(dirs, spec.id, 'p0')).trim().split('\n').length > linesBefore,
    10_000,
    'new lines after the restart',
  );
  const log = await readLog(dirs, spec.id, 'p0');
  t.true(log.startsWith('line 0\n'), 'history from before the restart is there');
  t.is(await rt2.logs.tail(spec.id, 'p0', { lines: 1 }).then((s) => /^line \d+\n?$/.test(s)), true);
});

test('a process the state record missed (crash between spawn and write) is found in the cgroup, not started twice', async (t) => {
  const dirs = await runtimeDirs(t);
  const spec = replica([{}], { isolation: { namespaces: ['pid', 'mount'] } });
  const rt1 = newRuntime(dirs);
  t.teardown(() => rt1.close());
  await rt1.start();
  const pid = (await rt1.run(spec)).processes[0]?.pid;
  await rt1.close();
  // Rewrite the record as the runtime would have left it had it died right after the spawn.
  const file = path.join(dirs.stateDir, 'replicas', `${spec.id}.json`);
  const record = JSON.parse(await readFile(file, 'utf8'));
  Object.assign(record.processes[0], { pid: null, startTime: null, state: 'Waiting' });
  await writeFile(file, JSON.stringify(record));

  const rt2 = newRuntime(dirs);
  t.teardown(async () => {
    await rt2.stopAll({ graceSeconds: 0 }).catch(() => {});
    await rt2.close();
  });
  const events = recordEvents(rt2);
  // start() resolves once every replica is adopted, or queued for a start when its process was
  // not found: the same pid right after it means found, and so never started twice.
  await rt2.start();
  t.is(rt2.status(spec.id).processes[0]?.pid, pid);
  t.is(events.filter((e) => e.type === 'started').length, 0);
  t.is(events.filter((e) => e.type === 'adopted').length, 1);
});

test('a process that died while no runtime watched is reported with its real status and restarted by policy', async (t) => {
  const dirs = await runtimeDirs(t);
  // With a pid namespace: orrery-init is the process we watch; we kill the workload under it.
  const spec = replica([{ command: ['sleep', '1000'] }], { isolation: { namespaces: ['pid', 'mount'] } });
  const rt1 = newRuntime(dirs);
  t.teardown(() => rt1.close());
  await rt1.start();
  const initPid = (await rt1.run(spec)).processes[0]?.pid as number;
  await rt1.close();

  const children = await waitForChildren(initPid);
  process.kill(children[0] as number, 'SIGKILL');
  await waitFor(async () => !(await isAlive(initPid)), 5000, 'init to exit');

  const rt2 = newRuntime(dirs);
  t.teardown(async () => {
    await rt2.stopAll({ graceSeconds: 0 }).catch(() => {});
    await rt2.close();
  });
  const events = recordEvents(rt2);
  const restarted = nextEvent<'started'>(rt2, (e) => e.type === 'started' && e.replica === spec.id);
  await rt2.start();
  const e = await restarted;
  t.not(e.pid, initPid);
  // orrery-init is still a child of this process (rt1 ran here): waitid(P_PIDFD) reaps it, or,
  // were it gone, the adoption reads its record. Neither needs PIDFD_INFO_EXIT.
  const exit = events.find((x) => x.type === 'exited');
  t.is(
    exit?.type === 'exited' ? exit.signal : undefined,
    'SIGKILL',
    "the workload's own death, through orrery-init's record",
  );
  t.is(rt2.status(spec.id).processes[0]?.restarts, 1);
});

async function waitForChildren(pid: number): Promise<number[]> {
  let kids: number[] = [];
  await waitFor(
    async () => {
      const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
      kids = text.trim().split(/\s+/).filter(Boolean).map(Number);
      return kids.length > 0;
    },
    5000,
    'the workload under orrery-init',
  );
  return kids;
}

test('a replica in CrashLoopBackOff when the runtime restarts keeps backing off, then starts again', async (t) => {
  const dirs = await runtimeDirs(t);
  // A 3 s backoff: the runtime restarts well within it (~0.1 s; a hang bound, not a speed).
  const spec = replica([{ command: ['sh', '-c', 'sleep 0.05; exit 1'] }], {
    supervision: {
      strategy: 'one-for-one',
      maxRestarts: 0,
      periodSeconds: 10,
      backoff: { initialSeconds: 3, maxSeconds: 3 },
    },
  });
  const rt1 = newRuntime(dirs);
  t.teardown(() => rt1.close());
  await rt1.start();
  const backoff = nextEvent(rt1, (e) => e.type === 'backoff' && e.replica === spec.id);
  await rt1.run(spec);
  await backoff;
  const until = rt1.status(spec.id).backoffUntil as string;
  await rt1.close();

  const rt2 = newRuntime(dirs);
  t.teardown(async () => {
    await rt2.stopAll({ graceSeconds: 0 }).catch(() => {});
    await rt2.close();
  });
  const started = nextEvent<'started'>(rt2, (e) => e.type === 'started' && e.replica === spec.id, 30_000);
  await rt2.start();
  t.is(rt2.status(spec.id).phase, 'CrashLoopBackOff');
  t.is(rt2.status(spec.id).backoffUntil, until, 'the backoff the first runtime recorded');
  const again = await started;
  // Not before the recorded backoff ran out (5 ms of slack for Node's millisecond timers).
  t.true(Date.parse(again.at) >= Date.parse(until) - 5, `started at ${again.at}, backoff until ${until}`);
  t.is(rt2.status(spec.id).processes[0]?.restarts, 1);
});

/** The host uid the process's user namespace maps 0 to (/proc/<pid>/uid_map: "0 <host> <count>"). */
async function hostRangeOf(pid: number): Promise<number> {
  const [inside, outside] = (await readFile(`/proc/${pid}/uid_map`, 'utf8')).trim().split(/\s+/).map(Number);
  if (inside !== 0 || outside === undefined) throw new Error(`pid ${pid} has no user namespace range`);
  return outside;
}

test('user namespace ranges survive a runtime killed with SIGKILL: adopted replicas keep theirs, restarts reuse them, a new replica gets another', async (t) => {
  const dirs = await runtimeDirs(t);
  const host = spawn(
    process.execPath,
    [hostScript, dirs.stateDir, dirs.logDir, dirs.parent, '3', 'pid,mount'],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  t.teardown(() => {
    if (host.exitCode === null && host.signalCode === null) host.kill('SIGKILL');
  });
  const first = await new Promise<{ pids: Record<string, number> }>((resolve, reject) => {
    createInterface({ input: host.stdout }).once('line', (line) => resolve(JSON.parse(line)));
    host.once('exit', (code) => reject(new Error(`engine-host exited early with ${code}`)));
  });
  const ranges = new Map<string, number>();
  for (const [id, pid] of Object.entries(first.pids)) ranges.set(id, await hostRangeOf(pid));
  t.is(new Set(ranges.values()).size, 3, 'three replicas, three ranges');
  const gone = new Promise((r) => host.once('exit', r));
  host.kill('SIGKILL');
  await gone;

  // The claims of the adopted ranges: one lost while no runtime watched, the others kept.
  const claimOf = (id: string) =>
    path.join(
      CLAIM_DIR,
      String(((ranges.get(id) as number) - USER_NAMESPACE_FIRST_HOST_ID) / USER_NAMESPACE_SIZE),
    );
  const [lostId, ...keptIds] = Object.keys(first.pids) as [string, ...string[]];
  await rm(claimOf(lostId));
  const keptBefore = await Promise.all(keptIds.map(async (id) => (await stat(claimOf(id))).mtimeMs));

  const rt = newRuntime(dirs);
  t.teardown(async () => {
    await rt.stopAll({ graceSeconds: 0 }).catch(() => {});
    await rt.close();
  });
  await rt.start();
  // Re-adoption claims the lost one again, and leaves the ones that still name their replica alone.
  t.like(JSON.parse(await readFile(claimOf(lostId), 'utf8')), {
    stateDir: path.resolve(dirs.stateDir),
    id: lostId,
  });
  t.deepEqual(
    await Promise.all(keptIds.map(async (id) => (await stat(claimOf(id))).mtimeMs)),
    keptBefore,
    'claims already held are not written again',
  );
  // A new replica must not get the ids of one that kept running while no runtime watched.
  const fresh = replica([{ command: ['sleep', '1000'] }], { isolation: { namespaces: ['pid'] } });
  const freshPid = (await rt.run(fresh)).processes[0]?.pid as number;
  t.false(
    [...ranges.values()].includes(await hostRangeOf(freshPid)),
    'the new replica has a range of its own',
  );

  // A restart of an adopted process runs in its replica's range again.
  const [victimId, victimPid] = Object.entries(first.pids)[0] as [string, number];
  const restarted = nextEvent<'started'>(
    rt,
    (e) => e.type === 'started' && e.replica === victimId,
    machine.native.pidfdInfoExit ? 10_000 : 45_000,
  );
  process.kill(victimPid, 'SIGKILL');
  const e = await restarted;
  t.is(await hostRangeOf(e.pid as number), ranges.get(victimId) as number);
});
