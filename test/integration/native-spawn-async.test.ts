// spawnAsync: the same spawn on a libuv threadpool thread, with real processes.
import { execFileSync, spawn as spawnChild } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { type ExitStatus, SpawnError, spawnAsync, watchExit } from '../../node-runtime/native/index.ts';
import { tempDir } from './fixtures/native-run.ts';

test('spawnAsync runs isolated replicas concurrently; each execs, reports its own exit and is reaped', async (t) => {
  const dir = tempDir(t);
  const n = 40;
  const started = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      spawnAsync({
        file: '/bin/sh',
        argv: ['sh', '-c', `echo "$(hostname) $$"; exit ${i % 7}`],
        env: [],
        namespaces: ['pid', 'mount', 'uts', 'ipc'],
        hostname: `r${i}`,
        logFile: join(dir, `r${i}.log`),
        exitStatusFile: join(dir, `r${i}.status`),
      }),
    ),
  );
  t.is(new Set(started.map((s) => s.pid)).size, n, 'distinct processes');
  const exits = await Promise.all(
    started.map((s) => new Promise<ExitStatus>((resolve) => watchExit(s.pidfd, resolve))),
  );
  exits.forEach((status, i) => {
    t.deepEqual(status, { code: i % 7, signal: null });
    // Its own uts and pid namespaces: its hostname, and pid 2 under orrery-init.
    t.is(readFileSync(join(dir, `r${i}.log`), 'utf8'), `r${i} 2\n`);
  });
});

test('spawnAsync reports failures as spawn() does, and bad requests reject with a TypeError', async (t) => {
  const dir = tempDir(t);
  const err = await t.throwsAsync(
    spawnAsync({ file: '/no/such/bin', argv: ['x'], env: [], namespaces: [], logFile: join(dir, 'l') }),
    { instanceOf: SpawnError, message: 'ExecFailed: ENOENT /no/such/bin' },
  );
  t.is(err?.step, 'execve');
  await t.throwsAsync(
    spawnAsync({ file: 'relative', argv: ['x'], env: [], namespaces: [], logFile: join(dir, 'l') }),
    { instanceOf: TypeError, message: /file/ },
  );
});

test('the event loop keeps running while spawnAsync waits for the exec', async (t) => {
  const dir = tempDir(t);
  // The child opens its log file before it execs, and opening a FIFO for writing blocks until a
  // reader opens it (fifo(7)): this spawn cannot complete until the reader below opens the FIFO.
  const fifo = join(dir, 'log.fifo');
  execFileSync('mkfifo', [fifo]);
  // The reader opens the FIFO once the test writes a line to its stdin, or after 20 s if the test
  // never gets to (a spawn that blocks the event loop), and says which.
  const reader = spawnChild(
    'sh',
    [
      '-c',
      'if timeout 20 head -n 1 >/dev/null; then echo released; else echo timed-out; fi; exec cat "$0" >/dev/null',
      fifo,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const readerExited = once(reader, 'exit');
  t.teardown(() => {
    if (reader.exitCode === null && reader.signalCode === null) reader.kill('SIGKILL');
  });
  // A reader that gave up has closed its stdin; the assertion below reports that, not an EPIPE.
  reader.stdin.on('error', () => {});
  let said = '';
  reader.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    said += chunk;
  });

  let settled = false;
  const spawning = spawnAsync({ file: '/bin/true', argv: ['true'], env: [], namespaces: [], logFile: fifo });
  spawning.then(
    () => (settled = true),
    () => (settled = true),
  );
  // A timer callback runs only if the event loop turns while the spawn is in flight.
  const settledWhenTimerRan = await new Promise<boolean>((resolve) =>
    setTimeout(() => {
      const was = settled;
      reader.stdin.end('go\n');
      resolve(was);
    }, 0),
  );
  const child = await spawning;
  t.deepEqual(await new Promise<ExitStatus>((resolve) => watchExit(child.pidfd, resolve)), {
    code: 0,
    signal: null,
  });
  await readerExited;
  t.is(said.trim(), 'released', 'the exec happened because the timer released the log reader');
  t.false(settledWhenTimerRan, 'the spawn was still waiting for its exec when the timer ran');
});
