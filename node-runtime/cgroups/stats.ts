import { readControl } from './io.ts';
import type { ReplicaCgroupFiles } from './paths.ts';

export interface CgroupStats {
  cpuUsageNanos: bigint;
  memoryCurrent: number;
  /** High-water mark: v2 memory.peak (Linux 5.19+; 0 when absent), v1 memory.max_usage_in_bytes. */
  memoryPeak: number;
  /** Processes killed by the OOM killer in this cgroup since it was created. */
  oomKills: number;
  pids: number;
}

/** Parses the "flat keyed" format of cpu.stat, memory.events and memory.oom_control (`key value` lines). */
export function parseFlatKeyed(text: string): Map<string, string> {
  const entries = new Map<string, string>();
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined) entries.set(key, value);
  }
  return entries;
}

/** Parses a cpu usage file into nanoseconds. */
export function parseCpuUsage(text: string, format: 'nanos' | 'cpu.stat'): bigint {
  if (format === 'nanos') return BigInt(text.trim() || '0');
  return BigInt(parseFlatKeyed(text).get('usage_usec') ?? '0') * 1000n;
}

/** The `oom_kill` counter of memory.events (v2) or memory.oom_control (v1, Linux 4.13+). */
export function parseOomKills(text: string): number {
  return Number(parseFlatKeyed(text).get('oom_kill') ?? '0');
}

const toNumber = (text: string | undefined): number => (text === undefined ? 0 : Number(text.trim()) || 0);

export function readOomKills(files: ReplicaCgroupFiles): number {
  const text = readControl(files.oomEvents);
  return text === undefined ? 0 : parseOomKills(text);
}

/**
 * Reads usage from the files chosen by the plan. `countPids` supplies the task count where no
 * pids controller is available.
 */
export function readStats(files: ReplicaCgroupFiles, countPids: () => number): CgroupStats {
  const cpu = readControl(files.cpuUsage?.file);
  const current = readControl(files.memoryCurrent);
  const peak = readControl(files.memoryPeak);
  const oom = readControl(files.oomEvents);
  const pidsCurrent = readControl(files.pidsCurrent);
  return {
    cpuUsageNanos:
      cpu === undefined || files.cpuUsage === undefined ? 0n : parseCpuUsage(cpu, files.cpuUsage.format),
    memoryCurrent: toNumber(current),
    memoryPeak: toNumber(peak),
    oomKills: oom === undefined ? 0 : parseOomKills(oom),
    pids: pidsCurrent === undefined ? countPids() : toNumber(pidsCurrent),
  };
}
