// What the benchmarks read from /proc about the processes they measure (proc(5)). Parsing
// /proc/<pid>/stat is platform/proc.ts's; this file only picks and converts fields.
import { readFileSync } from 'node:fs';
import { readProcStatFields } from '../platform/proc.ts';

/** USER_HZ: /proc reports CPU times in these clock ticks (proc(5)); 100 on Linux. */
export const CLK_TCK = 100;

/** CPU times of a process, seconds. */
export interface CpuTimes {
  /** utime (field 14 of /proc/<pid>/stat). */
  user: number;
  /** stime (field 15). */
  system: number;
  /**
   * cutime (field 16): of its children it has reaped. The kernel sums these in nanoseconds and
   * rounds only when /proc is read, so a difference over many children is exact to a tick in all.
   */
  childrenUser: number;
  /** cstime (field 17). */
  childrenSystem: number;
}

/** The CPU times of a process (`self`: this one); throws when there is no such process. */
export function cpuTimes(pid: number | 'self'): CpuTimes {
  const fields = readProcStatFields(pid);
  if (fields === undefined) throw new Error(`no process ${pid}`);
  const seconds = (field: number) => Number(fields[field - 3]) / CLK_TCK;
  return { user: seconds(14), system: seconds(15), childrenUser: seconds(16), childrenSystem: seconds(17) };
}

/** Busy CPU of the whole machine (every process and kernel thread, /proc/stat), seconds. */
export function machineCpuSeconds(): number {
  const fields =
    readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  // user nice system idle iowait irq softirq steal: everything but idle and iowait.
  const busy = [0, 1, 2, 5, 6, 7].reduce((sum, i) => sum + (fields[i] ?? 0), 0);
  return busy / CLK_TCK;
}

/** Resident set size of a process (VmRSS of /proc/<pid>/status), KiB. */
export function rssKiB(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match?.[1] ?? Number.NaN);
}

/** Proportional set size (shared pages divided among their users, /proc/<pid>/smaps_rollup), KiB. */
export function pssKiB(pid: number): number {
  const match = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return Number(match?.[1] ?? Number.NaN);
}
