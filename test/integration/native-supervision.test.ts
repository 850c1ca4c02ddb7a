// Supervision through pidfds: exits of processes that are not our children (re-adoption) come
// from PIDFD_INFO_EXIT, Node's own child_process keeps receiving its exits (no SIGCHLD handler,
// no waitpid(-1) in the addon), and exit watches hold the event loop open only while active.
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

/** A process re-parented away from us (double fork); resolves once its starter shell exited. */
async function orphan(t: ExecutionContext, body: string): Promise<{ pid: number; goFile: string }> {
  const dir = tempDir(t);
  const pidFile = join(dir, 'orphan.pid');
  const goFile = join(dir, 'go');
  const shell = spawn({
    file: '/bin/sh',
    argv: ['sh', '-c', `(while [ ! -e ${goFile} ]; do sleep 0.01; done; ${body}) & echo $! > ${pidFile}`],
    env: [],
    namespaces: [],
    logFile: join(dir, 'log'),
  });
  t.deepEqual(await exitOf(shell.pidfd), { code: 0, signal: null });
  const pid = Number(readFileSync(pidFile, 'utf8'));
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  t.not(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]), process.pid, 'not our child');
  return { pid, goFile };
}

test('watchExit of a non-child reports its exit code at once, while it is still a zombie', async (t) => {
  const { pid, goFile } = await orphan(t, 'exit 7');
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
  // The host's init reaps orphans lazily here, so the zombie's stat line is what answers first;
  // if it had been reaped already, PIDFD_INFO_EXIT would (next test).
  t.true(detail.source === 'zombie-stat' || detail.source === 'pidfd-info', detail.source);
});

test('pidfdOpen + watchExit of a non-child that was already reaped reports its exit via PIDFD_INFO_EXIT', async (t) => {
  const { pid, goFile } = await orphan(t, 'exit 9');
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
  t.deepEqual(status, { code: 9, signal: null });
  t.is(detail.source, 'pidfd-info');
});

test('a non-child killed by a signal is reported with that signal', async (t) => {
  const dir = tempDir(t);
  const pidFile = join(dir, 'pid');
  const shell = spawn({
    file: '/bin/sh',
    argv: ['sh', '-c', `sleep 30 & echo $! > ${pidFile}`],
    env: [],
    namespaces: [],
    logFile: join(dir, 'log'),
  });
  await exitOf(shell.pidfd);
  const pidfd = pidfdOpen(Number(readFileSync(pidFile, 'utf8')));
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
