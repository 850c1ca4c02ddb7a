import { readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** Writes one value to a cgroup control file; the error names the file and the value. */
export async function writeControl(file: string, value: string): Promise<void> {
  try {
    await writeFile(file, value);
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
export async function readProcs(file: string): Promise<number[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map(Number);
}

/** Polls `check` every `intervalMs` until it returns true or `timeoutMs` passes; returns the last result. */
export async function waitFor(
  check: () => Promise<boolean>,
  timeoutMs: number,
  intervalMs = 2,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
}
