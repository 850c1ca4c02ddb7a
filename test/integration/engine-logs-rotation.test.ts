// Periodic log rotation by the engine itself: with a short logRotateIntervalMs, a replica that
// writes past logRotation.maxBytes gets its log rotated (copytruncate into .1, .2) with no call
// to rt.rotateLogs(). The default period is 30 s, so these tests fail if the option is ignored
// or the timer is gone.
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Engine } from '../../node-runtime/engine.ts';
import { harness, replica, waitFor, workloadDir } from '../helpers/engine-harness.ts';

const MAX_BYTES = 64 * 1024;
const LINES = 8000;
const PAD = 'x'.repeat(40);

/** Numbers of the whole `<8 digits> <pad>` lines of a log file, in file order. */
function lineNumbers(text: string): number[] {
  return [...text.matchAll(new RegExp(`^(\\d{8}) ${PAD}$`, 'gm'))].map((m) => Number(m[1]));
}

test('the engine rotates a live log past maxBytes on its own timer (logRotateIntervalMs)', async (t) => {
  const { rt, logDir, root } = await harness(t, {
    logRotation: { maxBytes: MAX_BYTES, maxFiles: 3 },
    logRotateIntervalMs: 100,
  });
  const done = path.join(await workloadDir(root), 'writer-done');
  // 8000 numbered 50-byte lines, 200 every 50 ms (~200 KB/s, 400 KB in all), then idle.
  const script = [
    `i=0; while [ $i -lt ${LINES / 200} ]; do`,
    `  seq -f '%08g ${PAD}' $((i*200+1)) $((i*200+200)); i=$((i+1)); sleep 0.05;`,
    `done; : > "$1"; exec sleep 1000`,
  ].join('\n');
  const spec = replica([{ name: 'writer', command: ['sh', '-c', script, 'writer', done] }]);
  await rt.run(spec);
  const live = path.join(logDir, spec.id, 'writer.log');
  const size = (file: string) => statSync(file, { throwIfNoEntry: false })?.size;

  // While it writes: the live file must shrink at least once (a truncation by rotation).
  let previous = 0;
  let shrank = false;
  await waitFor(
    () => {
      const now = size(live) ?? 0;
      if (now < previous) shrank = true;
      previous = now;
      return shrank && existsSync(`${live}.2`);
    },
    15_000,
    'the live log to shrink and two rotated files (.1, .2) to appear',
  );
  await waitFor(() => existsSync(done), 20_000, 'the writer to finish');
  // Its last lines may have pushed the live file past the limit once more: the next pass rotates it.
  await waitFor(() => (size(live) ?? 0) < MAX_BYTES, 5_000, 'the live log below maxBytes');

  const status = rt.status(spec.id).processes[0];
  t.is(status?.restarts, 0, 'no restart: the shrinking came from rotation, not from a new run');
  t.false(existsSync(path.join(logDir, spec.id, 'writer.previous.log')));
  for (const rotated of [`${live}.1`, `${live}.2`]) {
    t.true(
      (size(rotated) ?? 0) >= MAX_BYTES,
      `${path.basename(rotated)} was rotated only once it reached maxBytes`,
    );
  }
  t.false(existsSync(`${live}.3`), 'maxFiles 3: live, .1 and .2 only');
  // Oldest to newest, the lines are in order and none is duplicated, and the last one is there.
  const numbers = lineNumbers(
    (await Promise.all([`${live}.2`, `${live}.1`, live].map((f) => readFile(f, 'utf8')))).join(''),
  );
  t.true(numbers.length > 0);
  t.true(
    numbers.every((n, i) => i === 0 || n > (numbers[i - 1] as number)),
    'rotated lines in order, no duplicates',
  );
  t.is(numbers.at(-1), LINES);
});

test('logRotateIntervalMs is validated: a TypeError names the option', async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'orrery-engine-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const base = {
    stateDir: path.join(root, 'state'),
    logDir: path.join(root, 'logs'),
    cgroupParent: 'unused',
  };
  for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31, '100', null]) {
    t.throws(() => new Engine({ ...base, logRotateIntervalMs: bad as number }), {
      instanceOf: TypeError,
      message:
        /^options\.logRotateIntervalMs must be a whole number of milliseconds from 1 to 2147483647, got /,
    });
  }
  // The bounds themselves are accepted (the constructor starts nothing).
  for (const good of [1, 2 ** 31 - 1, 30_000]) {
    t.notThrows(() => new Engine({ ...base, logRotateIntervalMs: good }));
  }
});
