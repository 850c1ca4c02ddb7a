import { readFile } from 'node:fs/promises';
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

async function readOptional(file: string | undefined): Promise<string | undefined> {
  if (file === undefined) return undefined;
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

const toNumber = (text: string | undefined): number => (text === undefined ? 0 : Number(text.trim()) || 0);

export async function readOomKills(files: ReplicaCgroupFiles): Promise<number> {
  const text = await readOptional(files.oomEvents);
  return text === undefined ? 0 : parseOomKills(text);
}

/**
 * Reads usage from the files chosen by the plan. `countPids` supplies the task count where no
 * pids controller is available.
 */
export async function readStats(
  files: ReplicaCgroupFiles,
  countPids: () => Promise<number>,
): Promise<CgroupStats> {
  const [cpu, current, peak, oom, pidsCurrent] = await Promise.all([
    readOptional(files.cpuUsage?.file),
    readOptional(files.memoryCurrent),
    readOptional(files.memoryPeak),
    readOptional(files.oomEvents),
    readOptional(files.pidsCurrent),
  ]);
  return {
    cpuUsageNanos:
      cpu === undefined || files.cpuUsage === undefined ? 0n : parseCpuUsage(cpu, files.cpuUsage.format),
    memoryCurrent: toNumber(current),
    memoryPeak: toNumber(peak),
    oomKills: oom === undefined ? 0 : parseOomKills(oom),
    pids: pidsCurrent === undefined ? await countPids() : toNumber(pidsCurrent),
  };
}
