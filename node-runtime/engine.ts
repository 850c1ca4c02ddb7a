/**
 * The runtime engine: the typed API the host agent drives (run, stop, status, events), over the
 * native spawn/pidfd addon, the cgroup manager, the log files and the state store. The state
 * directory plus the cgroup tree are the truth; a new Engine on the same stateDir re-adopts
 * every replica without restarting it (README "Re-adoption").
 */
import { EventEmitter } from 'node:events';
import { chmodSync, mkdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { newLogger } from '../platform/log.ts';
import { freePort } from '../platform/net.ts';
import { type CgroupLayout, CgroupManager, type CgroupStats, detectCgroupLayout } from './cgroups/index.ts';
import { claim, claimContent, holdsClaim } from './claims.ts';
import { LogStore } from './logs/index.ts';
import { closeFd, mountTmpfs, remountReadOnly, unmount, writableClone } from './native/index.ts';
import { StateStore } from './state/store.ts';
import type { ProcessPorts } from './supervisor/command.ts';
import { loadProcessApi, type ProcessApi } from './supervisor/process-api.ts';
import { type ReplicaRecord, ReplicaSupervisor, type UserRange } from './supervisor/replica.ts';
import {
  type EngineEvent,
  USER_NAMESPACE_SIZE,
  validateWorkloadSpec,
  type WorkloadSpec,
  type WorkloadStatus,
} from './supervisor/spec.ts';
import type { VolumeFile } from './volumes/atomic-writer.ts';
import { type VolumeIds, VolumeManager } from './volumes/manager.ts';

/** Default of EngineOptions.logRotateIntervalMs. */
const LOG_ROTATE_INTERVAL_MS = 30_000;
/** The longest delay setInterval takes; above it Node.js runs the timer every 1 ms instead. */
const MAX_TIMER_MS = 2_147_483_647;

export interface EngineOptions {
  /** Directory for replica state records (created if missing). */
  stateDir: string;
  /** Root of the per-process log files: `<logDir>/<replica id>/<process>.log`. */
  logDir: string;
  /** Per-host cgroup parent below each hierarchy root, e.g. `orrery/<host>`. */
  cgroupParent: string;
  log?: Logger;
  /** Override the kernel operations (defaults to node-runtime/native). */
  processApi?: ProcessApi;
  /** PATH to resolve commands with when a process's env sets none; default: the runtime's PATH. */
  defaultPath?: string;
  /** Log rotation (LogStore): size of a live file before rotation and files kept per run. */
  logRotation?: { maxBytes?: number; maxFiles?: number };
  /**
   * How often live log files are checked against `logRotation.maxBytes` and rotated (whole ms,
   * 1 to 2147483647); default 30 s. A pass still running when the next is due is not overlapped.
   */
  logRotateIntervalMs?: number;
  /**
   * Host ids for the replicas' user namespaces: a replica gets firstHostId + n·65536 .. +65535,
   * n the lowest slot free on the machine, kept in its state record. Default 2^30 and 16384 slots
   * (up to 2^31), above the ranges /etc/subuid hands to users. Slots are claimed machine-wide
   * (several runtimes may share a machine) by a file `<claimDir>/<n>` created O_EXCL, default
   * /run/orrery/userns (tmpfs: a reboot, which ends every workload, frees them all).
   */
  userNamespaces?: { firstHostId?: number; slots?: number; claimDir?: string };
  /**
   * Limits a replica gets when its spec has none (the host agent's --default-memory and
   * --default-pids): without them one fork bomb or leak could take the host.
   */
  defaultResources?: { memoryBytes?: number; pids?: number };
  /** Caps on the per-host cgroup parent, so that workloads cannot starve the runtime (CgroupManager). */
  parentLimits?: { memoryBytes?: number; pids?: number };
  /**
   * Paths a replica with a mount namespace does not see (each covered by an empty read-only
   * tmpfs), besides stateDir, logDir and the user namespace claim dir, which always are: the host
   * agent adds its own state dir (its API token) and a pod's service account token.
   */
  maskPaths?: string[];
  /**
   * A directory every replica's processes are pivoted into (pivot_root, in a mount namespace each
   * gets whatever its template says): the node's filesystem, mounted at /host, for a runtime that
   * runs in a container (deploy/). Commands, working directories and maskPaths are paths inside
   * it. Default: the runtime's own root.
   */
  workloadRoot?: string;
  /**
   * Where replicas' volumes live (node-runtime/volumes/): a disk emptyDir is a directory here,
   * configMap and secret volumes and Memory emptyDirs tmpfs mounts under it. Default
   * `<stateDir>/volumes`; the host agent passes its state dir's (disk, not the run dir's tmpfs).
   */
  volumeDir?: string;
  /**
   * Where persistent volumes live (their directories outlive the replicas: only removePersistent
   * removes one). Default `<stateDir>/persistent`; on disk.
   */
  persistentDir?: string;
}

/** The size of a Memory emptyDir without sizeLimit when the replica has no memory limit either. */
const DEFAULT_MEMORY_VOLUME_BYTES = 64 * 1024 * 1024;

/** Engine.run's second argument: what a replica's configMap and secret volumes hold at its start. */
export interface RunOptions {
  /** Per volume name (a `files` volume of the spec): its files. Absent: an empty volume. */
  files?: ReadonlyMap<string, readonly VolumeFile[]>;
  /**
   * The restart request the replica starts under (opaque; the host agent's
   * `orrery.dev/restartedAt`): recorded as handled, so Engine.restart with it is not needed.
   */
  restartedAt?: string;
}

/** Default of EngineOptions.userNamespaces.firstHostId. */
export const USER_NAMESPACE_FIRST_HOST_ID = 2 ** 30;
const USER_NAMESPACE_SLOTS = 16384;

export interface StopOptions {
  /** Overrides the replica's terminationGracePeriodSeconds. */
  graceSeconds?: number;
}

/** Where a replica lives, for whoever guards its ports (the kernel fast path's bind program). */
export interface Placement {
  replica: string;
  /** Its cgroup v2 directory's id (inode number); undefined without a v2 tree. */
  cgroupId: bigint | undefined;
  /** Every port of its processes. */
  ports: number[];
}

export interface RuntimeEvents {
  event: [EngineEvent];
  /** A replica's cgroup exists and its processes are about to start (or be re-adopted). */
  placed: [Placement];
  /** A replica is gone: stopped, its cgroup removed. */
  unplaced: [Placement];
}

export class Engine extends EventEmitter<RuntimeEvents> {
  readonly options: EngineOptions;
  readonly log: Logger;
  readonly #replicas = new Map<string, ReplicaSupervisor>();
  readonly #starting = new Map<string, { spec: WorkloadSpec; done: Promise<WorkloadStatus> }>();
  readonly #stopping = new Map<string, Promise<void>>();
  readonly #placements = new Map<string, Placement>();
  readonly #store: StateStore;
  #exitDirMade = false;
  readonly logs: LogStore;
  #rotateTimer: NodeJS.Timeout | undefined;
  #rotatePass: Promise<void> | undefined;
  #api: ProcessApi | undefined;
  #cgroups: CgroupManager | undefined;
  #layout: CgroupLayout | undefined;
  #closed = false;
  /** User namespace slot -> replica id (see EngineOptions.userNamespaces). */
  readonly #userSlots = new Map<number, string>();
  /** Slots found claimed by another runtime on the machine (#allocateUserRange). */
  readonly #claimedElsewhere = new Set<number>();
  readonly #firstHostId: number;
  readonly #userNamespaceSlots: number;
  readonly volumes: VolumeManager;

  constructor(options: EngineOptions) {
    super();
    for (const key of ['stateDir', 'logDir', 'cgroupParent'] as const) {
      if (typeof options?.[key] !== 'string' || options[key] === '') {
        throw new TypeError(
          `options.${key} must be a non-empty string, got ${JSON.stringify(options?.[key])}`,
        );
      }
    }
    const interval = options.logRotateIntervalMs;
    if (
      interval !== undefined &&
      (typeof interval !== 'number' || !Number.isInteger(interval) || interval < 1 || interval > MAX_TIMER_MS)
    ) {
      const got =
        typeof interval === 'number' ? String(interval) : `${typeof interval} ${JSON.stringify(interval)}`;
      throw new TypeError(
        `options.logRotateIntervalMs must be a whole number of milliseconds from 1 to ${MAX_TIMER_MS}, got ${got}`,
      );
    }
    this.#firstHostId = options.userNamespaces?.firstHostId ?? USER_NAMESPACE_FIRST_HOST_ID;
    this.#userNamespaceSlots = options.userNamespaces?.slots ?? USER_NAMESPACE_SLOTS;
    if (
      !Number.isInteger(this.#firstHostId) ||
      this.#firstHostId < 1 ||
      !Number.isInteger(this.#userNamespaceSlots) ||
      this.#userNamespaceSlots < 1 ||
      this.#firstHostId + this.#userNamespaceSlots * USER_NAMESPACE_SIZE > 0xffffffff
    ) {
      throw new TypeError(
        `options.userNamespaces must be a positive firstHostId and slots, ending at or below 4294967295, got ${JSON.stringify(options.userNamespaces)}`,
      );
    }
    this.options = options;
    this.log = options.log ?? newLogger('orrery-engine');
    this.#store = new StateStore(options.stateDir);
    this.volumes = new VolumeManager(
      options.volumeDir ?? path.join(options.stateDir, 'volumes'),
      { mountTmpfs, unmount, remountReadOnly, writableClone, closeFd },
      options.workloadRoot === undefined ? '/' : path.resolve(options.workloadRoot),
      {
        root: options.persistentDir ?? path.join(options.stateDir, 'persistent'),
        firstHostId: options.userNamespaces?.firstHostId ?? USER_NAMESPACE_FIRST_HOST_ID,
      },
    );
    this.logs = new LogStore({
      root: options.logDir,
      ...options.logRotation,
      onRotated: (replica, proc, { dropped }) => {
        if (dropped > 0)
          this.log.warn(
            { replica, process: proc, droppedBytes: dropped },
            'log written faster than rotated: oldest output dropped',
          );
      },
      onError: (replica, proc, err) =>
        this.log.warn({ replica, process: proc, err: err.message }, 'log rotation failed'),
    });
  }

  get cgroupLayout(): CgroupLayout | undefined {
    return this.#layout;
  }

  /** Detect cgroups, load the addon, and re-adopt every replica recorded in stateDir. */
  async start(): Promise<void> {
    const root = this.options.workloadRoot;
    if (root !== undefined && !statSync(root, { throwIfNoEntry: false })?.isDirectory()) {
      throw new Error(
        `workloadRoot ${root} is not a directory (the node's filesystem, e.g. mounted at /host)`,
      );
    }
    this.#api = this.options.processApi ?? (await loadProcessApi());
    this.#layout = detectCgroupLayout();
    this.#cgroups = new CgroupManager({
      layout: this.#layout,
      parent: this.options.cgroupParent,
      log: this.log,
      ...(this.options.parentLimits ? { parentLimits: this.options.parentLimits } : {}),
    });
    await this.#store.init();
    // Replicas run as unprivileged host ids (their user namespaces): the runtime's own directories
    // are closed to them by their modes, tightened here when they were made looser (mkdir's mode
    // applies only to a directory it creates).
    for (const dir of [this.options.stateDir, this.options.logDir]) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
    }
    const started = Date.now();
    const ids = await this.#store.ids();
    await Promise.all(
      ids.map((id) =>
        this.#readopt(id).catch((err: Error) => {
          // One unreadable record must not keep the others from being supervised. Without a
          // record there is no spec to supervise by: its cgroup is treated as an orphan below.
          this.log.error({ replica: id, err: err.message }, 're-adoption failed; the replica is dropped');
          this.#replicas.delete(id);
        }),
      ),
    );
    await this.#removeOrphanCgroups();
    this.#rotateTimer = setInterval(() => {
      // Two passes over the same file at once would rotate it twice (copytruncate is not atomic).
      this.#rotatePass ??= this.rotateLogs()
        .catch((err: Error) => this.log.warn({ err: err.message }, 'log rotation pass failed'))
        .finally(() => {
          this.#rotatePass = undefined;
        });
    }, this.options.logRotateIntervalMs ?? LOG_ROTATE_INTERVAL_MS);
    this.#rotateTimer.unref();
    if (ids.length > 0)
      this.log.info({ replicas: ids.length, ms: Date.now() - started }, 're-adopted replicas');
  }

  async #readopt(id: string): Promise<void> {
    const cgroups = this.#cgroups as CgroupManager;
    const record = this.#store.load(id) as ReplicaRecord | undefined;
    if (record === undefined) return;
    if (record.phase === 'Terminating') {
      // The runtime died in the middle of a stop: finish it.
      const cgroup = cgroups.open(id);
      if (cgroup) {
        await cgroup.kill();
        await cgroup.remove();
      }
      await this.#store.remove(id);
      this.#removeExitStatusFiles(record.spec);
      this.volumes.remove(id);
      this.#emit({ type: 'stopped', replica: id, at: new Date().toISOString() });
      return;
    }
    const cgroup =
      cgroups.open(id) ??
      (await cgroups.create(id, { ...this.options.defaultResources, ...record.spec.resources }));
    if (record.userRange) this.#keepUserRange(id, record.userRange);
    // Kept as they were (a tmpfs outlives the runtime in the host's mount namespace); made again
    // only where missing, and the agent writes the files again at its first sync.
    this.volumes.prepare(
      record.spec,
      this.#volumeIds(record.spec, record.userRange),
      this.#memoryBytes(record.spec),
    );
    this.#place(id, record.ports, cgroup);
    const sup = new ReplicaSupervisor(
      record.spec,
      record.ports,
      this.#deps(cgroup, record.userRange),
      record.createdAt,
    );
    this.#replicas.set(id, sup);
    await sup.adopt(record);
    // Its processes keep writing to the files they had open: kept under the cap as new runs are.
    for (const p of record.spec.processes) this.logs.watch(id, p.name);
  }

  /** A cgroup with no state record belongs to no replica we know: kill it and remove it. */
  async #removeOrphanCgroups(): Promise<void> {
    const cgroups = this.#cgroups as CgroupManager;
    for (const id of await cgroups.list()) {
      if (this.#replicas.has(id)) continue;
      const cgroup = cgroups.open(id);
      if (!cgroup) continue;
      this.log.warn({ replica: id }, 'removing a cgroup with no state record');
      await cgroup.kill();
      await cgroup
        .remove()
        .catch((err: Error) =>
          this.log.error({ replica: id, err: err.message }, 'orphan cgroup not removed'),
        );
    }
  }

  /**
   * Run a replica. Idempotent by spec.id: running the same spec again (even while the first run
   * is still starting) returns its status; a different spec under a running id is refused (stop
   * it first). A run issued while the replica is being stopped starts it afresh after the stop.
   */
  async run(spec: WorkloadSpec, options: RunOptions = {}): Promise<WorkloadStatus> {
    this.#assertStarted('run');
    validateWorkloadSpec(spec);
    for (let stopping = this.#stopping.get(spec.id); stopping; stopping = this.#stopping.get(spec.id)) {
      await stopping.catch(() => {});
    }
    const inFlight = this.#starting.get(spec.id);
    const existing = this.#replicas.get(spec.id);
    if (inFlight || existing) {
      const current = inFlight?.spec ?? (existing as ReplicaSupervisor).spec;
      if (!isDeepStrictEqual(current, spec)) {
        throw new Error(
          `replica ${spec.id} is already running with a different spec; stop it before running the new one`,
        );
      }
      return inFlight ? await inFlight.done : (existing as ReplicaSupervisor).status();
    }
    // From here to the map insertion nothing awaits, so a concurrent run() sees this one.
    const cgroups = this.#cgroups as CgroupManager;
    const copy = structuredClone(spec);
    const done = (async () => {
      const ports = await allocatePorts(copy);
      const userRange = copy.isolation.hostUsers ? undefined : this.#allocateUserRange(copy.id);
      let cgroup: Awaited<ReturnType<CgroupManager['create']>>;
      try {
        cgroup = await cgroups.create(copy.id, { ...this.options.defaultResources, ...copy.resources });
      } catch (err) {
        this.#releaseUserRange(copy.id);
        throw err;
      }
      try {
        const ids = this.#volumeIds(copy, userRange);
        this.volumes.prepare(copy, ids, this.#memoryBytes(copy));
        for (const v of copy.volumes ?? []) {
          if ('files' in v) this.volumes.writeFiles(copy.id, v, options.files?.get(v.name) ?? [], ids.root);
        }
      } catch (err) {
        this.volumes.remove(copy.id);
        await cgroup.remove().catch(() => {});
        this.#releaseUserRange(copy.id);
        throw err;
      }
      // Before the first spawn: a guard on its ports is in place before any process could bind.
      this.#place(copy.id, ports, cgroup);
      const sup = new ReplicaSupervisor(copy, ports, this.#deps(cgroup, userRange));
      sup.restartedAt = options.restartedAt;
      this.#replicas.set(copy.id, sup);
      await sup.start();
      return sup.status();
    })().finally(() => this.#starting.delete(copy.id));
    this.#starting.set(copy.id, { spec: copy, done });
    return done;
  }

  /**
   * Stop a replica: stop signals in reverse order, grace, cgroup kill, cgroup and state removed.
   * A second stop of the same replica waits for the first.
   */
  async stop(id: string, options: StopOptions = {}): Promise<void> {
    this.#assertStarted('stop');
    if (options.graceSeconds !== undefined && !(options.graceSeconds >= 0)) {
      throw new TypeError(`options.graceSeconds must be a non-negative number, got ${options.graceSeconds}`);
    }
    const running = this.#stopping.get(id);
    if (running) return running;
    if (!this.#replicas.has(id) && !this.#starting.has(id))
      throw new Error(`no replica ${id} on this runtime`);
    // Registered before the first await, so a run() issued right after this call waits for it.
    const stopping = (async () => {
      await this.#starting.get(id)?.done.catch(() => {});
      const sup = this.#replicas.get(id);
      if (!sup) throw new Error(`no replica ${id} on this runtime`);
      try {
        await sup.stop(options.graceSeconds);
      } finally {
        if (this.#replicas.get(id) === sup) this.#replicas.delete(id);
      }
      try {
        this.volumes.remove(id);
      } catch (err) {
        this.log.error({ replica: id, err: (err as Error).message }, "removing the replica's volumes failed");
      }
      this.#releaseUserRange(id);
      const placement = this.#placements.get(id);
      if (placement) {
        this.#placements.delete(id);
        this.emit('unplaced', placement);
      }
    })().finally(() => this.#stopping.delete(id));
    this.#stopping.set(id, stopping);
    return stopping;
  }

  /**
   * Restart a replica's processes in place (ReplicaSupervisor.restart): same cgroup, ports and
   * state record, each process stopped within the grace period and started again, its restart
   * counted. `restartedAt` (opaque) is recorded as the request handled, in status().restartedAt.
   */
  async restart(id: string, options: StopOptions & { restartedAt: string }): Promise<void> {
    this.#assertStarted('restart');
    if (typeof options?.restartedAt !== 'string' || options.restartedAt === '') {
      throw new TypeError(
        `options.restartedAt must be a non-empty string, got ${JSON.stringify(options?.restartedAt)}`,
      );
    }
    if (options.graceSeconds !== undefined && !(options.graceSeconds >= 0)) {
      throw new TypeError(`options.graceSeconds must be a non-negative number, got ${options.graceSeconds}`);
    }
    await this.#starting.get(id)?.done.catch(() => {});
    const sup = this.#replicas.get(id);
    if (!sup || this.#stopping.has(id)) throw new Error(`no replica ${id} on this runtime`);
    await sup.restart(options.restartedAt, options.graceSeconds);
  }

  /** Every replica's placement (those re-adopted included). */
  placements(): Placement[] {
    return [...this.#placements.values()];
  }

  #place(id: string, ports: Record<string, ProcessPorts>, cgroup: { v2Id: bigint | undefined }): void {
    const placement: Placement = {
      replica: id,
      cgroupId: cgroup.v2Id,
      ports: Object.values(ports).flatMap((p) => Object.values(p)),
    };
    this.#placements.set(id, placement);
    this.emit('placed', placement);
  }

  /** Stop every replica (in parallel). */
  async stopAll(options: StopOptions = {}): Promise<void> {
    const ids = new Set([...this.#replicas.keys(), ...this.#starting.keys()]);
    await Promise.all([...ids].map((id) => this.stop(id, options)));
  }

  /**
   * Once nothing runs: remove the per-host cgroup parent (and its ancestors in the parent path
   * that are left empty) from every hierarchy, so a host that stops its workloads on exit leaves
   * no cgroup behind. False when something is still there.
   */
  async removeCgroupParentIfEmpty(): Promise<boolean> {
    this.#assertStarted('removeCgroupParentIfEmpty');
    if (this.#replicas.size > 0 || this.#starting.size > 0) return false;
    return (this.#cgroups as CgroupManager).removeParentIfEmpty();
  }

  status(id: string): WorkloadStatus {
    const sup = this.#replicas.get(id);
    if (!sup) throw new Error(`no replica ${id} on this runtime`);
    return sup.status();
  }

  /** The spec a replica runs with (its annotations included); throws for an unknown id. */
  spec(id: string): Readonly<WorkloadSpec> {
    const sup = this.#replicas.get(id);
    if (!sup) throw new Error(`no replica ${id}`);
    return sup.spec;
  }

  has(id: string): boolean {
    return this.#replicas.has(id);
  }

  list(): WorkloadStatus[] {
    return [...this.#replicas.values()].map((s) => s.status());
  }

  /** cgroup usage of a replica (cpu, memory, OOM kills, pids). */
  async stats(id: string): Promise<CgroupStats> {
    this.#assertStarted('stats');
    const cgroup = (this.#cgroups as CgroupManager).open(id);
    if (!this.#replicas.has(id) || !cgroup) throw new Error(`no replica ${id} on this runtime`);
    return cgroup.stats();
  }

  /** Stop watching and leave every workload running, state flushed, for a later re-adoption. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#rotateTimer);
    await this.#rotatePass;
    await this.logs.close();
    await Promise.all([...this.#starting.values()].map((p) => p.done.catch(() => {})));
    await Promise.all([...this.#stopping.values()].map((p) => p.catch(() => {})));
    await Promise.all([...this.#replicas.values()].map((s) => s.detach()));
    this.#replicas.clear();
    await this.#store.flush();
  }

  /**
   * The lowest slot no replica on the machine holds. A slot is held from run() until the replica's stop completes
   * (its processes and cgroup are gone by then), and re-taken at re-adoption from the record, so
   * a runtime restart never hands a running replica's ids to another.
   */
  #allocateUserRange(id: string): UserRange {
    mkdirSync(this.#claimDir, { recursive: true, mode: 0o700 });
    // Slots another runtime held when last tried are skipped (several runtimes with a thousand
    // replicas each would otherwise retry each other's claims at every start), until none is left.
    for (const skipElsewhere of [true, false]) {
      if (!skipElsewhere) this.#claimedElsewhere.clear();
      for (let slot = 0; slot < this.#userNamespaceSlots; slot++) {
        if (this.#userSlots.has(slot) || (skipElsewhere && this.#claimedElsewhere.has(slot))) continue;
        if (!this.#claim(slot, id)) {
          this.#claimedElsewhere.add(slot);
          continue;
        }
        this.#userSlots.set(slot, id);
        return { hostId: this.#firstHostId + slot * USER_NAMESPACE_SIZE, size: USER_NAMESPACE_SIZE };
      }
    }
    throw new Error(
      `no user namespace range left for ${id}: all ${this.#userNamespaceSlots} are in use on this machine`,
    );
  }

  get #claimDir(): string {
    return this.options.userNamespaces?.claimDir ?? '/run/orrery/userns';
  }

  #claimOwner(id: string): string {
    return claimContent(path.resolve(this.options.stateDir), { id });
  }

  /** Create the slot's claim file, naming this runtime's state dir and the replica (claims.ts). */
  #claim(slot: number, id: string): boolean {
    return claim(path.join(this.#claimDir, String(slot)), this.#claimOwner(id));
  }

  /**
   * Re-adoption: the record says which slot the replica's processes run with; claim it again. The
   * claim is read first and written only when it is not already this replica's: re-adopting 1,000
   * replicas rewrote 1,000 files, ~40 % of the re-adoption's time (bench/startup.bench.ts).
   */
  #keepUserRange(id: string, range: UserRange): void {
    const offset = range.hostId - this.#firstHostId;
    if (offset < 0 || offset % USER_NAMESPACE_SIZE !== 0) return;
    const slot = offset / USER_NAMESPACE_SIZE;
    this.#userSlots.set(slot, id);
    const file = path.join(this.#claimDir, String(slot));
    const owner = this.#claimOwner(id);
    if (holdsClaim(file, owner)) return;
    mkdirSync(this.#claimDir, { recursive: true, mode: 0o700 });
    writeFileSync(file, owner, { mode: 0o600 });
  }

  #releaseUserRange(id: string): void {
    for (const [slot, owner] of this.#userSlots) {
      if (owner !== id) continue;
      this.#userSlots.delete(slot);
      rmSync(path.join(this.#claimDir, String(slot)), { force: true });
    }
  }

  /**
   * Writes a new version of a running replica's configMap or secret volume (an atomic swap its
   * processes see in place, node-runtime/volumes/atomic-writer.ts).
   */
  writeVolumeFiles(id: string, volume: string, files: readonly VolumeFile[]): void {
    const sup = this.#replicas.get(id);
    const v = sup?.spec.volumes?.find((x) => x.name === volume);
    if (!sup || !v) throw new Error(`no volume ${volume} of a replica ${id} on this runtime`);
    this.volumes.writeFiles(id, v, files, this.#volumeIds(sup.spec, this.#userRangeOf(id)).root);
  }

  /** The keys of the persistent volumes kept on this host (WorkloadSpec persistent volumes). */
  persistentKeys(): string[] {
    return this.volumes.persistentKeys();
  }

  /** Removes a persistent volume's data; refused while a replica that mounts it runs. */
  removePersistent(key: string): void {
    for (const sup of this.#replicas.values()) {
      if (sup.spec.volumes?.some((v) => 'persistent' in v && v.persistent.key === key))
        throw new Error(`persistent volume ${key} is in use by replica ${sup.spec.id}`);
    }
    this.volumes.removePersistent(key);
  }

  #userRangeOf(id: string): UserRange | undefined {
    for (const [slot, owner] of this.#userSlots) {
      if (owner === id)
        return { hostId: this.#firstHostId + slot * USER_NAMESPACE_SIZE, size: USER_NAMESPACE_SIZE };
    }
    return undefined;
  }

  /** The host ids that own a replica's volumes: its processes' user, and its root. */
  #volumeIds(spec: WorkloadSpec, range: UserRange | undefined): VolumeIds {
    const base = range?.hostId ?? 0;
    const user = spec.isolation.user;
    return {
      process: { uid: base + (user?.uid ?? 0), gid: base + (user?.gid ?? 0) },
      root: { uid: base, gid: base },
    };
  }

  #memoryBytes(spec: WorkloadSpec): number {
    return (
      spec.resources.memoryBytes ?? this.options.defaultResources?.memoryBytes ?? DEFAULT_MEMORY_VOLUME_BYTES
    );
  }

  /** What a replica's mount namespace hides (EngineOptions.maskPaths). */
  get #maskPaths(): string[] {
    const paths = [
      this.options.stateDir,
      this.options.logDir,
      this.#claimDir,
      this.volumes.root,
      this.volumes.persistentRoot,
      ...(this.options.maskPaths ?? []),
    ];
    return [...new Set(paths.map((p) => path.resolve(p)))];
  }

  #deps(cgroup: import('./cgroups/index.ts').ReplicaCgroup, userRange?: UserRange) {
    return {
      userRange,
      volumeSource: (spec: WorkloadSpec, volume: string) => {
        const v = spec.volumes?.find((x) => x.name === volume);
        if (!v) throw new Error(`no volume ${volume} in replica ${spec.id}`);
        return this.volumes.source(spec.id, v);
      },
      maskPaths: this.#maskPaths,
      ...(this.options.workloadRoot !== undefined ? { root: path.resolve(this.options.workloadRoot) } : {}),
      api: this.#api as ProcessApi,
      cgroup,
      store: this.#store,
      log: this.log,
      logFile: (replica: string, proc: string) => this.logs.prepareRun(replica, proc),
      exitStatusFile: (replica: string, proc: string) => this.#exitStatusFile(replica, proc),
      removeExitStatusFiles: (spec: WorkloadSpec) => this.#removeExitStatusFiles(spec),
      emit: (e: EngineEvent) => this.#emit(e),
      defaultPath: this.options.defaultPath ?? process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    };
  }

  /**
   * `<stateDir>/exit/<replica>.<process>.status`, removed and created afresh (O_EXCL) by the addon
   * at every spawn of a process under orrery-init (native/src/spawn.c says why not a truncation).
   * One flat directory: a directory per replica would cost an inode allocation (and its removal)
   * per start.
   */
  #exitStatusFile(replica: string, proc: string): string {
    const dir = path.join(this.options.stateDir, 'exit');
    if (!this.#exitDirMade) {
      mkdirSync(dir, { recursive: true });
      this.#exitDirMade = true;
    }
    return path.join(dir, `${replica}.${proc}.status`);
  }

  /** Forget a stopped replica's exit status files. */
  #removeExitStatusFiles(spec: WorkloadSpec): void {
    for (const p of spec.processes) {
      try {
        unlinkSync(this.#exitStatusFile(spec.id, p.name));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }

  /** Size-rotate every live log file (copytruncate: the child keeps its O_APPEND fd). */
  async rotateLogs(): Promise<void> {
    for (const sup of this.#replicas.values()) {
      for (const p of sup.spec.processes) {
        // A direct stat first: with a thousand processes the periodic pass is then ~1000 cheap
        // syscalls instead of a thousand threadpool round trips, most of which find nothing to do.
        const size = statSync(this.logs.pathFor(sup.spec.id, p.name), { throwIfNoEntry: false })?.size ?? 0;
        if (size < this.logs.maxBytes) continue;
        await this.logs.rotateIfNeeded(sup.spec.id, p.name).catch((err: Error) => {
          this.log.warn({ replica: sup.spec.id, process: p.name, err: err.message }, 'log rotation failed');
        });
      }
    }
  }

  #emit(e: EngineEvent): void {
    this.log.debug(e, `replica event ${e.type}`);
    this.emit('event', e);
  }

  #assertStarted(what: string): void {
    if (this.#closed) throw new Error(`runtime is closed; cannot ${what}`);
    if (!this.#cgroups) throw new Error(`runtime not started: call start() before ${what}()`);
  }
}

/** Ports without a number get a free loopback port, chosen once and kept in the state record. */
async function allocatePorts(spec: WorkloadSpec): Promise<Record<string, ProcessPorts>> {
  const out: Record<string, ProcessPorts> = {};
  for (const p of spec.processes) {
    const ports: ProcessPorts = {};
    for (const port of p.ports ?? []) ports[port.name] = port.port ?? (await freePort());
    out[p.name] = ports;
  }
  return out;
}
