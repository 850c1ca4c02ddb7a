import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/*
 * cgroupfs files live in kernel memory: a read or write is a few microseconds, while a libuv
 * thread-pool round trip per call (fs/promises) costs far more and sits on the spawn and exit
 * paths. So these helpers use the synchronous calls.
 */

/** Writes one value to a cgroup control file; the error names the file and the value. */
export function writeControl(file: string, value: string): void {
  try {
    writeFileSync(file, value);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    const wrapped = new Error(`writing ${JSON.stringify(value)} to ${file} failed: ${code}`, {
      cause: error,
    });
    (wrapped as NodeJS.ErrnoException).code = code;
    throw wrapped;
  }
}

/** Pids listed in a `cgroup.procs` file; a missing cgroup holds none. */
export function readProcs(file: string): number[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map(Number);
}

/** A control file's content, or undefined when the kernel does not have it. */
export function readControl(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Polls `check` every `intervalMs` until it returns true or `timeoutMs` passes; returns the last result. */
export async function waitFor(check: () => boolean, timeoutMs: number, intervalMs = 1): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
}
