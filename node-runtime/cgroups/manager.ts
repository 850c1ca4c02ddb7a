import { type Dirent, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { CgroupLayout } from './detect.ts';
import { readProcs, writeControl } from './io.ts';
import { killCgroup } from './kill.ts';
import { type CgroupLimits, limitWrites, validateLimits } from './limits.ts';
import { assertSafeName, assertSafeParent } from './names.ts';
import { parentDirsOf, planReplicaCgroup, type ReplicaCgroupPlan } from './paths.ts';
import { type CgroupStats, readOomKills, readStats } from './stats.ts';

export interface CgroupManagerOptions {
  layout: CgroupLayout;
  /** Per-host parent below each hierarchy root, e.g. `orrery/host-a`. */
  parent: string;
  /**
   * Caps on the per-host parent itself (memory and pids; cpu is shared by weight), so that the
   * workloads together cannot take the machine from the runtime and the system. Applied where the
   * layout has the controller, v2 or v1, when the parent is made.
   */
  parentLimits?: Pick<CgroupLimits, 'memoryBytes' | 'pids'>;
  log?: Logger;
}

/** What the native spawn needs to place a child: CLONE_INTO_CGROUP target plus v1 procs files. */
export interface SpawnTarget {
  v2Dir?: string;
  procsFiles: string[];
}

/** Names of the cgroups directly below `dir` (its subdirectories); [] when `dir` does not exist. */
export function childCgroups(dir: string): string[] {
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return entries.filter((e) => e.isDirectory()).map((e) => e.name);
}

/** rmdir on a cgroup that just emptied can briefly return EBUSY while the kernel finishes exits. */
const REMOVE_RETRY_MS = 2_000;

/**
 * Removes one cgroup directory (it must have no child cgroup), retrying EBUSY for `retryMs`; gone
 * already is fine. Throws, naming the directory and the errno, when it stays.
 */
export async function removeCgroupDir(dir: string, retryMs = REMOVE_RETRY_MS): Promise<void> {
  const deadline = Date.now() + retryMs;
  for (;;) {
    try {
      rmdirSync(dir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || Date.now() >= deadline) {
        throw new Error(`removing cgroup ${dir} failed: ${code}`, { cause: error });
      }
      await sleep(10);
    }
  }
}

function writeLimits(plan: ReplicaCgroupPlan, limits: CgroupLimits, log?: Logger, fresh = false): void {
  for (const write of limitWrites(plan, limits, { fresh })) {
    try {
      writeControl(write.file, write.value);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (write.optional && code === 'ENOENT') {
        log?.debug({ file: write.file }, 'optional cgroup knob absent on this kernel');
        continue;
      }
      if (write.tolerateEinval && code === 'EINVAL') continue;
      throw error;
    }
  }
}

export class ReplicaCgroup {
  readonly id: string;
  readonly plan: ReplicaCgroupPlan;
  readonly #log: Logger | undefined;

  constructor(id: string, plan: ReplicaCgroupPlan, log?: Logger) {
    this.id = id;
    this.plan = plan;
    this.#log = log;
  }

  /** Hand this to the native spawn: v2 membership by CLONE_INTO_CGROUP, v1 by the child's own "0" writes. */
  get spawnTarget(): SpawnTarget {
    const target: SpawnTarget = { procsFiles: [...this.plan.joinFiles] };
    if (this.plan.v2Dir !== undefined) target.v2Dir = this.plan.v2Dir;
    return target;
  }

  /** The cgroup v2 directory's id (its inode number, what bpf_get_current_cgroup_id() answers), if there is one. */
  get v2Id(): bigint | undefined {
    if (this.plan.v2Dir === undefined) return undefined;
    try {
      return statSync(this.plan.v2Dir, { bigint: true }).ino;
    } catch {
      return undefined;
    }
  }

  /** Moves an already running process into the cgroup in every hierarchy (fallback when clone3 is refused; tests). */
  async attach(pid: number): Promise<void> {
    const files = this.plan.v2Dir === undefined ? [] : [`${this.plan.v2Dir}/cgroup.procs`];
    for (const file of [...files, ...this.plan.procsFiles]) writeControl(file, String(pid));
  }

  async setLimits(limits: CgroupLimits): Promise<void> {
    writeLimits(this.plan, validateLimits(limits), this.#log);
  }

  async stats(): Promise<CgroupStats> {
    return readStats(this.plan.files, () => this.#pids().length);
  }

  /** Current OOM-kill counter; record it when a process starts. */
  async oomKills(): Promise<number> {
    return readOomKills(this.plan.files);
  }

  /**
   * True when the OOM killer struck since the counter read `sinceCount`. A process that died of
   * SIGKILL while this is true is reported as OOMKilled (as the kubelet does from memory.events).
   */
  async oomKilled(sinceCount: number): Promise<boolean> {
    return (await this.oomKills()) > sinceCount;
  }

  /** Every process in the cgroup, across all hierarchies, deduplicated and sorted. */
  async pids(): Promise<number[]> {
    return this.#pids();
  }

  #pids(): number[] {
    const lists = this.plan.dirs.map((dir) => readProcs(`${dir}/cgroup.procs`));
    return [...new Set(lists.flat())].sort((a, b) => a - b);
  }

  /** v2 `cgroup.events` populated flag, or whether any hierarchy lists a pid. */
  async populated(): Promise<boolean> {
    if (this.plan.files.events !== undefined) {
      try {
        if (/^populated 1$/m.test(readFileSync(this.plan.files.events, 'utf8'))) return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    return this.#pids().length > 0;
  }

  kill(): Promise<void> {
    const options: Parameters<typeof killCgroup>[0] = { files: this.plan.files, pids: () => this.#pids() };
    if (this.#log !== undefined) options.log = this.#log;
    return killCgroup(options);
  }

  /** Removes the replica directory from every hierarchy; the cgroup must be empty (kill() first). */
  async remove(): Promise<void> {
    for (const dir of this.plan.dirs) await removeCgroupDir(dir);
  }
}

export class CgroupManager {
  readonly layout: CgroupLayout;
  readonly parent: string;
  readonly #log: Logger | undefined;
  #subtreeEnabled = false;
  #parentsMade = false;
  #parentCapped = false;
  readonly #parentLimits: CgroupLimits;

  constructor(options: CgroupManagerOptions) {
    assertSafeParent(options.parent, 'options.parent');
    this.layout = options.layout;
    this.parent = options.parent;
    this.#log = options.log;
    this.#parentLimits = validateLimits(options.parentLimits ?? {});
  }

  /**
   * The parent's own memory and pids files: the replica plan's, one directory up. Written by every
   * new manager (a runtime restart may bring other flags); a cap the kernel refuses (v1 memory
   * below what the parent already uses: EBUSY) is logged, not fatal.
   */
  #capParent(plan: ReplicaCgroupPlan): void {
    if (this.#parentCapped) return;
    const { memoryBytes, pids } = this.#parentLimits;
    if (memoryBytes === undefined && pids === undefined) return;
    const up = (file: string | undefined) =>
      file === undefined ? undefined : join(dirname(dirname(file)), basename(file));
    const f = plan.files;
    const files: ReplicaCgroupPlan['files'] = {};
    if (memoryBytes !== undefined) {
      for (const key of ['memoryMax', 'memorySwapMax', 'memoryLimit', 'memswLimit'] as const) {
        const file = up(f[key]);
        if (file !== undefined) files[key] = file;
      }
    }
    if (pids !== undefined && f.pidsMax !== undefined) files.pidsMax = up(f.pidsMax) as string;
    const limits: CgroupLimits = {};
    if (memoryBytes !== undefined) limits.memoryBytes = memoryBytes;
    if (pids !== undefined) limits.pids = pids;
    this.#parentCapped = true;
    try {
      writeLimits({ ...plan, files }, limits, this.#log);
      this.#log?.info({ parent: this.parent, ...limits }, 'per-host cgroup parent capped');
    } catch (error) {
      // Replicas still start under their own limits; the parent keeps what it had.
      this.#log?.warn(
        { parent: this.parent, ...limits, err: (error as Error).message },
        'per-host cgroup parent not capped',
      );
    }
  }

  #plan(replicaId: string): ReplicaCgroupPlan {
    assertSafeName(replicaId, 'replicaId');
    return planReplicaCgroup(this.layout, this.parent, replicaId);
  }

  /** mkdir -p of the per-host parents, once per manager (again after removeParentIfEmpty). */
  #makeParents(plan: ReplicaCgroupPlan): void {
    if (this.#parentsMade) return;
    for (const dir of plan.parentDirs) mkdirSync(dir, { recursive: true });
    this.#parentsMade = true;
  }

  /** cgroup v2 only hands a controller to children whose parent enables it in cgroup.subtree_control. */
  async #enableSubtree(plan: ReplicaCgroupPlan): Promise<void> {
    if (this.#subtreeEnabled || plan.v2Enable.length === 0) return;
    const value = plan.v2Enable.map((c) => `+${c}`).join(' ');
    for (const dir of plan.v2SubtreeDirs) writeControl(`${dir}/cgroup.subtree_control`, value);
    this.#subtreeEnabled = true;
  }

  /** Creates (or reuses) the replica's cgroup in every hierarchy and applies `limits`. */
  async create(replicaId: string, limits: CgroupLimits = {}): Promise<ReplicaCgroup> {
    const plan = this.#plan(replicaId);
    const checked = validateLimits(limits);
    const cgroup = new ReplicaCgroup(replicaId, plan, this.#log);
    try {
      this.#makeParents(plan);
      await this.#enableSubtree(plan);
      this.#capParent(plan);
      // Fresh when every directory is new (the parents exist by now): its knobs are at the
      // kernel defaults, and writing "unlimited" again is left out (limits.ts says why).
      let fresh = true;
      for (const dir of plan.dirs) {
        try {
          mkdirSync(dir);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
          fresh = false;
        }
      }
      writeLimits(plan, checked, this.#log, fresh);
    } catch (error) {
      // Leave nothing half-made behind; an rmdir failure here must not hide the first error.
      await cgroup.remove().catch(() => {});
      throw new Error(`creating cgroup for replica ${replicaId} failed: ${(error as Error).message}`, {
        cause: error,
      });
    }
    this.#log?.debug({ replicaId, dirs: plan.dirs, limits: checked }, 'replica cgroup created');
    return cgroup;
  }

  /** The existing cgroup of a replica (re-adoption after a runtime restart), or null. */
  open(replicaId: string): ReplicaCgroup | null {
    const plan = this.#plan(replicaId);
    if (!plan.dirs.some((dir) => existsSync(dir))) return null;
    return new ReplicaCgroup(replicaId, plan, this.#log);
  }

  /** Replica ids with a cgroup under the parent in any hierarchy. */
  async list(): Promise<string[]> {
    const ids = new Set<string>();
    for (const dir of parentDirsOf(this.layout, this.parent)) for (const id of childCgroups(dir)) ids.add(id);
    return [...ids].sort();
  }

  /**
   * Kills and removes every replica cgroup under the parent, then the parent (teardown of tests
   * and benchmarks, and of whatever a crashed run left). Goes on past a failure and throws the
   * first one at the end, so one stuck cgroup does not keep the others alive.
   */
  async removeAll(): Promise<void> {
    let first: unknown;
    for (const id of await this.list()) {
      const cgroup = this.open(id);
      try {
        await cgroup?.kill();
        await cgroup?.remove();
      } catch (error) {
        first ??= error;
      }
    }
    try {
      await this.removeParentIfEmpty();
    } catch (error) {
      first ??= error;
    }
    if (first !== undefined) throw first;
  }

  /**
   * Removes the per-host parent from every hierarchy when no replica is left, then each of its
   * ancestors within the parent path (`orrery` of `orrery/<host>`) that is left empty, as
   * `mkdir -p` made them; one still used by another host stays. True when the parent is gone.
   */
  async removeParentIfEmpty(): Promise<boolean> {
    if ((await this.list()).length > 0) return false;
    this.#parentsMade = false;
    this.#parentCapped = false;
    this.#subtreeEnabled = false;
    const levels = this.parent.split('/').filter(Boolean).length;
    for (const dir of parentDirsOf(this.layout, this.parent)) {
      let current = dir;
      for (let level = 0; level < levels; level++, current = dirname(current)) {
        try {
          rmdirSync(current);
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') continue;
          if (code === 'EBUSY' || code === 'ENOTEMPTY') {
            if (level === 0) return false;
            break; // an ancestor shared with another host
          }
          throw error;
        }
      }
    }
    return true;
  }
}
