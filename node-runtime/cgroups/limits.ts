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
  /** The value a new cgroup starts with ("unlimited", the default period): needed only to undo. */
  kernelDefault?: boolean;
}

/** CFS period used for every replica: the kernel default, 100 ms (Documentation/scheduler/sched-bwc.rst). */
const CFS_PERIOD_US = 100_000;
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
 *
 * `fresh`: the cgroup was just created, so every knob still has its kernel default and the writes
 * of defaults are left out. That is not only fewer syscalls: a v1 CFS period or quota write walks
 * every task group on the machine (kernel/sched/core.c, __cfs_schedulable -> walk_tg_tree), so
 * writing "unlimited" into each of 1,000 new cgroups cost time quadratic in their number.
 */
export function limitWrites(
  plan: ReplicaCgroupPlan,
  limits: CgroupLimits,
  opts: { fresh?: boolean } = {},
): LimitWrite[] {
  const f = plan.files;
  const writes: LimitWrite[] = [];
  const unlimited = { kernelDefault: true };

  const quota =
    limits.cpuMillis === undefined
      ? undefined
      : Math.max(CFS_MIN_QUOTA_US, Math.round((limits.cpuMillis * CFS_PERIOD_US) / 1000));
  const cpuDefault = quota === undefined ? unlimited : {};
  if (f.cpuMax !== undefined) {
    writes.push({ file: f.cpuMax, value: `${quota ?? 'max'} ${CFS_PERIOD_US}`, ...cpuDefault });
  } else if (f.cpuCfsQuota !== undefined && f.cpuCfsPeriod !== undefined) {
    writes.push({ file: f.cpuCfsPeriod, value: String(CFS_PERIOD_US), ...cpuDefault });
    writes.push({ file: f.cpuCfsQuota, value: String(quota ?? -1), ...cpuDefault });
  } else if (quota !== undefined) {
    throw new Error('limits.cpuMillis cannot be enforced: no cgroup hierarchy carries the cpu controller');
  }

  const memory = limits.memoryBytes;
  const memoryDefault = memory === undefined ? unlimited : {};
  if (f.memoryMax !== undefined) {
    writes.push({ file: f.memoryMax, value: String(memory ?? 'max'), ...memoryDefault });
    // No swap: memory.swap.max=0 (cgroup-v2.rst). Absent when the kernel has no swap controller.
    if (f.memorySwapMax !== undefined) writes.push({ file: f.memorySwapMax, value: '0', optional: true });
  } else if (f.memoryLimit !== undefined) {
    // v1 requires memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every step
    // (cgroup-v1/memory.rst §2.5). Writing limit (may fail with EINVAL when growing), then
    // memsw, then limit again succeeds whether the new value is above or below the old ones.
    const value = String(memory ?? -1);
    writes.push({ file: f.memoryLimit, value, tolerateEinval: true, ...memoryDefault });
    if (f.memswLimit !== undefined)
      writes.push({ file: f.memswLimit, value, optional: true, ...memoryDefault });
    writes.push({ file: f.memoryLimit, value, ...memoryDefault });
    // Without swap accounting memsw is absent; swappiness 0 is then the best v1 offers.
    if (f.memorySwappiness !== undefined)
      writes.push({ file: f.memorySwappiness, value: '0', optional: true });
  } else if (memory !== undefined) {
    throw new Error(
      'limits.memoryBytes cannot be enforced: no cgroup hierarchy carries the memory controller',
    );
  }

  if (f.pidsMax !== undefined) {
    writes.push({
      file: f.pidsMax,
      value: String(limits.pids ?? 'max'),
      ...(limits.pids === undefined ? unlimited : {}),
    });
  } else if (limits.pids !== undefined) {
    throw new Error('limits.pids cannot be enforced: no cgroup hierarchy carries the pids controller');
  }
  return opts.fresh ? writes.filter((w) => !w.kernelDefault) : writes;
}
