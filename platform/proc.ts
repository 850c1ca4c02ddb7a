// What /proc/<pid>/stat says about a process (proc(5)): its fields, and the state and the start
// time, which together with the pid identify a process across pid reuse.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

export interface ProcStat {
  /** Field 3: R, S, D, Z (zombie), X (dead), ... */
  state: string;
  /** Field 22, starttime: clock ticks since boot, as the decimal text the kernel wrote. */
  startTime: string;
}

/**
 * The fields of /proc/<pid>/stat from field 3 (state) on, so field N is at index N - 3; undefined
 * when there is no such pid.
 */
export function readProcStatFields(pid: number | 'self'): string[] | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return fieldsFrom(stat);
}

/** readProcStatFields, read without blocking the event loop. */
export async function readProcStatFieldsAsync(pid: number | 'self'): Promise<string[] | undefined> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return fieldsFrom(stat);
}

function fieldsFrom(stat: string): string[] {
  // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Fields 3 and 22 of /proc/<pid>/stat; undefined when there is no such pid. */
export function readProcStat(pid: number): ProcStat | undefined {
  const fields = readProcStatFields(pid);
  const [state, startTime] = [fields?.[0], fields?.[22 - 3]];
  return state === undefined || startTime === undefined ? undefined : { state, startTime };
}

/** The start time of a live process (not a zombie), or undefined when there is none with this pid. */
export function liveStartTime(pid: number): string | undefined {
  const stat = readProcStat(pid);
  return stat === undefined || stat.state === 'Z' || stat.state === 'X' ? undefined : stat.startTime;
}
