/**
 * The Replica reconciler (node-runtime/agent/README.md, "Replicas" and "Status"): for each Replica
 * bound to this host, `reconcile(key)` makes the engine run what the object says (or stop what
 * no longer belongs here), with the same contract as the operator's controllers (kube/controller.ts).
 * It owns what a replica holds while it runs on this host: its allocated ports, its last start
 * failure, the starts in flight, and the digests of replicas adopted from an older agent; and it
 * turns engine events into coalesced status writes.
 */

import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { RESTARTED_AT_ANNOTATION, RUNTIME_FINALIZER } from '../../crds/labels.ts';
import { serviceEnv } from '../../crds/service-env.ts';
import type { ReplicaStatus as ApiReplicaStatus, Replica, Service } from '../../crds/types.ts';
import {
  type EventRecorder,
  type Informer,
  isNotFound,
  type ReconcileResult,
  type ResourceClient,
  removeFinalizer,
  splitKey,
} from '../../kube/index.ts';
import type { Engine } from '../engine.ts';
import { InvalidSpecError } from '../invalid-spec.ts';
import type { EngineEvent } from '../supervisor/spec.ts';
import type { VolumeFile } from '../volumes/atomic-writer.ts';
import { HostPathError } from '../volumes/host-path.ts';
import { type ConfigObjects, resolveEnv, type SkippedKeys, UnresolvedConfigError } from './config-env.ts';
import { type ConfigFiles, hasFileVolumes, resolveVolumeFiles } from './config-volumes.ts';
import type { FencePolicy } from './fence.ts';
import type { AgentMetrics } from './metrics.ts';
import { deletesPersistentData, persistentKeysOf } from './persistent.ts';
import type { PortAllocator } from './ports.ts';
import {
  buildReplicaSpec,
  DIGEST_ANNOTATION,
  keyOfReplicaId,
  portsToAllocate,
  replicaDigest,
  replicaId,
  templateOf,
} from './replica-spec.ts';
import {
  apiStatusOf,
  type OwnWrites,
  type RunFailure,
  replaceReplicaStatus,
  StatusWriter,
} from './status.ts';

export interface ReplicaReconcilerOptions {
  hostName: string;
  /** Host.status.address, also each replica's status.address. */
  address: string;
  engine: Engine;
  replicas: ResourceClient<Replica>;
  /** The Replicas bound here (field selector spec.host=<host>). */
  informer: Informer<Replica>;
  ports: PortAllocator;
  fence: FencePolicy;
  recorder: EventRecorder;
  metrics: AgentMetrics;
  log: Logger;
  /** True once the agent is stopping: nothing is reconciled any more. */
  stopping: () => boolean;
  /** The Services of a namespace, for the *_SERVICE_HOST/PORT variables of its workloads. */
  servicesIn: (namespace: string) => Service[];
  /** The ConfigMaps and Secrets its env refers to, read as this host's own account (host-account.ts). */
  configObjects: ConfigObjects;
  /** The same reads as file contents, for configMap and secret volumes. */
  configFiles: ConfigFiles;
  /** Persistent volume data was made or removed: Host.status.persistentData is written (awaited). */
  persistentDataChanged: () => Promise<void>;
  /** Default SLOW_START_MS. */
  slowStartMs?: number;
}

/**
 * How often the files of running replicas' configMap and secret volumes are read again (a change
 * reaches them within this plus one read), and disk emptyDirs measured against their sizeLimit.
 */
export const VOLUME_SYNC_MS = 2000;

/**
 * How soon a replica waiting for a ConfigMap or Secret (or for the host's access to it) looks
 * again: "within a few seconds" of the object's creation, at one GET per object per replica.
 */
export const CONFIG_RECHECK_MS = 2000;

/**
 * A start's events are held back so its one status write already says Running; a start still
 * under way after this long is written as it is (phase Starting), then again once it is done.
 */
export const SLOW_START_MS = 1000;

export class ReplicaReconciler {
  readonly #o: ReplicaReconcilerOptions;
  readonly statusWriter: StatusWriter;
  /** Why the last start of a replica failed, for its status. */
  readonly #failures = new Map<string, RunFailure>();
  /** Replicas being started: their events wait for the one status write after run(). */
  readonly #starting = new Set<string>();
  /**
   * Which object each replica was run for (replicaDigest, which covers its uid) lives in its spec's
   * annotations, in the engine's own state record (written with the spec, before the spawn). A
   * replica adopted from an agent that did not annotate is remembered here until it is run again.
   */
  readonly #adopted = new Map<string, string>();
  /** Per replica id and volume: a digest of the files last written, so a sync writes only changes. */
  readonly #written = new Map<string, string>();
  /** Replicas stopped for an emptyDir over its sizeLimit: the digest of the object they ran, not started again. */
  readonly #evicted = new Map<string, string>();
  #syncing: Promise<void> | undefined;

  constructor(options: ReplicaReconcilerOptions) {
    this.#o = options;
    const { informer, engine, fence, hostName, log, metrics } = options;
    const ownWrites: OwnWrites = new WeakMap();
    this.statusWriter = new StatusWriter({
      log,
      compute: (key) => {
        // While fenced the API is unreachable and the replicas are being killed: nothing to say.
        if (fence.fenced) return undefined;
        const replica = informer.get(key);
        if (!replica || replica.spec.host !== hostName) return undefined;
        const id = replicaId(replica.metadata.namespace as string, replica.metadata.name as string);
        const rs = engine.has(id) ? engine.status(id) : undefined;
        if (!rs && replica.metadata.deletionTimestamp) return undefined;
        return { replica, status: apiStatusOf(replica, rs, this.#failures.get(id), options.address) };
      },
      write: (replica, status: ApiReplicaStatus) => {
        log.debug(
          { replica: `${replica.metadata.namespace}/${replica.metadata.name}`, phase: status.phase },
          'writing status',
        );
        return replaceReplicaStatus(options.replicas, replica, status, ownWrites);
      },
      onWrite: (outcome) => metrics.statusWrites.inc({ outcome }),
    });
  }

  reconcile = async (key: string): Promise<ReconcileResult> => {
    const { fence, informer, replicas, engine, hostName: me, log } = this.#o;
    if (fence.fenced || this.#o.stopping()) return undefined;
    log.debug({ replica: key }, 'reconciling');
    const { namespace, name } = splitKey(key);
    if (!namespace) return undefined;
    const id = replicaId(namespace, name);
    let replica = informer.get(key);

    if (replica && fence.takeFenced(key)) {
      // After a fence the cache may still hold what was true before the partition: ask the API.
      replica = await replicas.get(name, { namespace }).catch((err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      });
    }

    if (!replica || replica.spec.host !== me) {
      // Gone, or bound elsewhere: "when an agent comes back it kills what no longer belongs to it".
      if (engine.has(id)) {
        log.info({ replica: key }, 'stopping a replica that is no longer bound to this host');
        await this.stopReplica(id, { removeLogs: true });
      }
      this.#forget(key, id);
      return undefined;
    }

    if (replica.metadata.deletionTimestamp) {
      if (engine.has(id)) {
        this.statusWriter.request(key);
        await this.stopReplica(id, { removeLogs: true });
      }
      if (deletesPersistentData(replica)) await this.#removePersistentData(key, replica);
      await removeFinalizer(replicas, replica, RUNTIME_FINALIZER, 8);
      this.#forget(key, id);
      return undefined;
    }

    if (!engine.has(id) && this.#evicted.get(id) === replicaDigest(replica, me)) {
      // Evicted (EmptyDirSizeLimitExceeded): it stays Failed, as an evicted Pod does.
      this.statusWriter.request(key);
      return undefined;
    }
    if (engine.has(id)) {
      const digest = replicaDigest(replica, me);
      const applied = engine.spec(id).annotations?.[DIGEST_ANNOTATION] ?? this.#adopted.get(id);
      if (applied === undefined) {
        // Run by an agent that did not annotate its replicas: adopt it as it runs.
        this.#adopted.set(id, digest);
      } else if (applied !== digest) {
        log.info(
          { replica: key },
          'replica object changed (new uid or template): stopping and running it again',
        );
        await this.stopReplica(id);
      }
    }
    if (!engine.has(id)) return this.#start(key, replica, id);
    const restartedAt = replica.metadata.annotations?.[RESTARTED_AT_ANNOTATION];
    if (restartedAt && restartedAt !== engine.status(id).restartedAt) {
      await this.#restart(key, replica, id, restartedAt);
    }
    this.statusWriter.request(key);
    return undefined;
  };

  /**
   * A restart asked for by a new value of the Replica's `orrery.dev/restartedAt`: its processes
   * stopped within its grace period and started again in place (Engine.restart, which records the
   * value as handled in the replica's state record before it stops anything), and a `Restarted`
   * Event. Acted on once per value: a resync, a new agent or a new value of nothing else does not
   * act again, and a value first seen after a runtime restart is acted on then.
   */
  async #restart(key: string, replica: Replica, id: string, restartedAt: string): Promise<void> {
    const { engine, log, recorder } = this.#o;
    const before = engine.status(id).processes;
    log.info({ replica: key, restartedAt }, `restarting the replica on request (${RESTARTED_AT_ANNOTATION})`);
    await engine.restart(id, { restartedAt });
    if (!engine.has(id)) return;
    const pids = engine
      .status(id)
      .processes.map((p) => {
        const old = before.find((b) => b.name === p.name)?.pid;
        return `${p.name} ${old ?? '-'} → ${p.pid ?? '-'}`;
      })
      .join(', ');
    void recorder.normal(
      replica,
      'Restarted',
      `restarted on request (${RESTARTED_AT_ANNOTATION}: ${restartedAt}); pids ${pids}`,
    );
  }

  /**
   * The operator asked for the data of a deleted replica's persistent volumes to go with it
   * (persistentRetentionPolicy Delete): removed once its processes stopped, before its finalizer.
   */
  async #removePersistentData(key: string, replica: Replica): Promise<void> {
    let keys: string[];
    try {
      keys = persistentKeysOf(replica, templateOf(replica));
    } catch {
      return; // a hand-written template that never ran: it has no data here
    }
    if (keys.length === 0) return;
    for (const k of keys) this.#o.engine.removePersistent(k);
    this.#o.log.info({ replica: key, volumes: keys }, 'persistent data removed (retention policy Delete)');
    await this.#o.persistentDataChanged();
  }

  /** Stops a replica and gives its ports back; `graceSeconds` 0 kills at once (the fence). */
  async stopReplica(id: string, opts: { removeLogs?: boolean; graceSeconds?: number } = {}): Promise<void> {
    const { engine, ports } = this.#o;
    if (!engine.has(id)) return;
    const held = engine.status(id).ports.map((p) => p.port);
    try {
      await engine.stop(id, opts.graceSeconds === undefined ? {} : { graceSeconds: opts.graceSeconds });
    } finally {
      for (const p of held) ports.release(p);
      this.#adopted.delete(id);
    }
    if (opts.removeLogs) await engine.logs.removeReplica(id).catch(() => {});
  }

  /** Stops every replica on the host (`orrery up`'s Ctrl-C), logging the ones that would not stop. */
  async stopAll(): Promise<void> {
    await Promise.all(
      this.#o.engine
        .list()
        .map((s) =>
          this.stopReplica(s.id).catch((err: Error) =>
            this.#o.log.error({ replica: s.id, err: err.message }, 'stopping a workload failed'),
          ),
        ),
    );
  }

  /**
   * The keys of every replica the engine supervises, for a reconcile once the informer has
   * synced: those whose object is gone or bound elsewhere are then stopped. A replica with an id
   * this agent never makes is stopped here.
   */
  runningKeys(): string[] {
    const keys: string[] = [];
    for (const s of this.#o.engine.list()) {
      const key = keyOfReplicaId(s.id);
      if (key) keys.push(key);
      else {
        this.#o.log.warn({ replica: s.id }, 'stopping a runtime replica with an id this agent never makes');
        void this.stopReplica(s.id, { removeLogs: true }).catch(() => {});
      }
    }
    return keys;
  }

  /** For the runtime's 'event': metrics, a BackOff Event, and a status write. */
  onRuntimeEvent = (e: EngineEvent): void => {
    const { metrics, informer, recorder } = this.#o;
    metrics.runtimeEvents.inc({ type: e.type });
    const key = keyOfReplicaId(e.replica);
    if (e.type === 'restarting' && key) {
      const { namespace, name } = splitKey(key);
      metrics.countRestart(namespace ?? '', name, e.process);
    }
    if (e.type === 'stopped' && key) {
      const { namespace, name } = splitKey(key);
      metrics.forgetReplica(namespace ?? '', name);
    }
    if (!key || this.#starting.has(e.replica) || e.type === 'stopped') return;
    if (e.type === 'backoff') {
      // Rare by construction (once per back-off period), so worth an Event for kubectl describe.
      const obj = informer.get(key);
      if (obj) {
        void recorder.warning(
          obj,
          'BackOff',
          `restart intensity exceeded (crash loop ${e.crashLoops}); restarting in ${Math.round(e.delayMs / 1000)}s`,
        );
      }
    }
    metrics.statusWriteRequests.inc();
    this.statusWriter.request(key);
  };

  /**
   * One round of the volume sync (every VOLUME_SYNC_MS): each running replica's configMap and
   * secret volumes read again (each object once per round) and written where they changed, as an
   * atomic swap; each disk emptyDir with a sizeLimit measured, and a replica over it stopped with
   * reason EmptyDirSizeLimitExceeded, as the kubelet evicts. A round still running is not overlapped.
   */
  syncVolumes(): Promise<void> {
    this.#syncing ??= this.#syncRound().finally(() => {
      this.#syncing = undefined;
    });
    return this.#syncing;
  }

  async #syncRound(): Promise<void> {
    const { engine, informer, log, hostName } = this.#o;
    const reads = new Map<string, Promise<Record<string, Buffer> | undefined>>();
    const shared: ConfigFiles = {
      files: (kind, namespace, name) => {
        const k = `${kind}/${namespace}/${name}`;
        let r = reads.get(k);
        if (!r) {
          r = this.#o.configFiles.files(kind, namespace, name);
          reads.set(k, r);
        }
        return r;
      },
    };
    for (const status of engine.list()) {
      const id = status.id;
      if (!engine.has(id) || this.#o.stopping()) continue;
      const spec = engine.spec(id);
      const volumes = spec.volumes ?? [];
      if (volumes.length === 0) continue;
      const key = keyOfReplicaId(id);
      const replica = key ? informer.get(key) : undefined;
      if (!key || !replica || replica.spec.host !== hostName || replica.metadata.deletionTimestamp) continue;
      for (const v of volumes) {
        if (!('emptyDir' in v) || v.emptyDir.medium !== 'disk' || v.emptyDir.sizeLimitBytes === undefined)
          continue;
        const limit = v.emptyDir.sizeLimitBytes;
        const used = engine.volumes.usage(id, v, limit);
        if (used > limit) {
          const message = `Usage of EmptyDir volume "${v.name}" exceeds the limit ${limit} bytes (sizeLimit)`;
          log.warn({ replica: key, volume: v.name, used, limit }, 'evicting: emptyDir over its sizeLimit');
          this.#evicted.set(id, replicaDigest(replica, hostName));
          this.#failures.set(id, { reason: 'EmptyDirSizeLimitExceeded', message });
          void this.#o.recorder.warning(replica, 'Evicted', message);
          await this.stopReplica(id).catch((err: Error) =>
            log.error({ replica: key, err: err.message }, 'stopping an evicted replica failed'),
          );
          this.statusWriter.request(key);
          break;
        }
      }
      if (!engine.has(id)) continue;
      let template: ReturnType<typeof templateOf>;
      try {
        template = templateOf(replica);
      } catch {
        continue;
      }
      if (!hasFileVolumes(template)) continue;
      let files: Map<string, VolumeFile[]>;
      try {
        files = await resolveVolumeFiles(template, replica.metadata.namespace as string, shared);
      } catch (err) {
        // The files stay as they are, as the kubelet keeps a volume whose object went away.
        log.debug(
          { replica: key, err: (err as Error).message },
          'volume sync: keeping the files as they are',
        );
        continue;
      }
      for (const [volume, f] of files) {
        const digest = filesDigest(f);
        const k = `${id}/${volume}`;
        if (this.#written.get(k) === digest || !engine.has(id)) continue;
        try {
          engine.writeVolumeFiles(id, volume, f);
          this.#written.set(k, digest);
          log.info({ replica: key, volume, files: f.length }, 'volume files updated');
        } catch (err) {
          log.warn({ replica: key, volume, err: (err as Error).message }, 'writing volume files failed');
        }
      }
    }
  }

  #forget(key: string, id: string): void {
    this.#evicted.delete(id);
    for (const k of this.#written.keys()) if (k.startsWith(`${id}/`)) this.#written.delete(k);
    this.#failures.delete(id);
    this.statusWriter.forget(key);
  }

  /**
   * Builds the replica's spec (its env read from ConfigMaps and Secrets, ports allocated) and runs
   * it. An invalid spec is the user's to fix: phase Failed, reason InvalidSpec, and no retry until
   * the object changes. A reference that does not resolve keeps it Pending (ConfigResolved False)
   * and is looked at again after CONFIG_RECHECK_MS. Anything else (a failed exec is ExecFailed, the
   * rest RunFailed) is reported and thrown, for the queue to retry with back-off.
   */
  async #start(key: string, replica: Replica, id: string): Promise<ReconcileResult> {
    const { ports, engine, fence, metrics, log, hostName } = this.#o;
    const namespace = replica.metadata.namespace as string;
    const allocated = new Map<string, number>();
    const releaseAll = () => {
      for (const p of allocated.values()) ports.release(p);
    };
    let spec: ReturnType<typeof buildReplicaSpec>;
    let skipped: SkippedKeys[];
    let files: Map<string, VolumeFile[]>;
    try {
      const template = templateOf(replica);
      // Before the ports: a replica waiting for its configuration holds none.
      const resolved = await resolveEnv(template, namespace, this.#o.configObjects);
      skipped = resolved.skipped;
      files = hasFileVolumes(template)
        ? await resolveVolumeFiles(template, namespace, this.#o.configFiles)
        : new Map();
      for (const w of portsToAllocate(template)) {
        allocated.set(`${w.process}/${w.name}`, await ports.allocate());
      }
      for (const p of template.processes) {
        for (const port of p.ports ?? []) if (port.port !== undefined) ports.reserve(port.port);
      }
      spec = buildReplicaSpec(
        replica,
        template,
        { name: hostName, address: this.#o.address },
        (proc, name) => allocated.get(`${proc}/${name}`) as number,
        serviceEnv(this.#o.servicesIn(namespace)),
        resolved.env,
      );
    } catch (err) {
      releaseAll();
      if (err instanceof UnresolvedConfigError) {
        if (this.#failures.get(id)?.message !== err.message) {
          log.info(
            { replica: key, reason: err.reason, detail: err.message },
            'replica waits for its configuration',
          );
        }
        this.#failures.set(id, { reason: err.reason, message: err.message, waiting: true });
        this.statusWriter.request(key);
        return { requeueAfterMs: CONFIG_RECHECK_MS };
      }
      this.#failures.set(id, {
        reason: err instanceof InvalidSpecError ? 'InvalidSpec' : 'RunFailed',
        message: (err as Error).message,
      });
      this.statusWriter.request(key);
      if (err instanceof InvalidSpecError) return undefined;
      throw err;
    }
    this.#failures.delete(id);
    for (const s of skipped) {
      // As the kubelet's InvalidEnvironmentVariableNames event: the replica starts without them.
      void this.#o.recorder.warning(
        replica,
        'InvalidEnvironmentVariableNames',
        `keys [${s.keys.join(', ')}] from the envFrom ${s.kind === 'Secret' ? 'secret' : 'configmap'} ${namespace}/${s.name} were skipped since they are not valid environment variable names`,
      );
    }
    spec.annotations = { [DIGEST_ANNOTATION]: replicaDigest(replica, hostName) };
    this.#starting.add(id);
    const t0 = performance.now();
    // A start that takes long (a slow exec, a loaded host) shows as Starting meanwhile.
    const slow = setTimeout(() => this.statusWriter.request(key), this.#o.slowStartMs ?? SLOW_START_MS);
    slow.unref();
    try {
      // A restart asked for before this start is done by it: recorded as handled.
      const restartedAt = replica.metadata.annotations?.[RESTARTED_AT_ANNOTATION];
      await engine.run(spec, restartedAt ? { files, restartedAt } : { files });
      for (const [volume, f] of files) this.#written.set(`${id}/${volume}`, filesDigest(f));
      // Its persistent data made here: in the Host's status before the replica counts as started.
      if (spec.volumes?.some((v) => 'persistent' in v)) await this.#o.persistentDataChanged().catch(() => {});
      const ms = performance.now() - t0;
      metrics.spawnLatency.observe(ms / 1000);
      log.debug({ replica: key, ms: Math.round(ms * 100) / 100 }, 'replica started');
      if (fence.fenced) {
        // The fence fell while this replica was starting: it must not run either.
        fence.markFenced(key);
        await this.stopReplica(id, { graceSeconds: 0 });
      }
    } catch (err) {
      releaseAll();
      if (err instanceof HostPathError) {
        // As the kubelet retries a failed hostPath mount: Pending, the reason named, checked again.
        if (this.#failures.get(id)?.message !== err.message)
          log.info(
            { replica: key, reason: err.reason, detail: err.message },
            'replica waits for its host path',
          );
        this.#failures.set(id, { reason: err.reason, message: err.message, waiting: true });
        return { requeueAfterMs: CONFIG_RECHECK_MS };
      }
      const e = err as Error & { code?: string };
      const reason =
        e.code === 'ENOENT' || e.code === 'EACCES'
          ? 'ExecFailed'
          : err instanceof InvalidSpecError
            ? 'InvalidSpec'
            : 'RunFailed';
      this.#failures.set(id, { reason, message: e.message });
      if (engine.has(id)) await engine.stop(id, { graceSeconds: 0 }).catch(() => {});
      if (reason !== 'InvalidSpec') throw err;
    } finally {
      clearTimeout(slow);
      this.#starting.delete(id);
      this.statusWriter.request(key);
    }
    return undefined;
  }
}

/** What decides whether a volume's files changed: paths, modes and bytes. */
function filesDigest(files: readonly VolumeFile[]): string {
  const h = createHash('sha256');
  for (const f of files) {
    h.update(`${f.path}\0${f.mode}\0${f.data.length}\0`);
    h.update(f.data);
  }
  return h.digest('hex');
}
