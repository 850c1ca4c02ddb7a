import { join } from 'node:path';
import type { CgroupLayout, V1Controller } from './detect.ts';

/**
 * Where one replica lives in each hierarchy and which file carries what. Pure: computed from the
 * layout alone, so every decision below is unit-tested for v2, v1 and hybrid layouts.
 *
 * Rules (see README.md):
 * - A controller is used from v2 when v2 lists it in cgroup.controllers, otherwise from its v1
 *   mount. A controller can be bound to one hierarchy only, so there is never a choice to make.
 * - Whenever v2 is mounted, the v2 tree carries membership, `cgroup.kill`, `cgroup.events`
 *   (populated) and is the CLONE_INTO_CGROUP target, even with no controllers enabled (hybrid).
 * - Freezing uses v2's cgroup.freeze whenever v2 is mounted (Linux 5.2+), hybrid included.
 * - The v1 hierarchies that carry a controller we use (cpu, cpuacct, memory, pids, and freezer
 *   where v2 cannot freeze) are joined by the child writing "0" to their `tasks` file before execve (see `joinFiles`). cpuset
 *   is never joined: a v1 cpuset refuses tasks until cpuset.cpus/mems are set, and we set no
 *   cpuset limit.
 * - So are the other v1 hierarchies in which the runtime itself is below the root (its
 *   container's or its unit's cgroup: `layout.v1Nested`), for membership alone.
 */
export interface ReplicaCgroupPlan {
  /** Replica directory in the v2 tree. */
  v2Dir?: string;
  /** Replica directory per joined v1 controller (co-mounted controllers share one). */
  v1Dirs: Partial<Record<V1Controller, string>>;
  /** Every directory that holds the replica, deduplicated, v2 first. */
  dirs: string[];
  /** The per-host parent directory in every hierarchy used. */
  parentDirs: string[];
  /**
   * v2 directories from the root down to the parent whose `cgroup.subtree_control` must enable
   * `v2Enable`, so the replica directory gets the controller files (cgroup v2 "top-down constraint").
   */
  v2SubtreeDirs: string[];
  v2Enable: string[];
  /** `cgroup.procs` files, to move a running process with all its threads (attach; v1 only). */
  procsFiles: string[];
  /**
   * v1 `tasks` files the spawned child writes "0" to before execve (v2 membership comes from
   * CLONE_INTO_CGROUP). `tasks`, not `cgroup.procs`: "0" in `tasks` moves only the calling thread
   * (here the whole process: one thread, before exec), and the kernel then skips the write side
   * of cgroup_threadgroup_rwsem (kernel/cgroup/cgroup.c, cgroup_procs_write_start:
   * `threadgroup_locked = pid || threadgroup`). The first writer of that lock after a quiet
   * moment waits for an RCU grace period, milliseconds per spawn (README.md, "Native spawn").
   */
  joinFiles: string[];
  files: ReplicaCgroupFiles;
}

export interface ReplicaCgroupFiles {
  /** v2 `cpu.max` ("quota period"). */
  cpuMax?: string;
  /** v1 CFS bandwidth. */
  cpuCfsQuota?: string;
  cpuCfsPeriod?: string;
  /** v2 `memory.max` and `memory.swap.max`. */
  memoryMax?: string;
  memorySwapMax?: string;
  /** v1 `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes` (memsw only with swap accounting). */
  memoryLimit?: string;
  memswLimit?: string;
  memorySwappiness?: string;
  pidsMax?: string;
  /** CPU usage: v1 `cpuacct.usage` (ns) or v2 `cpu.stat` (usage_usec, present even without the cpu controller). */
  cpuUsage?: { file: string; format: 'nanos' | 'cpu.stat' };
  memoryCurrent?: string;
  memoryPeak?: string;
  /** OOM kill counter: v2 `memory.events` or v1 `memory.oom_control`, both flat-keyed with `oom_kill`. */
  oomEvents?: string;
  pidsCurrent?: string;
  /** Freezing: v1 `freezer.state` (FROZEN/THAWED) or v2 `cgroup.freeze` (1/0, Linux 5.2+). */
  freeze?: { file: string; kind: 'v1' | 'v2' };
  kill?: string;
  events?: string;
}

type Source = 'v2' | 'v1' | null;

function sourceOf(layout: CgroupLayout, v2Name: string, v1Name: V1Controller): Source {
  if (layout.v2Root !== undefined && layout.v2Controllers.includes(v2Name)) return 'v2';
  if (layout.v1[v1Name] !== undefined) return 'v1';
  return null;
}

export function planReplicaCgroup(
  layout: CgroupLayout,
  parent: string,
  replicaId: string,
): ReplicaCgroupPlan {
  const cpu = sourceOf(layout, 'cpu', 'cpu');
  const memory = sourceOf(layout, 'memory', 'memory');
  const pids = sourceOf(layout, 'pids', 'pids');
  // In hybrid layouts stats come from v1 (cpuacct), as the controllers live there.
  const cpuacct: Source = layout.v1.cpuacct !== undefined ? 'v1' : layout.v2Root !== undefined ? 'v2' : null;
  // v2's freezer is core cgroup (cgroup.freeze, no controller to enable), so a hybrid layout
  // freezes through the v2 tree that already holds the replica: one v1 cgroup fewer to create,
  // join and remove per replica. v1's freezer only where v2 cannot freeze.
  const freezer: Source =
    layout.v2Root !== undefined && layout.cgroupFreeze ? 'v2' : layout.v1.freezer !== undefined ? 'v1' : null;

  const plan: ReplicaCgroupPlan = {
    v1Dirs: {},
    dirs: [],
    parentDirs: [],
    v2SubtreeDirs: [],
    v2Enable: [],
    procsFiles: [],
    joinFiles: [],
    files: {},
  };
  const f = plan.files;

  if (layout.v2Root !== undefined) {
    const v2Dir = join(layout.v2Root, parent, replicaId);
    plan.v2Dir = v2Dir;
    plan.dirs.push(v2Dir);
    plan.parentDirs.push(join(layout.v2Root, parent));
    plan.v2Enable = (['cpu', 'memory', 'pids'] as const).filter((c) => layout.v2Controllers.includes(c));
    if (plan.v2Enable.length > 0) {
      const segments = parent.split('/');
      for (let i = 0; i <= segments.length; i++) {
        plan.v2SubtreeDirs.push(join(layout.v2Root, ...segments.slice(0, i)));
      }
    }
    if (layout.cgroupKill) f.kill = join(v2Dir, 'cgroup.kill');
    f.events = join(v2Dir, 'cgroup.events');
    if (cpu === 'v2') f.cpuMax = join(v2Dir, 'cpu.max');
    if (memory === 'v2') {
      f.memoryMax = join(v2Dir, 'memory.max');
      f.memorySwapMax = join(v2Dir, 'memory.swap.max');
      f.memoryCurrent = join(v2Dir, 'memory.current');
      f.memoryPeak = join(v2Dir, 'memory.peak');
      f.oomEvents = join(v2Dir, 'memory.events');
    }
    if (pids === 'v2') {
      f.pidsMax = join(v2Dir, 'pids.max');
      f.pidsCurrent = join(v2Dir, 'pids.current');
    }
    if (cpuacct === 'v2') f.cpuUsage = { file: join(v2Dir, 'cpu.stat'), format: 'cpu.stat' };
    if (freezer === 'v2') f.freeze = { file: join(v2Dir, 'cgroup.freeze'), kind: 'v2' };
  }

  const joinV1 = (controller: V1Controller): string => {
    const mount = layout.v1[controller] as string;
    const dir = join(mount, parent, replicaId);
    plan.v1Dirs[controller] = dir;
    if (!plan.dirs.includes(dir)) {
      plan.dirs.push(dir);
      plan.parentDirs.push(join(mount, parent));
      plan.procsFiles.push(join(dir, 'cgroup.procs'));
      plan.joinFiles.push(join(dir, 'tasks'));
    }
    return dir;
  };

  if (cpu === 'v1') {
    const dir = joinV1('cpu');
    f.cpuCfsQuota = join(dir, 'cpu.cfs_quota_us');
    f.cpuCfsPeriod = join(dir, 'cpu.cfs_period_us');
  }
  if (cpuacct === 'v1') f.cpuUsage = { file: join(joinV1('cpuacct'), 'cpuacct.usage'), format: 'nanos' };
  if (memory === 'v1') {
    const dir = joinV1('memory');
    f.memoryLimit = join(dir, 'memory.limit_in_bytes');
    f.memswLimit = join(dir, 'memory.memsw.limit_in_bytes');
    f.memorySwappiness = join(dir, 'memory.swappiness');
    f.memoryCurrent = join(dir, 'memory.usage_in_bytes');
    f.memoryPeak = join(dir, 'memory.max_usage_in_bytes');
    f.oomEvents = join(dir, 'memory.oom_control');
  }
  if (pids === 'v1') {
    const dir = joinV1('pids');
    f.pidsMax = join(dir, 'pids.max');
    f.pidsCurrent = join(dir, 'pids.current');
  }
  if (freezer === 'v1') f.freeze = { file: join(joinV1('freezer'), 'freezer.state'), kind: 'v1' };
  // Membership only, in the hierarchies where the runtime itself sits below the root: the replica
  // must not stay in the runtime's own cgroup there (detect.ts, v1Nested).
  for (const mount of layout.v1Nested) {
    const dir = join(mount, parent, replicaId);
    if (plan.dirs.includes(dir)) continue;
    plan.dirs.push(dir);
    plan.parentDirs.push(join(mount, parent));
    plan.procsFiles.push(join(dir, 'cgroup.procs'));
    plan.joinFiles.push(join(dir, 'tasks'));
  }
  return plan;
}

/** The per-host parent directory in every hierarchy a replica would use; the first is used for listing. */
export function parentDirsOf(layout: CgroupLayout, parent: string): string[] {
  return planReplicaCgroup(layout, parent, 'placeholder').parentDirs;
}
