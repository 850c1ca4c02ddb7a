// Isolation: a pid namespace with orrery-init as PID 1 (signals forwarded, real exit reported),
// a private /proc, a hostname of its own, and a network namespace with only a working loopback.
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import {
  type ExitStatus,
  readExitStatusFile,
  SpawnError,
  type SpawnRequest,
  sendSignal,
  spawn,
  watchExit,
} from '../../node-runtime/native/index.ts';
import { minimalRoot, ROOT_MARKER } from '../helpers/workload-root.ts';
import { runNative, tempDir } from './fixtures/native-run.ts';

const isolated = ['pid', 'mount', 'uts', 'ipc'] as const;

function run(t: ExecutionContext, req: Partial<SpawnRequest> & Pick<SpawnRequest, 'file' | 'argv'>) {
  return runNative(
    t,
    { namespaces: [...isolated], ...req },
    { exitStatusFile: true, prefix: 'orrery-native-ns-' },
  );
}

async function until(t: ExecutionContext, what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) t.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('in a pid namespace the workload sees itself as pid 2 under orrery-init, with its own hostname and /proc', async (t) => {
  const { child, exited, log } = run(t, {
    file: '/bin/sh',
    // PID 1 execs orrery-init while the workload execs (both right after the clone), so a fast
    // workload can still see it as the runtime's image for a moment: wait for the exec (bounded).
    argv: [
      'sh',
      '-c',
      'echo pid=$$; hostname; for i in $(seq 200); do [ "$(cat /proc/1/comm)" = orrery-init ] && break; sleep 0.01; done; cat /proc/1/comm; ls /proc | grep -c "^[0-9]"',
    ],
    hostname: 'replica-0',
  });
  t.deepEqual(await exited, { code: 0, signal: null });
  const [pidLine, host, initComm, pidCount] = log().trim().split('\n');
  t.is(pidLine, 'pid=2');
  t.is(host, 'replica-0');
  t.is(initComm, 'orrery-init');
  // init, sh, and the ls/grep of the pipeline: a private /proc shows only this namespace.
  t.true(Number(pidCount) <= 4, `expected only this namespace's processes in /proc, got ${pidCount}`);
  t.true(child.pid > 2, 'the runtime sees the host pid of init');
  t.not(readFileSync('/proc/sys/kernel/hostname', 'utf8').trim(), 'replica-0', 'the host keeps its name');
});

test("under orrery-init neither the workload nor init inherits the runtime's fds, however many it holds", async (t) => {
  // A runtime holds a pidfd per replica: a table this size is what every spawn starts from.
  const held = Array.from({ length: 300 }, () => openSync('/dev/null', 'r'));
  t.teardown(() => {
    for (const fd of held) closeSync(fd);
  });
  const { child, exited, log } = run(t, {
    file: '/bin/sh',
    argv: ['sh', '-c', 'ls /proc/self/fd; sleep 30'],
  });
  await until(t, 'the workload listed its fds', () => log().includes('\n'));
  // 0, 1, 2 and the fd ls opens to read the directory itself.
  t.deepEqual(
    log()
      .trim()
      .split('\n')
      .map(Number)
      .sort((a, b) => a - b),
    [0, 1, 2, 3],
  );
  // init: stdio and its exit status file.
  t.is(readdirSync(`/proc/${child.pid}/fd`).length, 4);
  sendSignal(child.pidfd, 'SIGKILL');
  await exited;
});

test('SIGTERM through sendSignal is forwarded by orrery-init to the workload, which traps it and exits 0', async (t) => {
  const { child, exited, log, exitStatusFile } = run(t, {
    file: '/bin/sh',
    argv: ['sh', '-c', 'trap "echo got-term; exit 0" TERM; echo ready; while :; do sleep 0.02; done'],
    hostname: 'trap',
  });
  await until(t, 'the workload to install its trap', () => log().includes('ready'));
  sendSignal(child.pidfd, 'SIGTERM');
  t.deepEqual(await exited, { code: 0, signal: null });
  t.true(log().includes('got-term'));
  t.is(readFileSync(exitStatusFile, 'utf8'), 'exited 0\n');
});

test('a workload killed by a signal inside the namespace is reported as that signal, via the exit status file', async (t) => {
  const { exited, exitStatusFile } = run(t, {
    file: '/bin/sh',
    argv: ['sh', '-c', 'kill -USR1 $$; sleep 5'],
  });
  t.deepEqual(await exited, { code: null, signal: 'SIGUSR1' });
  t.is(readFileSync(exitStatusFile, 'utf8'), 'killed SIGUSR1\n');
  t.deepEqual(readExitStatusFile(exitStatusFile), { code: null, signal: 'SIGUSR1' });
});

test('SIGINT is forwarded and kills a workload that does not trap it, reported as SIGINT', async (t) => {
  const { child, exited, log } = run(t, {
    file: '/bin/sh',
    argv: ['sh', '-c', 'echo ready; exec sleep 30'],
  });
  await until(t, 'the workload to start', () => log().includes('ready'));
  sendSignal(child.pidfd, 'SIGINT');
  t.deepEqual(await exited, { code: null, signal: 'SIGINT' });
});

test('without an exit status file, init exits 128+N for a workload killed by signal N (documented)', async (t) => {
  const { exited } = run(t, {
    file: '/bin/sh',
    argv: ['sh', '-c', 'kill -USR2 $$'],
    exitStatusFile: undefined,
  });
  t.deepEqual(await exited, { code: 128 + 12, signal: null });
});

test('SIGKILL to init ends the whole namespace and is reported as SIGKILL', async (t) => {
  const { child, exited, log, exitStatusFile } = run(t, {
    file: '/bin/sh',
    argv: ['sh', '-c', 'sleep 30 & echo $! ready; wait'],
  });
  await until(t, 'the workload to start', () => log().includes('ready'));
  sendSignal(child.pidfd, 'SIGKILL');
  t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
  t.is(readFileSync(exitStatusFile, 'utf8'), '', 'init had no chance to write');
});

test('the workload exit code passes through init unchanged', async (t) => {
  const { exited, exitStatusFile } = run(t, { file: '/bin/sh', argv: ['sh', '-c', 'exit 3'] });
  t.deepEqual(await exited, { code: 3, signal: null });
  t.is(readFileSync(exitStatusFile, 'utf8'), 'exited 3\n');
});

test('init reaps orphans: double-forked grandchildren leave no zombie behind', async (t) => {
  // Each "(cmd &)" subshell exits at once, so its background child is re-parented to PID 1.
  const { child, exited, log } = run(t, {
    file: '/bin/sh',
    argv: [
      'sh',
      '-c',
      '(sh -c "exit 0" &); (sh -c "exit 1" &); (sleep 0.05 &); sleep 0.3; ' +
        'cat /proc/[0-9]*/stat | cut -d" " -f3 | grep -c Z; echo checked; sleep 30',
    ],
  });
  await until(t, 'the check to run', () => log().includes('checked'));
  t.is(log().split('\n')[0], '0', 'no zombie in the namespace');
  sendSignal(child.pidfd, 'SIGKILL');
  await exited;
});

test('exec errors of the workload are relayed by init through the same pipe', (t) => {
  const dir = tempDir(t);
  const err = t.throws(
    () =>
      spawn({
        file: '/no/such/workload',
        argv: ['w'],
        env: [],
        namespaces: [...isolated],
        logFile: join(dir, 'l'),
        exitStatusFile: join(dir, 's'),
      }),
    { instanceOf: SpawnError },
  );
  t.is(err?.message, 'ExecFailed: ENOENT /no/such/workload');
  t.is(err?.step, 'execve');
});

test('the environment passes through init exactly as given', async (t) => {
  const { exited, log } = run(t, { file: '/usr/bin/env', argv: ['env'], env: ['ONLY=this'] });
  t.deepEqual(await exited, { code: 0, signal: null });
  t.is(log(), 'ONLY=this\n');
});

test('init: false in a pid namespace runs the workload itself as PID 1', async (t) => {
  const { exited, log } = run(t, { file: '/bin/sh', argv: ['sh', '-c', 'echo $$'], init: false });
  t.deepEqual(await exited, { code: 0, signal: null });
  t.is(log(), '1\n');
});

test('a net namespace has only lo, and lo is up (a TCP connection to 127.0.0.1 works inside)', async (t) => {
  const script = `
    const net = require('node:net');
    const ifaces = require('node:fs').readFileSync('/proc/net/dev', 'utf8').split('\\n').slice(2)
      .map((l) => l.split(':')[0].trim()).filter(Boolean);
    const srv = net.createServer((s) => s.end('pong')).listen(0, '127.0.0.1', () => {
      net.connect(srv.address().port, '127.0.0.1').on('data', (d) => {
        console.log(JSON.stringify({ ifaces, reply: String(d) }));
        process.exit(0);
      });
    });`;
  const { exited, log } = run(t, {
    file: process.execPath,
    argv: ['node', '-e', script],
    namespaces: ['net'],
    exitStatusFile: undefined,
  });
  t.deepEqual(await exited, { code: 0, signal: null }, log());
  t.deepEqual(JSON.parse(log()), { ifaces: ['lo'], reply: 'pong' });
});

test('a workload that exits before orrery-init is ready is still reported (no lost SIGCHLD)', async (t) => {
  const dir = tempDir(t, 'orrery-native-ns-');
  const exits: Promise<ExitStatus>[] = [];
  for (let i = 0; i < 50; i++) {
    const child = spawn({
      file: '/bin/true',
      argv: ['true'],
      env: [],
      namespaces: [...isolated],
      logFile: join(dir, 'log'),
      exitStatusFile: join(dir, `status-${i}`),
    });
    exits.push(new Promise((resolve) => watchExit(child.pidfd, resolve)));
  }
  const all = await Promise.all(exits);
  t.true(all.every((s) => s.code === 0 && s.signal === null));
});

test('a stale record in the exit status file is replaced by a fresh, empty file at spawn', async (t) => {
  const dir = tempDir(t, 'orrery-native-ns-');
  // On the temp dir's filesystem (unlinked and made afresh) and on tmpfs (truncated), by the child
  // (no uid) and by the parent (uid: made before the clone).
  const shm = mkdtempSync(join('/dev/shm', 'orrery-native-ns-'));
  t.teardown(() => rmSync(shm, { recursive: true, force: true }));
  for (const [exitStatusFile, uid] of [
    [join(dir, 'status'), undefined],
    [join(dir, 'status'), 65534],
    [join(shm, 'status'), undefined],
    [join(shm, 'status'), 65534],
  ] as const) {
    writeFileSync(exitStatusFile, 'exited 99\n');
    const child = spawn({
      file: '/bin/sleep',
      argv: ['sleep', '30'],
      env: [],
      namespaces: [...isolated],
      logFile: join(dir, 'log'),
      exitStatusFile,
      ...(uid === undefined ? {} : { uid, gid: uid }),
    });
    const exited = new Promise<ExitStatus>((resolve) => watchExit(child.pidfd, resolve));
    t.is(readFileSync(exitStatusFile, 'utf8'), '', `fresh file (uid ${uid})`);
    sendSignal(child.pidfd, 'SIGTERM');
    t.deepEqual(await exited, { code: null, signal: 'SIGTERM' });
    t.is(readFileSync(exitStatusFile, 'utf8'), 'killed SIGTERM\n');
  }
});

test('an exit status file that cannot be created fails the spawn with its step and path, and leaves no process', (t) => {
  const dir = tempDir(t, 'orrery-native-ns-');
  const exitStatusFile = join(dir, 'no-such-dir', 'status');
  const marker = `${31 + (process.pid % 1000) / 1000}`; // sleep's argument, unique to this run
  for (const uid of [undefined, 65534]) {
    const err = t.throws(
      () =>
        spawn({
          file: '/bin/sleep',
          argv: ['sleep', marker],
          env: [],
          namespaces: [...isolated],
          logFile: join(dir, 'log'),
          exitStatusFile,
          ...(uid === undefined ? {} : { uid, gid: uid }),
        }),
      { instanceOf: SpawnError },
    );
    t.is(err?.message, `SpawnFailed: ENOENT at exit-status-file ${exitStatusFile}`);
  }
  // Without uid the workload was already cloned when the child found out: killed and reaped.
  const left = readdirSync('/proc').filter((pid) => {
    try {
      return /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8') === `sleep\0${marker}\0`;
    } catch {
      return false;
    }
  });
  t.deepEqual(left, []);
});

test('root: the process is pivoted into it with a fresh /proc, and orrery-init still records its exit', async (t) => {
  const root = await minimalRoot(tempDir(t, 'orrery-native-root-'));
  const { exited, log, exitStatusFile } = run(t, {
    file: '/usr/bin/sh',
    // No user namespace: the status file's path is the runtime's, which the root does not have,
    // so the parent makes it before the clone rather than the child after the pivot.
    argv: ['sh', '-c', 'cat /root-marker; echo /*; echo pid=$$; exit 7'],
    root,
  });
  t.deepEqual(await exited, { code: 7, signal: null });
  t.is(log(), `${ROOT_MARKER}\n/dev /lib /lib64 /proc /root-marker /usr\npid=2\n`);
  t.deepEqual(readExitStatusFile(exitStatusFile), { code: 7, signal: null });
});

test('root is refused without a mount namespace, and must be absolute', (t) => {
  t.throws(
    () =>
      spawn({
        file: '/bin/true',
        argv: ['true'],
        env: [],
        namespaces: [],
        logFile: '/dev/null',
        root: '/tmp',
      }),
    {
      message: "SpawnRequest.root needs 'mount' in namespaces (it would move the runtime's own root)",
    },
  );
  t.throws(
    () =>
      spawn({
        file: '/bin/true',
        argv: ['true'],
        env: [],
        namespaces: ['mount'],
        logFile: '/dev/null',
        root: 'tmp',
      }),
    { message: /SpawnRequest.root must be an absolute path/ },
  );
});
