import { join } from 'node:path';

/**
 * File naming of one process's logs. A "run" is one start of the process; the current run is
 * `<process>.log` and the run before it `<process>.previous.log` (what `kubectl logs --previous`
 * shows). Size rotation of a run adds `.1` (newest) … `.<maxFiles-1>` (oldest) to its base name.
 */
export function runBase(root: string, replicaId: string, processName: string, previous: boolean): string {
  return join(root, replicaId, `${processName}${previous ? '.previous' : ''}.log`);
}

/** Files of one run, newest first: the base, then `.1`, `.2`, … up to maxFiles in total. */
export function runFiles(base: string, maxFiles: number): string[] {
  const files = [base];
  for (let i = 1; i < maxFiles; i++) files.push(`${base}.${i}`);
  return files;
}
