// platform/memory.ts: free malloc memory scattered through the arenas is given back to the kernel
// by trimMalloc() (glibc's malloc_trim through the native addon), and stays resident without it.
// A real process: a Node.js child allocates 80 MB of 4 KB ArrayBuffers (malloc'd, below glibc's
// mmap threshold) with small ones kept between them, drops the large ones, collects them, and
// reports its private dirty memory before and after.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import test from 'ava';
import { packagePath } from '../../platform/package.ts';

const execFileAsync = promisify(execFile);

const child = (trim: boolean) => `
  import { readFileSync } from 'node:fs';
  import { setTimeout as sleep } from 'node:timers/promises';
  import { canTrimMalloc, trimMalloc } from './platform/memory.ts';
  const privateDirty = () =>
    Number(/^Private_Dirty:\\s+(\\d+) kB/m.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]) / 1024;
  let drop = [];
  const keep = [];
  for (let i = 0; i < 20000; i++) {
    drop.push(new Uint8Array(4000));
    // Held between the freed ones: the free space is in the arena's middle, not at its top.
    if (i % 16 === 15) keep.push(new Uint8Array(64));
  }
  drop = null;
  // Backing stores are freed by V8's sweeper after a collection, not always at once: collected
  // until what the ArrayBuffers hold is down to the kept ones (10 s at most).
  for (let i = 0; i < 200 && process.memoryUsage().arrayBuffers > 8_000_000; i++) {
    globalThis.gc();
    await sleep(50);
  }
  const before = privateDirty();
  const released = ${trim} ? trimMalloc() : false;
  const after = privateDirty();
  const { arrayBuffers } = process.memoryUsage();
  console.log(JSON.stringify({ can: canTrimMalloc(), released, before, after, kept: keep.length, arrayBuffers }));
`;

async function run(
  trim: boolean,
): Promise<{ can: boolean; released: boolean; before: number; after: number; arrayBuffers: number }> {
  const { stdout } = await execFileAsync(
    process.execPath,
    ['--expose-gc', '--input-type=module', '-e', child(trim)],
    { cwd: packagePath() },
  );
  return JSON.parse(stdout);
}

test('trimMalloc gives back the free pages in the middle of the malloc arenas; without it they stay', async (t) => {
  const trimmed = await run(true);
  t.true(trimmed.can, 'the addon is built and the C library is glibc');
  t.true(
    trimmed.arrayBuffers < 8_000_000,
    `the dropped buffers were freed (${trimmed.arrayBuffers} bytes left)`,
  );
  t.true(trimmed.released);
  const untrimmed = await run(false);
  t.log(
    `private dirty MiB: trimmed ${trimmed.before.toFixed(1)} → ${trimmed.after.toFixed(1)}; ` +
      `untrimmed ${untrimmed.before.toFixed(1)} → ${untrimmed.after.toFixed(1)}`,
  );
  // ~75 MB were freed in 64 KB runs between the kept buffers: most of it goes back.
  t.true(trimmed.before - trimmed.after > 40, 'at least 40 MiB given back');
  t.true(untrimmed.after > untrimmed.before - 5, 'without the trim they stay resident');
});
