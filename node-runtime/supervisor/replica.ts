/**
 * One supervised replica: an ordered group of processes in one cgroup. Exits arrive from pidfd
 * watches (event-driven, never polled); every decision comes from ./policy.ts; every action that
 * follows a decision runs through a per-replica queue so decisions see a consistent group.
 */
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import type { Logger } from 'pino';
import { readProcStatFieldsAsync } from '../../platform/proc.ts';
import type { ReplicaCgroup } from '../cgroups/index.ts';
import { type ProbeContext, ProbeRunner } from '../probes/runner.ts';
import type { StateStore, StoredReplica } from '../state/store.ts';
import { buildEnv, type ProcessPorts, resolveCommand } from './command.ts';
import {
  afterBackoff,
  decideOnExit,
  exitReason,
  finishedPhase,
  type IntensityState,
  initialIntensity,
} from './policy.ts';
import { type ExecTarget, execInReplica } from './probe-exec.ts';
import type { ExitStatus, ProcessApi, SpawnFailure, SpawnRequest } from './process-api.ts';
import {
  type EngineEvent,
  effectiveNamespaces,
  type LastExit,
  type Namespace,
  type ProcessSpec,
  type ProcessState,
  type ProcessStatus,
  type WorkloadPhase,
  type WorkloadSpec,
  type WorkloadStatus,
} from './spec.ts';
import type { ExitFacts } from './types.ts';

export interface ReplicaDeps {
  api: ProcessApi;
  cgroup: ReplicaCgroup;
  store: StateStore;
  log: Logger;
  /** Log file for the next run of a process (the previous run kept, directories made). */
  logFile: (replica: string, process: string) => string;
  /** Where orrery-init records the workload's own exit (pid namespace replicas). */
  exitStatusFile: (replica: string, process: string) => string;
  /** Remove the exit status files of a stopped replica. */
  removeExitStatusFiles: (spec: WorkloadSpec) => void;
  emit: (event: EngineEvent) => void;
  /** PATH used to resolve commands when the process's env has none (the runtime's own). */
  defaultPath: string;
  /**
   * The host ids the replica's user namespace maps 0..size-1 to (the engine's allocation, kept in
   * the state record); absent with `isolation.hostUsers`.
   */
  userRange?: UserRange;
  /** Paths hidden from a replica with a mount namespace (the runtime's own directories). */
  maskPaths?: string[];
  /**
   * The root every process of the replica is pivoted into (EngineOptions.workloadRoot): each then
   * gets a mount namespace, whatever its template asks for.
   */
  root?: string;
  /** The directory a volume's mounts attach (VolumeManager.source). */
  volumeSource?: (spec: WorkloadSpec, volume: string) => string;
}

/** Host uids and gids hostId..hostId+size-1: the replica's user namespace maps its ids 0.. there. */
export interface UserRange {
  hostId: number;
  size: number;
}

/** What the state file keeps per process: enough to re-adopt it without a pidfd. */
export interface StoredProcess {
  name: string;
  pid: number | null;
  /** /proc/<pid>/stat starttime (clock ticks since boot), decimal; rules out PID reuse. */
  startTime: string | null;
  startedAt: string | null;
  state: ProcessState;
  finished: boolean;
  restarts: number;
  lastExit: LastExit | null;
}

export interface ReplicaRecord extends StoredReplica<WorkloadSpec, StoredProcess> {
  phase: WorkloadPhase;
  startedAt: string | null;
  backoffUntil?: string;
  crashLoops: number;
  /** Absent: no user namespace (isolation.hostUsers), or a record from before they existed. */
  userRange?: UserRange;
  /** The last restart request acted on (ReplicaSupervisor.restartedAt). */
  restartedAt?: string;
}

interface Slot {
  index: number;
  spec: ProcessSpec;
  env: string[];
  envObject: Record<string, string>;
  pid: number | null;
  pidfd: number | null;
  startTime: bigint | null;
  startedAt: string | null;
  state: ProcessState;
  /** Exited and, by policy, staying down (not waiting for a restart). */
  finished: boolean;
  /** Incremented on every start attempt; exits of older runs are ignored. */
  run: number;
  hasRun: boolean;
  restarts: number;
  lastExit: LastExit | null;
  stopRequested: boolean;
  livenessFailed: string | undefined;
  ready: boolean;
  cancelWatch: (() => void) | null;
  exitWaiters: (() => void)[];
  probes: ProbeRunner[];
}

/** How long to wait for an exit after SIGKILL before giving up on a process (it is in D state). */
const KILL_WAIT_MS = 5_000;

export class ReplicaSupervisor {
  readonly spec: WorkloadSpec;
  readonly #deps: ReplicaDeps;
  readonly #slots: Slot[];
  readonly #ports: Record<string, ProcessPorts>;
  readonly #createdAt: string;
  #phase: WorkloadPhase = 'Pending';
  #startedAt: string | null = null;
  #intensity: IntensityState = initialIntensity(Date.now());
  #backoffTimer: NodeJS.Timeout | undefined;
  #backoffUntil: number | undefined;
  #queue: Promise<void> = Promise.resolve();
  #terminating = false;
  #detached = false;
  /** The spawn in flight (spawnAsync): stop() and detach() wait for it, so its pid is known. */
  #spawning: Promise<unknown> | undefined;
  #oomSeen = 0;
  #replicaReady = false;
  /**
   * The last restart request (an opaque value: the host agent's `orrery.dev/restartedAt`) acted
   * on, or the one the replica was started under; kept in its state record, so a new runtime
   * knows which requests were handled.
   */
  restartedAt: string | undefined;

  constructor(
    spec: WorkloadSpec,
    ports: Record<string, ProcessPorts>,
    deps: ReplicaDeps,
    createdAt?: string,
  ) {
    this.spec = spec;
    this.#deps = deps;
    this.#ports = ports;
    this.#createdAt = createdAt ?? new Date().toISOString();
    this.#slots = spec.processes.map((p, index) => {
      const env = buildEnv(spec, p, ports[p.name] ?? {});
      return {
        index,
        spec: p,
        env: [...env].map(([k, v]) => `${k}=${v}`),
        envObject: Object.fromEntries(env),
        pid: null,
        pidfd: null,
        startTime: null,
        startedAt: null,
        state: 'Waiting',
        finished: false,
        run: 0,
        hasRun: false,
        restarts: 0,
        lastExit: null,
        stopRequested: false,
        livenessFailed: undefined,
        ready: false,
        cancelWatch: null,
        exitWaiters: [],
        probes: [],
      };
    });
  }

  /** With a pid namespace the addon runs orrery-init as PID 1, which records the workload's exit. */
  get #usesInit(): boolean {
    return this.spec.isolation.namespaces.includes('pid');
  }

  get phase(): WorkloadPhase {
    return this.#phase;
  }

  /** First start of a new replica: every process in order. */
  async start(): Promise<void> {
    this.#phase = 'Starting';
    this.#startedAt = new Date().toISOString();
    this.#oomSeen = await this.#deps.cgroup.oomKills().catch(() => 0);
    // The spec on disk before any process exists lets a runtime that dies during the spawns find
    // them (see #unrecordedProcesses). It only has to outlive the runtime, not the machine.
    await this.#deps.store.save(this.spec.id, () => this.record(), { durable: false });
    await this.#enqueue(async () => {
      this.#intensity = initialIntensity(Date.now());
      for (const slot of this.#slots) await this.#spawn(slot);
      if (this.#phase === 'Starting') this.#phase = 'Running';
      this.#updateFinished();
      this.#updateReady(this.#slots[0]?.spec.name ?? '');
    });
    // run() reports success only once the pids are durable: a crash now must not lose them.
    await this.#persistNow();
  }

  // ---- re-adoption ----------------------------------------------------------------------------

  /**
   * Resume supervision from a state record written by an earlier runtime: reopen every recorded
   * pid with pidfd_open, check its start time against the record (a different start time means
   * the pid was reused by an unrelated process), and watch it again. A process that is gone is
   * handled as an exit with unknown status.
   */
  async adopt(record: ReplicaRecord): Promise<void> {
    // A runtime that died inside start() left 'Starting'; whatever was spawned is found below.
    this.#phase = record.phase === 'Starting' || record.phase === 'Pending' ? 'Running' : record.phase;
    this.#startedAt = record.startedAt;
    this.restartedAt = record.restartedAt;
    this.#oomSeen = await this.#deps.cgroup.oomKills().catch(() => 0);
    this.#intensity = { ...initialIntensity(Date.now()), crashLoops: record.crashLoops };
    const lost: Slot[] = [];
    /** Down, not finished, no pid recorded: between runs (restart or backoff) when the runtime died. */
    const waiting: Slot[] = [];
    let changed = false;
    for (const slot of this.#slots) {
      const stored = record.processes.find((p) => p.name === slot.spec.name);
      if (!stored) {
        lost.push(slot);
        continue;
      }
      slot.restarts = stored.restarts;
      slot.lastExit = stored.lastExit;
      slot.hasRun = stored.startedAt !== null || stored.lastExit !== null;
      slot.finished = stored.finished;
      slot.state = stored.state === 'Running' || stored.state === 'Stopping' ? 'Waiting' : stored.state;
      if (stored.pid === null || stored.startTime === null) {
        if (!stored.finished) waiting.push(slot);
        continue;
      }
      if (this.#reopen(slot, stored.pid, BigInt(stored.startTime), stored.startedAt)) continue;
      this.#recordUnwatchedExit(slot, stored.pid);
      lost.push(slot);
    }
    // A runtime killed between a spawn and the state write that records it leaves a process the
    // record does not name. Find it in the cgroup rather than start a second copy.
    lost.push(...waiting);
    if (lost.length > 0) {
      const unrecorded = await this.#unrecordedProcesses();
      for (const slot of [...lost]) {
        const pid = unrecorded.get(slot.spec.name);
        const startTime = pid === undefined ? null : this.#deps.api.processStartTime(pid);
        if (pid === undefined || startTime === null) continue;
        if (!this.#reopen(slot, pid, startTime, null)) continue;
        this.#deps.log.info(
          { replica: this.spec.id, process: slot.spec.name, pid },
          'adopted a process missing from the state record',
        );
        lost.splice(lost.indexOf(slot), 1);
        changed = true;
      }
    }
    if (this.#phase === 'CrashLoopBackOff') {
      if (this.#slots.every((s) => s.pid === null)) {
        // Still backing off: everything starts when the recorded delay ends.
        const until = record.backoffUntil ? Date.parse(record.backoffUntil) : Date.now();
        this.#scheduleBackoffEnd(Math.max(0, until - Date.now()));
        lost.length = 0;
      } else {
        // The backoff had ended and processes were spawned before the record said so.
        this.#phase = 'Running';
        changed = true;
      }
    }
    for (const slot of lost) {
      const run = slot.run;
      const facts: ExitFacts = {
        code: slot.lastExit?.code ?? null,
        signal: slot.lastExit?.signal ?? null,
        stopRequested: false,
      };
      // A process seen dead goes through the policy; one that was between runs (its restart
      // already decided, or never started) is simply started.
      if (slot.hasRun && !waiting.includes(slot))
        void this.#enqueue(() => this.#handleExit(slot.index, run, facts));
      else
        void this.#enqueue(async () => {
          await this.#spawn(slot);
        });
    }
    // Adopting as recorded changes nothing on disk; exits and restarts persist themselves.
    if (changed) this.#persist();
    this.#updateReady(this.#slots[0]?.spec.name ?? '');
  }

  /**
   * Top-level processes of this replica's cgroup (parent outside the cgroup), by the
   * ORRERY_PROCESS variable the runtime put in their environment (orrery-init inherits it too).
   */
  async #unrecordedProcesses(): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    const pids = await this.#deps.cgroup.pids().catch(() => [] as number[]);
    const members = new Set(pids);
    for (const pid of pids) {
      try {
        const stat = await readProcStatFieldsAsync(pid);
        if (stat === undefined) continue; // exited while we looked
        if (members.has(Number(stat[4 - 3]))) continue; // field 4, ppid: its parent is in the cgroup
        const env = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0');
        if (!env.includes(`ORRERY_REPLICA=${this.spec.id}`)) continue;
        const name = env.find((v) => v.startsWith('ORRERY_PROCESS='))?.slice('ORRERY_PROCESS='.length);
        if (name !== undefined && !found.has(name)) found.set(name, pid);
      } catch {
        // exited while we looked
      }
    }
    return found;
  }

  /**
   * The process died while no runtime watched it. Its status can still be had from orrery-init's
   * record (pid namespace replicas); otherwise it is unknown, and counted as an abnormal exit.
   */
  #recordUnwatchedExit(slot: Slot, pid: number): void {
    const file = this.#usesInit ? this.#deps.exitStatusFile(this.spec.id, slot.spec.name) : undefined;
    const status = file === undefined ? null : this.#deps.api.readExitStatusFile(file);
    const at = now();
    if (status) {
      const reason = exitReason({ ...status, stopRequested: false });
      const message = 'exited while no runtime was watching';
      slot.lastExit = { code: status.code, signal: status.signal, reason, message, at };
    } else {
      const message = 'exited while no runtime was watching; exit status unknown';
      slot.lastExit = { code: null, signal: null, reason: 'Error', message, at };
    }
    const { code, signal, reason, message } = slot.lastExit;
    this.#deps.emit({
      type: 'exited',
      replica: this.spec.id,
      process: slot.spec.name,
      pid,
      code,
      signal,
      reason,
      at,
      ...(message ? { message } : {}),
    });
  }

  #reopen(slot: Slot, pid: number, startTime: bigint, startedAt: string | null): boolean {
    const { api } = this.#deps;
    let pidfd: number;
    try {
      pidfd = api.pidfdOpen(pid);
    } catch {
      return false;
    }
    // Open first, then compare: once we hold the pidfd the pid cannot be recycled under us.
    if (api.processStartTime(pid) !== startTime) {
      api.closeFd(pidfd);
      return false;
    }
    slot.run++;
    slot.pid = pid;
    slot.pidfd = pidfd;
    slot.startTime = startTime;
    slot.startedAt = startedAt;
    slot.state = 'Running';
    slot.finished = false;
    slot.stopRequested = false;
    slot.ready = slot.spec.readinessProbe === undefined;
    const run = slot.run;
    const options = this.#usesInit
      ? { exitStatusFile: this.#deps.exitStatusFile(this.spec.id, slot.spec.name) }
      : {};
    slot.cancelWatch = api.watchExit(pidfd, (status) => this.#onExit(slot, run, status), options);
    this.#deps.emit({ type: 'adopted', replica: this.spec.id, process: slot.spec.name, pid, at: now() });
    this.#startProbes(slot);
    return true;
  }

  // ---- spawning and exits ---------------------------------------------------------------------

  /** Start one process now. False when it could not be exec'd or we are stopping. */
  async #spawn(slot: Slot): Promise<boolean> {
    if (this.#terminating || this.#detached) return false;
    let logFile: string;
    try {
      logFile = this.#deps.logFile(this.spec.id, slot.spec.name);
    } catch (err) {
      this.#deps.log.error(
        { replica: this.spec.id, process: slot.spec.name, err: (err as Error).message },
        'preparing log file failed',
      );
      logFile = '/dev/null';
    }
    if (this.#terminating || this.#detached) return false;
    const { api, cgroup } = this.#deps;
    const p = slot.spec;
    slot.run++;
    const run = slot.run;
    if (slot.hasRun) slot.restarts++;
    slot.hasRun = true;
    slot.finished = false;
    slot.stopRequested = false;
    slot.livenessFailed = undefined;
    let spawned: { pid: number; pidfd: number; startTime: bigint };
    try {
      const root = this.#deps.root;
      const file = resolveCommand(
        p.command[0] as string,
        slot.envObject.PATH ?? this.#deps.defaultPath,
        p.workingDir,
        root,
      );
      const req: SpawnRequest = {
        file,
        argv: [...p.command, ...(p.args ?? [])],
        env: slot.env,
        namespaces: this.#namespaces(p),
        cgroup: cgroup.spawnTarget,
        logFile,
      };
      if (p.volumeMounts?.length && this.#deps.volumeSource) {
        const source = this.#deps.volumeSource;
        const volumes = this.spec.volumes ?? [];
        const secretish = new Set(volumes.filter((v) => 'files' in v).map((v) => v.name));
        const hostPaths = new Set(volumes.filter((v) => 'hostPath' in v).map((v) => v.name));
        // configMap and secret volumes are read-only whatever the mount says, as a Pod's are. A
        // host path is resolved below the node's root, never through a symbolic link.
        req.binds = p.volumeMounts.map((m) => ({
          source: source(this.spec, m.name),
          target: m.mountPath,
          readOnly: m.readOnly || secretish.has(m.name),
          ...(hostPaths.has(m.name) ? { root: this.#deps.root ?? '/' } : {}),
        }));
      }
      if (root !== undefined) req.root = root;
      const range = this.#deps.userRange;
      if (range) req.userNamespace = { hostUid: range.hostId, hostGid: range.hostId, size: range.size };
      if (req.namespaces.includes('mount') && this.#deps.maskPaths) req.maskPaths = this.#deps.maskPaths;
      if (this.#usesInit) req.exitStatusFile = this.#deps.exitStatusFile(this.spec.id, p.name);
      if (p.workingDir !== undefined) req.cwd = p.workingDir;
      if (this.spec.isolation.namespaces.includes('uts')) req.hostname = this.spec.name;
      const user = this.spec.isolation.user;
      if (user !== undefined) {
        req.uid = user.uid;
        req.gid = user.gid;
      }
      // Off the event loop (the wait for the exec is a threadpool thread's): a runtime starting
      // many replicas keeps serving watches, status writes and its API meanwhile. A stop() or
      // detach() issued during the await waits for #spawning, so this process is never missed.
      const inFlight = api.spawnAsync(req);
      this.#spawning = inFlight;
      try {
        spawned = await inFlight;
      } finally {
        this.#spawning = undefined;
      }
    } catch (err) {
      this.#execFailed(slot, run, err as SpawnFailure);
      return false;
    }
    slot.pid = spawned.pid;
    slot.pidfd = spawned.pidfd;
    slot.startTime = spawned.startTime;
    slot.startedAt = now();
    slot.state = 'Running';
    slot.ready = p.readinessProbe === undefined;
    slot.cancelWatch = api.watchExit(spawned.pidfd, (status) => this.#onExit(slot, run, status));
    this.#deps.emit({
      type: 'started',
      replica: this.spec.id,
      process: p.name,
      pid: spawned.pid,
      at: slot.startedAt,
    });
    this.#startProbes(slot);
    this.#updateReady(p.name);
    this.#persist();
    return true;
  }

  /**
   * The namespaces a process gets: the template's, with a mount namespace under a workload root
   * and for a process that mounts volumes.
   */
  #namespaces(p?: ProcessSpec): Namespace[] {
    const namespaces = effectiveNamespaces(this.spec.isolation.namespaces);
    return (this.#deps.root !== undefined || (p?.volumeMounts?.length ?? 0) > 0) &&
      !namespaces.includes('mount')
      ? [...namespaces, 'mount']
      : namespaces;
  }

  #execFailed(slot: Slot, run: number, err: SpawnFailure): void {
    const at = now();
    slot.state = 'Exited';
    slot.lastExit = { code: null, signal: null, reason: 'ExecFailed', message: err.message, at };
    this.#deps.log.warn({ replica: this.spec.id, process: slot.spec.name, err: err.message }, 'exec failed');
    this.#deps.emit({
      type: 'exited',
      replica: this.spec.id,
      process: slot.spec.name,
      pid: null,
      code: null,
      signal: null,
      reason: 'ExecFailed',
      message: err.message,
      at,
    });
    const facts: ExitFacts = { code: null, signal: null, stopRequested: false, execFailed: true };
    void this.#enqueue(() => this.#handleExit(slot.index, run, facts));
  }

  /** pidfd readable: the run `run` of `slot` exited with `status`. */
  #onExit(slot: Slot, run: number, status: ExitStatus): void {
    if (slot.run !== run || slot.pid === null) return;
    const pid = slot.pid;
    slot.cancelWatch = null; // the addon closes the pidfd after this callback
    slot.pid = null;
    slot.pidfd = null;
    slot.startTime = null;
    slot.state = 'Exited';
    slot.ready = false;
    this.#stopProbes(slot);
    const stopRequested = slot.stopRequested;
    const livenessFailed = slot.livenessFailed;
    void this.#classify(status).then((oomKilled) => {
      const facts: ExitFacts = { code: status.code, signal: status.signal, stopRequested, oomKilled };
      if (livenessFailed !== undefined) facts.livenessFailed = true;
      const reason = exitReason(facts);
      const at = now();
      slot.lastExit = { code: status.code, signal: status.signal, reason, at };
      if (livenessFailed !== undefined) slot.lastExit.message = `LivenessProbeFailed: ${livenessFailed}`;
      else if (oomKilled) slot.lastExit.message = 'killed by the OOM killer (cgroup memory limit)';
      this.#deps.emit({
        type: 'exited',
        replica: this.spec.id,
        process: slot.spec.name,
        pid,
        code: status.code,
        signal: status.signal,
        reason,
        ...(slot.lastExit.message === undefined ? {} : { message: slot.lastExit.message }),
        at,
      });
      this.#updateReady(slot.spec.name);
      const waiters = slot.exitWaiters;
      slot.exitWaiters = [];
      for (const w of waiters) w();
      if (!stopRequested) void this.#enqueue(() => this.#handleExit(slot.index, run, facts));
      this.#persist();
    });
  }

  /**
   * OOMKilled when the process died of SIGKILL (or its init reported 128+9) and the cgroup's
   * oom_kill counter moved since we last looked, as the kubelet reads memory.events.
   */
  async #classify(status: ExitStatus): Promise<boolean> {
    if (status.signal !== 'SIGKILL' && status.code !== 137) return false;
    const count = await this.#deps.cgroup.oomKills().catch(() => this.#oomSeen);
    const oom = count > this.#oomSeen;
    this.#oomSeen = count;
    return oom;
  }

  async #handleExit(index: number, run: number, facts: ExitFacts): Promise<void> {
    const slot = this.#slots[index] as Slot;
    if (this.#terminating || this.#detached || this.#phase === 'CrashLoopBackOff') return;
    if (slot.run !== run || slot.pid !== null) return; // restarted since, by a group restart
    const views = this.#slots.map((s) => ({ restart: s.spec.restart, alive: s.pid !== null }));
    const { decision, state } = decideOnExit(
      this.spec.supervision,
      views,
      this.#intensity,
      index,
      facts,
      Date.now(),
    );
    this.#intensity = state;
    const at = now();
    switch (decision.action) {
      case 'none':
        slot.finished = true;
        this.#updateFinished();
        this.#updateReady(slot.spec.name);
        this.#persist();
        return;
      case 'restart': {
        const cause = facts.livenessFailed ? 'LivenessProbeFailed' : 'Exited';
        this.#deps.emit({ type: 'restarting', replica: this.spec.id, process: slot.spec.name, cause, at });
        for (const i of decision.stop) {
          const sibling = this.#slots[i] as Slot;
          this.#deps.emit({
            type: 'restarting',
            replica: this.spec.id,
            process: sibling.spec.name,
            cause: 'Sibling',
            at,
          });
          await this.#stopSlot(sibling, this.spec.terminationGracePeriodSeconds * 1000);
        }
        for (const i of decision.start) await this.#spawn(this.#slots[i] as Slot);
        return;
      }
      case 'backoff': {
        for (const i of decision.stop)
          await this.#stopSlot(this.#slots[i] as Slot, this.spec.terminationGracePeriodSeconds * 1000);
        if (this.#terminating || this.#detached) return;
        for (const s of this.#slots) {
          s.state = 'Waiting';
          s.finished = false;
        }
        this.#phase = 'CrashLoopBackOff';
        this.#deps.emit({
          type: 'backoff',
          replica: this.spec.id,
          delayMs: decision.delayMs,
          crashLoops: this.#intensity.crashLoops,
          at: now(),
        });
        this.#deps.log.warn(
          { replica: this.spec.id, delayMs: decision.delayMs },
          'restart intensity exceeded: CrashLoopBackOff',
        );
        this.#scheduleBackoffEnd(decision.delayMs);
        this.#updateReady(slot.spec.name);
        this.#persist();
        return;
      }
    }
  }

  #scheduleBackoffEnd(delayMs: number): void {
    this.#backoffUntil = Date.now() + delayMs;
    this.#backoffTimer = setTimeout(() => {
      this.#backoffTimer = undefined;
      this.#backoffUntil = undefined;
      void this.#enqueue(async () => {
        if (this.#terminating || this.#detached || this.#phase !== 'CrashLoopBackOff') return;
        this.#intensity = afterBackoff(this.#intensity, Date.now());
        this.#phase = 'Running';
        for (const s of this.#slots) {
          if (s.pid !== null) continue;
          this.#deps.emit({
            type: 'restarting',
            replica: this.spec.id,
            process: s.spec.name,
            cause: 'BackoffEnded',
            at: now(),
          });
          await this.#spawn(s);
        }
      });
    }, delayMs);
  }

  /** Stop signal, then SIGKILL after `graceMs`; resolves once the exit was recorded. */
  async #stopSlot(slot: Slot, graceMs: number): Promise<void> {
    if (slot.pid === null || slot.pidfd === null) return;
    slot.stopRequested = true;
    slot.state = 'Stopping';
    this.#stopProbes(slot);
    const exited = new Promise<void>((resolve) => slot.exitWaiters.push(resolve));
    this.#signal(slot, slot.spec.stopSignal ?? 'SIGTERM');
    if (await settlesWithin(exited, graceMs)) return;
    this.#signal(slot, 'SIGKILL');
    await settlesWithin(exited, KILL_WAIT_MS);
  }

  #signal(slot: Slot, signal: string): void {
    if (slot.pidfd === null) return;
    try {
      this.#deps.api.sendSignal(slot.pidfd, signal);
    } catch (err) {
      // ESRCH: it exited between our check and the signal; the pidfd watch reports it.
      this.#deps.log.debug(
        { replica: this.spec.id, process: slot.spec.name, err: (err as Error).message },
        'signal not delivered',
      );
    }
  }

  // ---- probes and readiness -------------------------------------------------------------------

  #startProbes(slot: Slot): void {
    const ctx: ProbeContext = { ports: this.#ports[slot.spec.name] ?? {}, env: slot.envObject };
    if (slot.spec.workingDir !== undefined) ctx.cwd = slot.spec.workingDir;
    // With its own network namespace the replica's 127.0.0.1 is not ours: connect from inside it,
    // through the process being probed (any of the replica's processes shares the namespace).
    if (this.spec.isolation.namespaces.includes('net')) {
      ctx.connect = async (host, port, timeoutMs) => {
        if (slot.pidfd === null || slot.pid === null) throw new Error('the process is not running');
        const fd = await this.#deps.api.netnsConnect(slot.pidfd, slot.pid, { host, port, timeoutMs });
        return new net.Socket({ fd, readable: true, writable: true });
      };
    }
    // Exec probes run inside the replica: its namespaces, cgroup and user (probe-exec.ts).
    ctx.exec = async (command, timeoutMs) => {
      if (slot.pidfd === null || slot.pid === null)
        return { ok: false, message: `exec ${command.join(' ')}: the process is not running` };
      const target: ExecTarget = {
        pidfd: slot.pidfd,
        pid: slot.pid,
        namespaces: this.#namespaces(slot.spec),
        cgroup: this.#deps.cgroup.spawnTarget,
        env: slot.env,
        path: slot.envObject.PATH ?? this.#deps.defaultPath,
      };
      if (this.#deps.root !== undefined) target.root = this.#deps.root;
      if (slot.spec.workingDir !== undefined) target.cwd = slot.spec.workingDir;
      // In the replica's namespaces but not its user namespace (a process sharing our memory
      // cannot enter one, setns(2)): as the host ids its user maps to, with no capability.
      const user = this.spec.isolation.user;
      const range = this.#deps.userRange;
      if (range) {
        target.user = { uid: range.hostId + (user?.uid ?? 0), gid: range.hostId + (user?.gid ?? 0) };
      } else if (user) {
        target.user = user;
      }
      return execInReplica(this.#deps.api, target, command, timeoutMs);
    };
    const run = slot.run;
    if (slot.spec.readinessProbe) {
      const probe = new ProbeRunner(slot.spec.readinessProbe, ctx, (healthy, message) => {
        if (slot.run !== run || slot.pid === null) return;
        slot.ready = healthy;
        this.#updateReady(slot.spec.name, message);
      });
      slot.probes.push(probe);
      probe.start();
    }
    if (slot.spec.livenessProbe) {
      const probe = new ProbeRunner(slot.spec.livenessProbe, ctx, (healthy, message) => {
        if (healthy || slot.run !== run || slot.pid === null) return;
        void this.#enqueue(async () => {
          if (slot.run !== run || slot.pid === null || this.#terminating) return;
          this.#deps.log.warn(
            { replica: this.spec.id, process: slot.spec.name, message },
            'liveness probe failed',
          );
          slot.livenessFailed = message ?? 'probe failed';
          await this.#stopSlot(slot, this.spec.terminationGracePeriodSeconds * 1000);
          const facts: ExitFacts = {
            code: slot.lastExit?.code ?? null,
            signal: slot.lastExit?.signal ?? null,
            stopRequested: true,
            livenessFailed: true,
          };
          await this.#handleExit(slot.index, run, facts);
        });
      });
      slot.probes.push(probe);
      probe.start();
    }
  }

  #stopProbes(slot: Slot): void {
    for (const p of slot.probes) p.stop();
    slot.probes = [];
  }

  #computeReady(): boolean {
    if (this.#phase !== 'Running') return false;
    let alive = 0;
    for (const s of this.#slots) {
      if (s.pid !== null && s.state === 'Running') {
        alive++;
        if (!s.ready) return false;
      } else if (!s.finished) return false;
    }
    return alive > 0;
  }

  #updateReady(process: string, message?: string): void {
    const ready = this.#computeReady();
    if (ready === this.#replicaReady) return;
    this.#replicaReady = ready;
    const event: EngineEvent = {
      type: ready ? 'ready' : 'notReady',
      replica: this.spec.id,
      process,
      replicaReady: ready,
      at: now(),
    };
    if (message !== undefined) event.message = message;
    this.#deps.emit(event);
  }

  /** When nothing is alive and nothing will be restarted the replica has finished (pod phases). */
  #updateFinished(): void {
    if (this.#phase !== 'Running' && this.#phase !== 'Starting') return;
    if (!this.#slots.every((s) => s.finished)) return;
    this.#phase = finishedPhase(this.#slots.map((s) => s.lastExit?.reason ?? null));
  }

  // ---- stop, detach, status -------------------------------------------------------------------

  /**
   * Stop signals in reverse start order (each waited for up to its share of the grace period, all
   * within it), then kill the whole cgroup so no grandchild survives, then remove the cgroup and
   * the state record.
   */
  async stop(graceSeconds = this.spec.terminationGracePeriodSeconds): Promise<void> {
    this.#terminating = true;
    this.#phase = 'Terminating';
    // A spawn in flight gets its pid recorded first, so it is signalled and waited for below
    // (no spawn starts after this: #spawn checks #terminating first).
    await this.#spawning?.catch(() => {});
    if (this.#backoffTimer) clearTimeout(this.#backoffTimer);
    for (const s of this.#slots) this.#stopProbes(s);
    await this.#persistNow();
    const deadline = Date.now() + graceSeconds * 1000;
    const live = [...this.#slots].reverse().filter((s) => s.pid !== null);
    const exits: Promise<void>[] = [];
    for (const [k, slot] of live.entries()) {
      slot.stopRequested = true;
      slot.state = 'Stopping';
      const exited = new Promise<void>((resolve) => slot.exitWaiters.push(resolve));
      exits.push(exited);
      this.#signal(slot, slot.spec.stopSignal ?? 'SIGTERM');
      // Wait for it before signalling the one started before it (OTP's ordered shutdown), but
      // only for its share of what is left of the grace, so one process ignoring its stop signal
      // cannot leave the others no time to shut down.
      await settlesWithin(exited, Math.max(0, (deadline - Date.now()) / (live.length - k)));
    }
    await settlesWithin(
      Promise.all(exits).then(() => {}),
      Math.max(0, deadline - Date.now()),
    );
    await this.#deps.cgroup.kill();
    await Promise.all(
      this.#slots
        .filter((s) => s.pid !== null)
        .map((s) => settlesWithin(new Promise<void>((resolve) => s.exitWaiters.push(resolve)), KILL_WAIT_MS)),
    );
    await this.#deps.cgroup.remove();
    await this.#deps.store.remove(this.spec.id);
    this.#deps.removeExitStatusFiles(this.spec);
    this.#detach();
    this.#deps.emit({ type: 'stopped', replica: this.spec.id, at: now() });
  }

  /**
   * Restart every process in place, on request (`kubectl rollout restart` for one replica): stop
   * them as stop() does (stop signals in reverse start order within the grace period, then the
   * cgroup killed, so no grandchild survives), and start them again in order in the same cgroup,
   * each restart counted. A crash-loop back-off in progress is cut short and the restart
   * intensity starts afresh, as a new Pod's would. `restartedAt` is recorded durably before
   * anything is stopped, so a runtime that dies half-way does not act on it twice: its successor
   * starts whatever was stopped (those processes are recorded as waiting, not finished).
   */
  async restart(restartedAt: string, graceSeconds = this.spec.terminationGracePeriodSeconds): Promise<void> {
    if (this.#terminating || this.#detached) throw new Error(`replica ${this.spec.id} is stopping`);
    await this.#enqueue(async () => {
      if (this.#terminating || this.#detached) return;
      this.restartedAt = restartedAt;
      if (this.#backoffTimer) clearTimeout(this.#backoffTimer);
      this.#backoffTimer = undefined;
      this.#backoffUntil = undefined;
      if (this.#phase !== 'Starting') this.#phase = 'Running';
      for (const s of this.#slots) s.finished = false;
      await this.#persistNow();
      const at = now();
      for (const s of this.#slots) {
        this.#deps.emit({
          type: 'restarting',
          replica: this.spec.id,
          process: s.spec.name,
          cause: 'Requested',
          at,
        });
      }
      const deadline = Date.now() + graceSeconds * 1000;
      const live = [...this.#slots].reverse().filter((s) => s.pid !== null);
      for (const [k, slot] of live.entries()) {
        slot.stopRequested = true;
        slot.state = 'Stopping';
        this.#stopProbes(slot);
        const exited = new Promise<void>((resolve) => slot.exitWaiters.push(resolve));
        this.#signal(slot, slot.spec.stopSignal ?? 'SIGTERM');
        await settlesWithin(exited, Math.max(0, (deadline - Date.now()) / (live.length - k)));
      }
      // What ignored its stop signal, and whatever the processes left behind in the cgroup.
      const left = this.#slots.filter((s) => s.pid !== null);
      const exits = left.map((s) => new Promise<void>((resolve) => s.exitWaiters.push(resolve)));
      await this.#deps.cgroup.kill();
      await settlesWithin(
        Promise.all(exits).then(() => {}),
        KILL_WAIT_MS,
      );
      if (this.#terminating || this.#detached) return;
      this.#intensity = initialIntensity(Date.now());
      for (const slot of this.#slots) {
        if (slot.pid !== null) continue; // in D state past SIGKILL: it keeps its run
        slot.state = 'Waiting';
        await this.#spawn(slot);
      }
      this.#updateFinished();
      this.#updateReady(this.#slots[0]?.spec.name ?? '');
      this.#persist();
    });
  }

  /** Stop watching (runtime shutdown for a later re-adoption); the workload keeps running. */
  async detach(): Promise<void> {
    await this.#spawning?.catch(() => {});
    await this.#persistNow();
    this.#detach();
  }

  #detach(): void {
    this.#detached = true;
    if (this.#backoffTimer) clearTimeout(this.#backoffTimer);
    for (const s of this.#slots) {
      this.#stopProbes(s);
      s.cancelWatch?.();
      s.cancelWatch = null;
      if (s.pidfd !== null) this.#deps.api.closeFd(s.pidfd);
      s.pidfd = null;
    }
  }

  status(): WorkloadStatus {
    const status: WorkloadStatus = {
      id: this.spec.id,
      name: this.spec.name,
      phase: this.#phase,
      ready: this.#computeReady(),
      ports: Object.entries(this.#ports).flatMap(([process, ports]) =>
        Object.entries(ports).map(([name, port]) => ({ process, name, port })),
      ),
      startedAt: this.#startedAt,
      processes: this.#slots.map(
        (s): ProcessStatus => ({
          name: s.spec.name,
          pid: s.pid,
          state: s.state,
          ready: s.pid !== null && s.ready,
          restarts: s.restarts,
          startedAt: s.startedAt,
          lastExit: s.lastExit,
        }),
      ),
    };
    if (this.#backoffUntil !== undefined) status.backoffUntil = new Date(this.#backoffUntil).toISOString();
    if (this.restartedAt !== undefined) status.restartedAt = this.restartedAt;
    return status;
  }

  /** Pids of live processes (what a test or the agent may signal). */
  pids(): number[] {
    return this.#slots.flatMap((s) => (s.pid === null ? [] : [s.pid]));
  }

  record(): ReplicaRecord {
    const record: ReplicaRecord = {
      version: 1,
      spec: this.spec,
      createdAt: this.#createdAt,
      ports: this.#ports,
      phase: this.#phase,
      startedAt: this.#startedAt,
      crashLoops: this.#intensity.crashLoops,
      processes: this.#slots.map((s) => ({
        name: s.spec.name,
        pid: s.pid,
        startTime: s.startTime === null ? null : s.startTime.toString(),
        startedAt: s.startedAt,
        state: s.state,
        finished: s.finished,
        restarts: s.restarts,
        lastExit: s.lastExit,
      })),
    };
    if (this.#backoffUntil !== undefined) record.backoffUntil = new Date(this.#backoffUntil).toISOString();
    if (this.#deps.userRange) record.userRange = this.#deps.userRange;
    if (this.restartedAt !== undefined) record.restartedAt = this.restartedAt;
    return record;
  }

  /**
   * Queue a write of new process facts (pids, exits, restarts); never awaited on the restart
   * path. Without fsync: these facts matter only while the machine is up (a pid means nothing
   * after a reboot), and the page cache outlives a runtime crash. Writes that must survive the
   * machine (first full record, stop marker, detach) go through #persistNow.
   */
  #persist(): void {
    if (this.#detached || this.#phase === 'Starting') return; // start() writes once at its end
    this.#deps.store
      .save(this.spec.id, () => this.record(), { durable: false })
      .catch((err: Error) => {
        this.#deps.log.error({ replica: this.spec.id, err: err.message }, 'writing replica state failed');
      });
  }

  #persistNow(): Promise<void> {
    return this.#deps.store.save(this.spec.id, () => this.record());
  }

  /** Wait for queued supervision work (tests, shutdown). */
  idle(): Promise<void> {
    return this.#queue;
  }

  #enqueue(task: () => Promise<void>): Promise<void> {
    const next = this.#queue.then(task).catch((err: Error) => {
      this.#deps.log.error({ replica: this.spec.id, err: err.message }, 'supervision step failed');
    });
    this.#queue = next;
    return next;
  }
}

function now(): string {
  return new Date().toISOString();
}

/** True when `p` settled within `ms`. */
async function settlesWithin(p: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
