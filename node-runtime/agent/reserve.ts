/**
 * The machine's memory and pids, what the agent keeps back of them, and what is left for the
 * workloads together. Reads /proc only: the agent's start loads it before anything that talks to
 * the API server (start.ts).
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { memoryBytes } from '../../crds/quantity.ts';
import type { CapacityOverrides } from './options.ts';

/**
 * What the agent keeps back from allocatable for itself and the system, like the kubelet's
 * system-reserved: 100m of CPU, 256 MiB (at most a quarter of the machine) of memory, 1,024 pids
 * (at most a tenth). Replicas are not reserved: capacity and allocatable replicas are equal.
 */
export const RESERVED = { cpuMillis: 100, memoryBytes: 256 * 2 ** 20, pids: 1024 } as const;

export function memTotalBytes(): number {
  try {
    const m = /^MemTotal:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux /proc: fall back to what libuv says
  }
  return os.totalmem();
}

export function pidMax(): number {
  try {
    return Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim());
  } catch {
    return 32768;
  }
}

/**
 * What the workloads may use together: allocatable memory and pids, the caps put on the per-host
 * cgroup parent, so that the reserve stays for the agent and the system however the replicas
 * behave.
 */
export function workloadCaps(overrides: CapacityOverrides): { memoryBytes: number; pids: number } {
  const memory = overrides.memory !== undefined ? memoryBytes(overrides.memory) : memTotalBytes();
  const pids = overrides.pids ?? pidMax();
  return {
    memoryBytes: Math.max(0, memory - Math.min(RESERVED.memoryBytes, Math.floor(memory / 4))),
    pids: Math.max(0, pids - Math.min(RESERVED.pids, Math.floor(pids / 10))),
  };
}
