// spawnAsync: the same spawn on a libuv threadpool thread, with real processes.
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
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  t.teardown(() => clearInterval(timer));
  const all = [];
  for (let i = 0; i < 20; i++) {
    all.push(
      spawnAsync({
        file: '/bin/true',
        argv: ['true'],
        env: [],
        namespaces: ['pid', 'mount', 'uts', 'ipc'],
        logFile: join(dir, 'l'),
      }).then((s) => new Promise((resolve) => watchExit(s.pidfd, resolve))),
    );
  }
  await Promise.all(all);
  t.true(ticks > 0, 'timers ran between the spawns');
});
