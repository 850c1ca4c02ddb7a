import type { ReplicaCgroupPlan } from './paths.ts';

export interface CgroupLimits {
  /** CPU bandwidth in millicores (1000 = one full CPU), as Kubernetes `500m`. */
  cpuMillis?: number;
  /** Memory limit in bytes; swap is never allowed on top of it. */
  memoryBytes?: number;
  /** Maximum number of tasks (processes and threads). */
  pids?: number;
}

/** One write to a cgroup control file. */
export interface LimitWrite {
  file: string;
  value: string;
  /** ENOENT is fine: the kernel lacks this knob (no swap accounting, no swap controller). */
  optional?: boolean;
  /** EINVAL is fine: a later write in the same plan makes the ordering work (see memory v1). */
  tolerateEinval?: boolean;
}

/** CFS period used for every replica: the kernel default, 100 ms (Documentation/scheduler/sched-bwc.rst). */
export const CFS_PERIOD_US = 100_000;
/** The kernel refuses a quota below 1 ms. */
const CFS_MIN_QUOTA_US = 1_000;

function assertPositiveInteger(value: unknown, field: string): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(`limits.${field} must be a positive integer, got ${typeof value} ${String(value)}`);
  }
}

export function validateLimits(limits: unknown): CgroupLimits {
  if (typeof limits !== 'object' || limits === null) {
    throw new TypeError(`limits must be an object, got ${limits === null ? 'null' : typeof limits}`);
  }
  const l = limits as Record<string, unknown>;
  for (const key of Object.keys(l)) {
    if (!['cpuMillis', 'memoryBytes', 'pids'].includes(key)) {
      throw new TypeError(`limits.${key} is not a known limit: expected cpuMillis, memoryBytes or pids`);
    }
  }
  assertPositiveInteger(l.cpuMillis, 'cpuMillis');
  assertPositiveInteger(l.memoryBytes, 'memoryBytes');
  assertPositiveInteger(l.pids, 'pids');
  return l as CgroupLimits;
}

/**
 * The writes that make the cgroup enforce exactly `limits`: a missing limit is written as
 * "unlimited", so setLimits() converges to the desired state whatever was there before.
 * Throws when a limit is requested but no hierarchy carries its controller.
 */
export function limitWrites(plan: ReplicaCgroupPlan, limits: CgroupLimits): LimitWrite[] {
  const f = plan.files;
  const writes: LimitWrite[] = [];

  const quota =
    limits.cpuMillis === undefined
      ? undefined
      : Math.max(CFS_MIN_QUOTA_US, Math.round((limits.cpuMillis * CFS_PERIOD_US) / 1000));
  if (f.cpuMax !== undefined) {
    writes.push({ file: f.cpuMax, value: `${quota ?? 'max'} ${CFS_PERIOD_US}` });
  } else if (f.cpuCfsQuota !== undefined && f.cpuCfsPeriod !== undefined) {
    writes.push({ file: f.cpuCfsPeriod, value: String(CFS_PERIOD_US) });
    writes.push({ file: f.cpuCfsQuota, value: String(quota ?? -1) });
  } else if (quota !== undefined) {
    throw new Error('limits.cpuMillis cannot be enforced: no cgroup hierarchy carries the cpu controller');
  }

  const memory = limits.memoryBytes;
  if (f.memoryMax !== undefined) {
    writes.push({ file: f.memoryMax, value: String(memory ?? 'max') });
    // No swap: memory.swap.max=0 (cgroup-v2.rst). Absent when the kernel has no swap controller.
    if (f.memorySwapMax !== undefined) writes.push({ file: f.memorySwapMax, value: '0', optional: true });
  } else if (f.memoryLimit !== undefined) {
    // v1 requires memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every step
    // (cgroup-v1/memory.rst §2.5). Writing limit (may fail with EINVAL when growing), then
    // memsw, then limit again succeeds whether the new value is above or below the old ones.
    const value = String(memory ?? -1);
    writes.push({ file: f.memoryLimit, value, tolerateEinval: true });
    if (f.memswLimit !== undefined) writes.push({ file: f.memswLimit, value, optional: true });
    writes.push({ file: f.memoryLimit, value });
    // Without swap accounting memsw is absent; swappiness 0 is then the best v1 offers.
    if (f.memorySwappiness !== undefined)
      writes.push({ file: f.memorySwappiness, value: '0', optional: true });
  } else if (memory !== undefined) {
    throw new Error(
      'limits.memoryBytes cannot be enforced: no cgroup hierarchy carries the memory controller',
    );
  }

  if (f.pidsMax !== undefined) {
    writes.push({ file: f.pidsMax, value: String(limits.pids ?? 'max') });
  } else if (limits.pids !== undefined) {
    throw new Error('limits.pids cannot be enforced: no cgroup hierarchy carries the pids controller');
  }
  return writes;
}
