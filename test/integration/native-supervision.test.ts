// Supervision through pidfds: exits of processes that are not our children (re-adoption) come
// from the zombie's stat line or, once reaped, PIDFD_INFO_EXIT (Linux 6.15+); Node's own
// child_process keeps receiving its exits (no SIGCHLD handler, no waitpid(-1) in the addon), and
// exit watches hold the event loop open only while active.
import { spawn as cpSpawn, execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test, { type ExecutionContext } from 'ava';
import {
  closeFd,
  type ExitDetail,
  type ExitStatus,
  pidfdOpen,
  processStartTime,
  SpawnError,
  sendSignal,
  spawn,
  watchExit,
} from '../../node-runtime/native/index.ts';
import { host } from '../helpers/features.ts';

const nativeIndex = fileURLToPath(new URL('../../node-runtime/native/index.ts', import.meta.url));

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'orrery-native-sup-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function exitOf(pidfd: number): Promise<ExitStatus> {
  return new Promise((resolve) => watchExit(pidfd, resolve));
}

async function until(t: ExecutionContext, what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) t.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * A process that is not our child, held until `goFile` exists, then running `body`. By default
 * it is re-parented away from us (double fork: its starter shell has exited) and reaped by
 * whoever adopts it (the host's init or a subreaper), as fast or as lazily as that one reaps.
 * With `parentStays` its parent is a shell that then execs `sleep` and never reaps it, so its
 * zombie stays until the test ends, however quickly the host reaps orphans.
 */
async function nonChild(
  t: ExecutionContext,
  body: string,
  { parentStays = false } = {},
): Promise<{ pid: number; goFile: string }> {
  const dir = tempDir(t);
  const pidFile = join(dir, 'orphan.pid');
  const goFile = join(dir, 'go');
  const start = `(while [ ! -e ${goFile} ]; do sleep 0.01; done; ${body}) & echo $! > ${pidFile}`;
  const shell = spawn({
    file: '/bin/sh',
    argv: ['sh', '-c', parentStays ? `${start}; exec sleep 1000` : start],
    env: [],
    namespaces: [],
    logFile: join(dir, 'log'),
  });
  const shellExited = exitOf(shell.pidfd);
  if (parentStays) {
    t.teardown(async () => {
      sendSignal(shell.pidfd, 'SIGKILL');
      await shellExited;
    });
    await until(t, 'the starter to write the pid', () => {
      try {
        return readFileSync(pidFile, 'utf8').endsWith('\n');
      } catch {
        return false;
      }
    });
  } else {
    t.deepEqual(await shellExited, { code: 0, signal: null });
  }
  const pid = Number(readFileSync(pidFile, 'utf8'));
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  t.not(ppid, process.pid, 'not our child');
  if (parentStays) t.is(ppid, shell.pid, 'the starter (now sleep) is its parent');
  return { pid, goFile };
}

test('watchExit of a non-child reports its exit code at once, while it is still a zombie', async (t) => {
  const { pid, goFile } = await nonChild(t, 'exit 7', { parentStays: true });
  const pidfd = pidfdOpen(pid);
  let left = true;
  t.teardown(() => {
    if (left) sendSignal(pidfd, 'SIGKILL');
  });
  const exited = new Promise<[ExitStatus, ExitDetail]>((resolve) =>
    watchExit(pidfd, (s, d) => resolve([s, d])),
  );
  writeFileSync(goFile, '');
  const [status, detail] = await exited;
  left = false;
  t.deepEqual(status, { code: 7, signal: null });
  // Its parent never reaps it, so the zombie's stat line answers (on any kernel; PIDFD_INFO_EXIT
  // only has the status once the task is reaped, next test).
  t.true(detail.source === 'zombie-stat' || detail.source === 'pidfd-info', detail.source);
});

// PIDFD_INFO_EXIT (Linux 6.15+) keeps the exit status of a reaped process for its pidfd. Without
// it, once the real parent has reaped the process its status is gone: the watch reports the exit
// with source 'unknown' and no code or signal (immediately from 6.13, where PIDFD_GET_INFO answers
// ESRCH; after its 30 s of retries before, where the ioctl does not exist).
const reapedTitle = host.native.pidfdInfoExit
  ? 'pidfdOpen + watchExit of a non-child that was already reaped reports its exit via PIDFD_INFO_EXIT'
  : 'pidfdOpen + watchExit of a non-child that was already reaped reports an unknown exit (no PIDFD_INFO_EXIT before Linux 6.15)';

test(reapedTitle, async (t) => {
  t.log(`kernel ${host.kernelRelease}, PIDFD_INFO_EXIT ${host.native.pidfdInfoExit ? 'yes' : 'no'}`);
  const { pid, goFile } = await nonChild(t, 'exit 9');
  const pidfd = pidfdOpen(pid);
  let left = true;
  t.teardown(() => {
    if (left) {
      sendSignal(pidfd, 'SIGKILL');
      closeFd(pidfd);
    }
  });
  writeFileSync(goFile, '');
  // Wait until its real parent (init of the host, or a subreaper) has reaped it: /proc/<pid> goes.
  await until(t, 'the orphan to be reaped by its parent', () => processStartTime(pid) === null);
  const exited = new Promise<[ExitStatus, ExitDetail]>((resolve) =>
    watchExit(pidfd, (s, d) => resolve([s, d])),
  );
  const [status, detail] = await exited;
  left = false;
  if (host.native.pidfdInfoExit) {
    t.deepEqual(status, { code: 9, signal: null });
    t.is(detail.source, 'pidfd-info');
  } else {
    t.deepEqual(status, { code: null, signal: null });
    t.is(detail.source, 'unknown');
  }
});

test('a non-child killed by a signal is reported with that signal', async (t) => {
  // Its parent stays and does not reap it: the signal is read from the zombie on any kernel
  // (a host that reaps orphans at once would leave a kernel without PIDFD_INFO_EXIT nothing).
  const { pid } = await nonChild(t, 'exec sleep 30', { parentStays: true });
  const pidfd = pidfdOpen(pid);
  const exited = exitOf(pidfd);
  sendSignal(pidfd, 'SIGTERM');
  t.deepEqual(await exited, { code: null, signal: 'SIGTERM' });
});

test('pidfdOpen of a pid that does not exist throws ESRCH', (t) => {
  const err = t.throws(() => pidfdOpen(2 ** 22 + 1), { instanceOf: SpawnError });
  t.is(err?.code, 'ESRCH');
  t.is(err?.step, 'pidfd_open');
});

test('sendSignal to a process that exited but is not reaped yet is not an error', async (t) => {
  const dir = tempDir(t);
  const child = spawn({
    file: '/bin/true',
    argv: ['true'],
    env: [],
    namespaces: [],
    logFile: join(dir, 'log'),
  });
  await until(t, 'the child to become a zombie', () =>
    readFileSync(`/proc/${child.pid}/stat`, 'utf8').includes(') Z '),
  );
  t.notThrows(() => sendSignal(child.pidfd, 'SIGTERM'));
  t.deepEqual(await exitOf(child.pidfd), { code: 0, signal: null });
});

test("Node's child_process still receives every exit while the addon runs and reaps its own processes", async (t) => {
  const dir = tempDir(t);
  const ours: Promise<ExitStatus>[] = [];
  const theirs: Promise<number | null>[] = [];
  for (let i = 0; i < 10; i++) {
    const child = spawn({
      file: '/bin/sh',
      argv: ['sh', '-c', `exit ${i}`],
      env: [],
      namespaces: i % 2 ? ['pid', 'mount'] : [],
      logFile: join(dir, `ours-${i}.log`),
    });
    ours.push(exitOf(child.pidfd));
    const cp = cpSpawn('/bin/sh', ['-c', `exit ${i + 10}`], { stdio: 'ignore' });
    theirs.push(new Promise((resolve) => cp.on('exit', (code) => resolve(code))));
  }
  const [ourExits, theirExits] = await Promise.all([Promise.all(ours), Promise.all(theirs)]);
  t.deepEqual(
    ourExits.map((s) => s.code),
    [...Array(10).keys()],
  );
  t.deepEqual(
    theirExits,
    [...Array(10).keys()].map((i) => i + 10),
  );
});

function runScript(t: ExecutionContext, body: string): Promise<{ stdout: string; ms: number }> {
  const dir = tempDir(t);
  const file = join(dir, 'script.ts');
  writeFileSync(
    file,
    `import * as native from ${JSON.stringify(nativeIndex)};\nconst log = ${JSON.stringify(join(dir, 'log'))};\n${body}`,
  );
  const start = Date.now();
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [file], { timeout: 30_000 }, (err, stdout) => {
      if (err) reject(err);
      else resolve({ stdout, ms: Date.now() - start });
    });
  });
}

test('an active watch keeps Node alive until the exit is reported, then lets it exit', async (t) => {
  const { stdout } = await runScript(
    t,
    `const c = native.spawn({ file: '/bin/sleep', argv: ['sleep', '0.3'], env: [], namespaces: [], logFile: log });
     native.watchExit(c.pidfd, (s) => console.log('exit', JSON.stringify(s)));`,
  );
  t.is(stdout, 'exit {"code":0,"signal":null}\n');
});

test('a cancelled watch no longer holds the event loop and never calls back', async (t) => {
  const { stdout } = await runScript(
    t,
    `const c = native.spawn({ file: '/bin/sleep', argv: ['sleep', '30'], env: [], namespaces: [], logFile: log });
     const cancel = native.watchExit(c.pidfd, () => console.log('called'));
     cancel();
     native.sendSignal(c.pidfd, 'SIGKILL');
     native.closeFd(c.pidfd);
     console.log('cancelled');`,
  );
  t.is(stdout, 'cancelled\n');
});

test('closeFd closes a pidfd (a second close is EBADF)', (t) => {
  const fd = pidfdOpen(process.pid);
  closeFd(fd);
  const err = t.throws(() => closeFd(fd), { instanceOf: SpawnError });
  t.is(err?.code, 'EBADF');
});
