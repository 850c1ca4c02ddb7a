// The native addon starts real processes: exit codes and signals come back through the pidfd,
// exec errors come back as SpawnError naming the step, and the child gets exactly the
// environment, identity and stdio it was asked for.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { kernelAtLeast } from '../../node-runtime/cgroups/detect.ts';
import {
  type ExitStatus,
  kernelFeatures,
  processStartTime,
  SpawnError,
  type SpawnRequest,
  sendSignal,
  spawn,
  watchExit,
} from '../../node-runtime/native/index.ts';
import { host, runs } from '../helpers/features.ts';
import { runNative, tempDir } from './fixtures/native-run.ts';

/** Spawn and watch; teardown SIGKILLs the process if the test did not see it exit. */
function run(t: ExecutionContext, req: Partial<SpawnRequest> & Pick<SpawnRequest, 'file' | 'argv'>) {
  return runNative(t, req);
}

test('a process that exits with a code reports that code', async (t) => {
  const { child, exited } = run(t, { file: '/bin/sh', argv: ['sh', '-c', 'exit 42'] });
  t.true(child.pid > 0);
  t.true(child.pidfd > 2);
  t.deepEqual(await exited, { code: 42, signal: null });
});

test('a process killed by a signal reports the signal and no code', async (t) => {
  const { exited } = run(t, { file: '/bin/sh', argv: ['sh', '-c', 'kill -TERM $$; sleep 5'] });
  t.deepEqual(await exited, { code: null, signal: 'SIGTERM' });
});

test('sendSignal reaches the process and SIGKILL is reported as such', async (t) => {
  const { child, exited } = run(t, { file: '/bin/sleep', argv: ['sleep', '30'] });
  sendSignal(child.pidfd, 'SIGKILL');
  t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
});

test('a missing executable is an ExecFailed SpawnError with ENOENT at execve', (t) => {
  const err = t.throws(
    () =>
      spawn({ file: '/no/such/bin', argv: ['x'], env: [], namespaces: [], logFile: join(tempDir(t), 'l') }),
    { instanceOf: SpawnError },
  );
  t.is(err?.message, 'ExecFailed: ENOENT /no/such/bin');
  t.is(err?.code, 'ENOENT');
  t.is(err?.errno, 2);
  t.is(err?.step, 'execve');
  t.is(err?.path, '/no/such/bin');
});

test('a file without the execute bit is an ExecFailed SpawnError with EACCES', (t) => {
  const dir = tempDir(t);
  const script = join(dir, 'not-executable.sh');
  writeFileSync(script, '#!/bin/sh\nexit 0\n');
  chmodSync(script, 0o644);
  const err = t.throws(
    () => spawn({ file: script, argv: [script], env: [], namespaces: [], logFile: join(dir, 'l') }),
    {
      instanceOf: SpawnError,
    },
  );
  t.is(err?.code, 'EACCES');
  t.is(err?.step, 'execve');
  t.is(err?.message, `ExecFailed: EACCES ${script}`);
});

test('a failing step before exec names the step and the path', (t) => {
  const err = t.throws(
    () =>
      spawn({
        file: '/bin/true',
        argv: ['true'],
        env: [],
        namespaces: [],
        cwd: '/no/such/dir',
        logFile: join(tempDir(t), 'l'),
      }),
    { instanceOf: SpawnError },
  );
  t.is(err?.step, 'chdir');
  t.is(err?.code, 'ENOENT');
  t.is(err?.path, '/no/such/dir');
});

test('the environment is exactly the one given, and stdout+stderr both reach the log file', async (t) => {
  const { exited, log } = run(t, {
    file: '/usr/bin/env',
    argv: ['env'],
    env: ['A=1', 'B=two words', 'EMPTY='],
  });
  t.deepEqual(await exited, { code: 0, signal: null });
  t.is(log(), 'A=1\nB=two words\nEMPTY=\n');

  const second = run(t, {
    file: '/bin/sh',
    argv: ['sh', '-c', 'echo out; echo err >&2; cat; pwd'],
    cwd: '/tmp',
  });
  t.deepEqual(await second.exited, { code: 0, signal: null });
  t.is(second.log(), 'out\nerr\n/tmp\n', 'stdin is /dev/null (cat sees EOF), cwd applied');
});

test('the log file is appended to, not truncated', async (t) => {
  const dir = tempDir(t);
  const logFile = join(dir, 'app.log');
  writeFileSync(logFile, 'before\n');
  const { exited } = run(t, { file: '/bin/echo', argv: ['echo', 'after'], logFile });
  await exited;
  t.is(readFileSync(logFile, 'utf8'), 'before\nafter\n');
});

test('only stdio survives exec: no fd of the runtime leaks into the workload', async (t) => {
  const { exited, log } = run(t, { file: '/bin/ls', argv: ['ls', '/proc/self/fd'] });
  t.deepEqual(await exited, { code: 0, signal: null });
  // 0, 1, 2 and the fd ls opens to read the directory itself.
  t.deepEqual(log().trim().split('\n').map(Number).sort(), [0, 1, 2, 3]);
});

test('the child runs in its own session with default signal dispositions', async (t) => {
  const { child, exited } = run(t, { file: '/bin/sleep', argv: ['sleep', '30'] });
  const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  t.is(Number(fields[5 - 3]), child.pid, 'session id is its own pid (setsid)');
  t.is(Number(fields[4 - 3]), process.pid, 'parent is the runtime');
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  t.regex(status, /SigBlk:\s+0+\n/);
  t.regex(status, /SigIgn:\s+0+\n/);
  sendSignal(child.pidfd, 'SIGKILL');
  await exited;
});

// setgroups/setgid/setuid to another user need CAP_SETUID and CAP_SETGID.
const asRoot = runs(host.root ? undefined : 'native-spawn: dropping uid/gid to 65534 needs root');

test.runIf(asRoot)('uid/gid are dropped with no supplementary groups and no_new_privs', async (t) => {
  const { child, exited } = run(t, { file: '/bin/sleep', argv: ['sleep', '30'], uid: 65534, gid: 65534 });
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  t.regex(status, /\nUid:\s+65534\s+65534\s+65534\s+65534\n/);
  t.regex(status, /\nGid:\s+65534\s+65534\s+65534\s+65534\n/);
  t.regex(status, /\nGroups:\s*\n/);
  t.regex(status, /\nNoNewPrivs:\s+1\n/);
  sendSignal(child.pidfd, 'SIGKILL');
  t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
});

test('startTime is field 22 of /proc/<pid>/stat and processStartTime is null for a gone pid', async (t) => {
  const { child, exited } = run(t, { file: '/bin/sleep', argv: ['sleep', '30'] });
  t.is(processStartTime(child.pid), child.startTime);
  t.true(child.startTime > 0n);
  sendSignal(child.pidfd, 'SIGKILL');
  await exited;
  t.is(processStartTime(child.pid), null);
});

test('startTime, derived from the clock around clone, equals /proc for every one of 300 spawns', async (t) => {
  // About 1 in 30 spawns straddles a 10 ms tick and takes the /proc fallback inside the addon.
  const dir = tempDir(t);
  for (let i = 0; i < 300; i++) {
    const child = spawn({
      file: '/bin/true',
      argv: ['true'],
      env: [],
      namespaces: [],
      logFile: join(dir, 'l'),
    });
    const fromProc = processStartTime(child.pid);
    await new Promise<ExitStatus>((resolve) => watchExit(child.pidfd, resolve));
    t.is(child.startTime, fromProc ?? -1n, `spawn ${i}`);
  }
});

test('invalid requests are rejected with a message naming the field', (t) => {
  const base = {
    file: '/bin/true',
    argv: ['true'],
    env: [],
    namespaces: [],
    logFile: '/tmp/x.log',
  } as SpawnRequest;
  t.throws(() => spawn({ ...base, file: 'true' }), {
    instanceOf: TypeError,
    message: /SpawnRequest\.file must be an absolute path/,
  });
  t.throws(() => spawn({ ...base, env: ['NOEQUALS'] }), {
    instanceOf: TypeError,
    message: /SpawnRequest\.env\[0\]/,
  });
  t.throws(() => spawn({ ...base, namespaces: ['user' as 'pid'] }), {
    message: /SpawnRequest\.namespaces\[0\]/,
  });
  t.throws(() => spawn({ ...base, hostname: 'h' }), { message: /hostname needs 'uts'/ });
  t.throws(() => spawn({ ...base, argv: [] }), { message: /argv must hold at least argv\[0\]/ });
  const userNamespace = { hostUid: 2 ** 31, hostGid: 2 ** 31, size: 65536 };
  t.throws(() => spawn({ ...base, userNamespace: { ...userNamespace, size: 0 } }), {
    message: /SpawnRequest\.userNamespace must be/,
  });
  t.throws(() => spawn({ ...base, userNamespace, uid: 70000 }), {
    message: /SpawnRequest\.uid must be below userNamespace\.size \(65536\)/,
  });
  t.throws(() => spawn({ ...base, maskPaths: ['/etc'] }), { message: /maskPaths needs 'mount'/ });
  t.throws(() => spawn({ ...base, namespaces: ['mount'], maskPaths: ['etc'] }), {
    message: /SpawnRequest\.maskPaths\[0\]/,
  });
});

/** The soft and hard value of one line of /proc/<pid>/limits, e.g. "Max open files". */
function limitOf(pid: number | 'self', name: string): [string, string] {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(name));
  const [soft, hard] = (line ?? '').slice(26).trim().split(/\s+/);
  return [soft as string, hard as string];
}

test('resource limits are set from the documented table, not inherited from the runtime', async (t) => {
  // The test runner's own limits differ (Node raises its soft open-files limit to the hard one).
  t.notDeepEqual(limitOf('self', 'Max open files'), ['1024', '524288'], 'the runtime has other limits');
  for (const userNamespace of [undefined, { hostUid: 2 ** 31, hostGid: 2 ** 31, size: 65536 }]) {
    const { child, exited } = run(t, {
      file: '/bin/sleep',
      argv: ['sleep', '30'],
      ...(userNamespace ? { userNamespace } : {}),
    });
    const [softFiles, hardFiles] = limitOf(child.pid, 'Max open files');
    t.is(softFiles, '1024');
    // A hard limit above the runtime's own is clamped to it where the child may not raise it:
    // inside a user namespace, or without CAP_SYS_RESOURCE (bit 24) at all.
    const runtimeHard = limitOf('self', 'Max open files')[1];
    const capEff = BigInt(`0x${/^CapEff:\s+(\w+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]}`);
    const mayRaise = !userNamespace && (capEff & (1n << 24n)) !== 0n;
    t.is(hardFiles, !mayRaise && Number(runtimeHard) < 524288 ? runtimeHard : '524288');
    // Every row of the table (README.md "Resource limits"), each hard limit clamped to the
    // runtime's where it may not be raised: with a user namespace the parent plans only the calls
    // for the limits that differ from its own (child.c, orrery_plan_rlimits), which must end the same.
    const table: [string, string, string][] = [
      ['Max cpu time', 'unlimited', 'unlimited'],
      ['Max file size', 'unlimited', 'unlimited'],
      ['Max data size', 'unlimited', 'unlimited'],
      ['Max stack size', '8388608', 'unlimited'],
      ['Max core file size', '0', 'unlimited'],
      ['Max resident set', 'unlimited', 'unlimited'],
      ['Max processes', 'unlimited', 'unlimited'],
      ['Max open files', '1024', '524288'],
      ['Max locked memory', '8388608', '8388608'],
      ['Max address space', 'unlimited', 'unlimited'],
      ['Max file locks', 'unlimited', 'unlimited'],
      ['Max msgqueue size', '819200', '819200'],
      ['Max nice priority', '0', '0'],
      ['Max realtime priority', '0', '0'],
      ['Max realtime timeout', 'unlimited', 'unlimited'],
    ];
    const n = (v: string) => (v === 'unlimited' ? Number.POSITIVE_INFINITY : Number(v));
    for (const [name, soft, hard] of table) {
      const own = limitOf('self', name)[1];
      const h = !mayRaise && n(own) < n(hard) ? own : hard;
      const sft = n(soft) > n(h) ? h : soft;
      t.deepEqual(limitOf(child.pid, name), [sft, h], `${name} (user namespace: ${!!userNamespace})`);
    }
    t.is(/^NoNewPrivs:\s+(\d)/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1], '1');
    sendSignal(child.pidfd, 'SIGKILL');
    t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
  }
});

test.runIf(asRoot)(
  'a user namespace maps its root onto the given host range; uid is an id inside it',
  async (t) => {
    const userNamespace = { hostUid: 2 ** 31 + 65536, hostGid: 2 ** 31 + 65536, size: 65536 };
    const { child, exited, log } = run(t, {
      file: '/bin/sh',
      argv: ['sh', '-c', 'id -u; id -g; exec sleep 30'],
      userNamespace,
      uid: 1000,
      gid: 1000,
    });
    t.is(
      readFileSync(`/proc/${child.pid}/uid_map`, 'utf8').trim().split(/\s+/).join(' '),
      `0 ${2 ** 31 + 65536} 65536`,
    );
    t.is(
      readFileSync(`/proc/${child.pid}/gid_map`, 'utf8').trim().split(/\s+/).join(' '),
      `0 ${2 ** 31 + 65536} 65536`,
    );
    const hostId = 2 ** 31 + 65536 + 1000;
    const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
    t.regex(status, new RegExp(`\nUid:\\s+${hostId}\\s+${hostId}\\s+${hostId}\\s+${hostId}\n`));
    // Not root inside either: no capability at all, even over its own namespace.
    t.regex(status, /\nCapEff:\s+0+\n/);
    const deadline = Date.now() + 5000;
    while (!/\d+\n\d+\n/.test(log()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    t.is(log(), '1000\n1000\n');
    sendSignal(child.pidfd, 'SIGKILL');
    t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
  },
);

test('kernelFeatures agrees with the kernel release (and with the seccomp filter, for clone3)', (t) => {
  const features = kernelFeatures();
  const release = host.kernelRelease;
  t.log(`kernel ${release}, seccomp ${host.seccomp ?? 'unknown'}: ${JSON.stringify(features)}`);
  t.truthy(host.kernel, `uname -r starts with major.minor: ${release}`);
  // Decided by version alone: cgroup.kill since 5.14.
  t.is(features.cgroupKill, kernelAtLeast(release, 5, 14));
  // PIDFD_INFO_EXIT since 6.15, probed through PIDFD_GET_INFO on our own pidfd.
  if (host.seccomp !== 'filter') t.is(features.pidfdInfoExit, kernelAtLeast(release, 6, 15));
  else if (features.pidfdInfoExit) t.true(kernelAtLeast(release, 6, 15));
  // clone3 since 5.3, probed: a seccomp filter may hide it (Docker's default profile answers ENOSYS).
  if (host.seccomp !== 'filter') t.is(features.clone3, kernelAtLeast(release, 5, 3));
  else if (features.clone3) t.true(kernelAtLeast(release, 5, 3));
  // CLONE_INTO_CGROUP since 5.7, and only through clone3.
  t.is(features.cloneIntoCgroup, features.clone3 && kernelAtLeast(release, 5, 7));
});
