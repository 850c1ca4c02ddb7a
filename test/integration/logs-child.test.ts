import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import { LogStore, type LogStoreOptions } from '../../node-runtime/logs/store.ts';
import { eventually } from '../helpers/wait.ts';

// Real child processes write their stdout and stderr straight into the log file through their
// own O_APPEND descriptor, as the native spawn sets it up; the store only rotates and reads.

async function store(t: ExecutionContext, options: Partial<LogStoreOptions> = {}): Promise<LogStore> {
  const root = await mkdtemp(join(tmpdir(), 'orrery-logs-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return new LogStore({ root, rotateOnWrite: false, ...options });
}

/** Runs `sh -c script` with stdout and stderr on an O_APPEND fd of `file` (flag 'a'). */
function writer(t: ExecutionContext, file: string, script: string): ChildProcess {
  const fd = openSync(file, 'a');
  try {
    const child = spawn('sh', ['-c', script], { stdio: ['ignore', fd, fd] });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    return child;
  } finally {
    closeSync(fd); // the child has its own copy; the runtime holds nothing
  }
}

const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });

const numbersIn = (text: string) => [...text.matchAll(/^line-(\d+)$/gm)].map((m) => Number(m[1]));

test('rotation keeps maxFiles while a real child keeps appending to the live file', async (t) => {
  const logs = await store(t, { maxBytes: 4096, maxFiles: 3 });
  const file = await logs.prepareRun('web-0', 'server');
  const child = writer(
    t,
    file,
    'i=0; while :; do i=$((i+1)); echo line-$i; [ $((i % 50)) = 0 ] && echo err-$i >&2; done',
  );
  // Ten rotations, however slowly a loaded machine lets the child fill the file (20 s hang bound).
  let rotations = 0;
  await eventually(
    'ten rotations',
    async () => {
      if (await logs.rotateIfNeeded('web-0', 'server')) rotations++;
      return rotations === 10;
    },
    { intervalMs: 2 },
  );
  const grownFrom = (await stat(file)).size;
  await eventually('the child to keep appending after the rotations', async () => {
    return (await stat(file)).size !== grownFrom;
  });
  child.kill('SIGKILL');
  await exited(child);

  t.deepEqual((await readdir(join(logs.root, 'web-0'))).sort(), [
    'server.log',
    'server.log.1',
    'server.log.2',
  ]);
  const live = await readFile(file);
  t.false(live.subarray(0, 16).includes(0), 'O_APPEND: no hole of zeros at the start after truncation');
  const oldest = numbersIn(await readFile(`${file}.2`, 'utf8'));
  const newer = numbersIn(await readFile(`${file}.1`, 'utf8'));
  const newest = numbersIn(live.toString('utf8'));
  const all = [...oldest, ...newer, ...newest];
  t.true(all.length > 100);
  t.true(
    all.every((n, i) => i === 0 || n > (all[i - 1] as number)),
    'lines stay in order across files, never duplicated',
  );
  t.regex(await readFile(`${file}.1`, 'utf8'), /^err-\d+$/m, 'stderr lands in the same file');
});

test('follow delivers lines written by a real child and keeps going after a rotation', async (t) => {
  const logs = await store(t, { maxBytes: 512 });
  const file = await logs.prepareRun('web-0', 'server');
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const child = writer(t, file, 'echo line-0; for i in $(seq 1 150); do echo line-$i; sleep 0.005; done');

  let text = '';
  let rotated = false;
  const deadline = setTimeout(() => abort.abort(), 30_000); // only against a hang
  for await (const chunk of logs.follow('web-0', 'server', { signal: abort.signal })) {
    text += chunk;
    const seen = numbersIn(text);
    if (!rotated && seen.includes(60)) rotated = await logs.rotateIfNeeded('web-0', 'server');
    if (seen.includes(150)) break;
  }
  clearTimeout(deadline);
  await exited(child);
  t.true(rotated, 'the file was rotated mid-stream');
  const seen = numbersIn(text);
  t.true(seen.includes(150), 'lines written after the rotation arrive');
  t.true(
    seen.length >= 145,
    `nearly every line arrives (the copytruncate window may drop a few): ${seen.length}`,
  );
  t.true(
    seen.every((n, i) => i === 0 || n > (seen[i - 1] as number)),
    'in order, no duplicates',
  );
  t.true((await stat(`${file}.1`)).size > 0);
});

test('follow starts with the last N lines, then switches to the new run after a restart', async (t) => {
  const logs = await store(t);
  const file = await logs.prepareRun('web-0', 'server');
  await exited(writer(t, file, 'for i in 1 2 3 4 5; do echo line-$i; done'));
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const deadline = setTimeout(() => abort.abort(), 30_000);
  const chunks: string[] = [];
  let restarted = false;
  for await (const chunk of logs.follow('web-0', 'server', { lines: 2, signal: abort.signal })) {
    chunks.push(chunk);
    const text = chunks.join('');
    if (!restarted) {
      restarted = true;
      // The runtime restarts the process: a new run, a new file, a new child.
      const next = await logs.prepareRun('web-0', 'server');
      await exited(writer(t, next, 'echo line-100; echo line-101'));
    } else if (numbersIn(text).includes(101)) {
      break;
    }
  }
  clearTimeout(deadline);
  t.is(chunks[0], 'line-4\nline-5\n');
  t.deepEqual(numbersIn(chunks.join('')), [4, 5, 100, 101]);
  t.is(await logs.tail('web-0', 'server', { previous: true, lines: 1 }), 'line-5\n');
});

test('follow waits for a process that has not written its file yet and ends on abort', async (t) => {
  const logs = await store(t);
  await logs.prepareRun('web-0', 'other'); // the replica directory exists, server.log does not
  const abort = new AbortController();
  const received: string[] = [];
  const following = (async () => {
    for await (const chunk of logs.follow('web-0', 'server', { signal: abort.signal })) received.push(chunk);
  })();
  // Gives follow() time to start waiting for the file. Nothing is asserted on it: on a slower
  // machine the file may already exist when follow() opens it, and the test then proves less.
  await sleep(50);
  const file = await logs.prepareRun('web-0', 'server');
  await exited(writer(t, file, 'echo hello'));
  await eventually('hello followed', () => received.join('') === 'hello\n').catch(() => {}); // asserted below
  abort.abort();
  await following;
  t.is(received.join(''), 'hello\n');
});

test('removeReplica cleans up the logs of a replica whose process ran', async (t) => {
  const logs = await store(t);
  const file = await logs.prepareRun('web-0', 'server');
  await exited(writer(t, file, 'echo bye'));
  await logs.removeReplica('web-0');
  t.deepEqual(await readdir(logs.root), []);
});

test('a writer faster than the copy loses its oldest output; the line it writes after the burst survives rotation', async (t) => {
  const logs = await store(t, { maxBytes: 1024 * 1024, maxFiles: 2 });
  const file = logs.prepareRun('web-0', 'server');
  // The pause: what a writer that never pauses writes during the copy's last pass is lost with
  // the truncation (node-runtime/logs/rotate.ts says so); the line written once it paused is not.
  // Without the pause the test failed 1 run in 5 under load, as that documented window predicts.
  const child = writer(t, file, `yes ${'x'.repeat(99)} | head -c 100000000; sleep 0.2; echo last-line`);
  let running = true;
  void exited(child).then(() => {
    running = false;
  });
  let rotations = 0;
  while (running) {
    if (await logs.rotateIfNeeded('web-0', 'server')) rotations++;
    await new Promise((resolve) => setImmediate(resolve)); // let the child's exit be seen
  }
  await logs.rotateIfNeeded('web-0', 'server');
  t.true(rotations > 0);
  t.is(await logs.tail('web-0', 'server', { lines: 1 }), 'last-line\n');
  t.true((await stat(`${file}.1`)).size <= 1024 * 1024 + 100, '.1 holds at most maxBytes and its note');
  t.regex(
    await readFile(`${file}.1`, 'utf8').then((s) => s.slice(0, 100)),
    /^\[orrery: \d+ bytes of log dropped/,
  );
});
