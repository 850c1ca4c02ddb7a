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

/** A process's resident memory by kind, bytes (/proc/<pid>/smaps_rollup, proc(5)). */
export interface Memory {
  /** Resident set: every page mapped, shared ones counted in full. */
  rss: number;
  /** Proportional set: shared pages divided among the processes that map them. */
  pss: number;
  /** Pages only this process maps: its heaps, stacks, written data. */
  private: number;
  /** Pages other processes map too: mostly files (the node binary, libraries), clean. */
  shared: number;
  /** Of the file pages, those mapped whole 2 MiB at a time (FilePmdMapped: a huge folio). */
  hugeFile: number;
  /**
   * Anonymous pages: the process's own memory (heaps, stacks), whatever the page cache holds. The
   * other fields move with how the kernel keeps the node binary cached (docs/BENCHMARKS.md).
   */
  anonymous: number;
}

/** The resident memory of a process; throws when there is no such process. */
export function memoryOf(pid: number): Memory {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kib = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return {
    rss: kib('Rss'),
    pss: kib('Pss'),
    private: kib('Private_Clean') + kib('Private_Dirty'),
    shared: kib('Shared_Clean') + kib('Shared_Dirty'),
    hugeFile: kib('FilePmdMapped'),
    anonymous: kib('Anonymous'),
  };
}
