/**
 * The host agent (`orrery runtime`): joins the Kubernetes API and the local Runtime.
 *
 *  1. registers the Host (create if missing, status through the status subresource);
 *  2. renews the Lease `host-<name>` in orrery-system, and fences itself when it cannot;
 *  3. watches the Replicas bound here (field selector spec.host=<me>) and reconciles each one
 *     through a work queue: run, stop on deletion and remove the finalizer, stop what no longer
 *     belongs here;
 *  4. writes each Replica's status from runtime events, coalesced per replica;
 *  5. serves the HTTP API (logs, stats, events, metrics).
 * See node-runtime/agent/README.md for the exact behaviour.
 */

import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { HOST_LABEL, hostLeaseName, RUNTIME_FINALIZER, SYSTEM_NAMESPACE } from '../../crds/labels.ts';
import { HOSTS, REPLICAS } from '../../crds/resources.ts';
import type { ReplicaStatus as ApiReplicaStatus, Host, Replica } from '../../crds/types.ts';
import {
  EventRecorder,
  Informer,
  isAlreadyExists,
  isConflict,
  isForbidden,
  isInvalid,
  isNotFound,
  KubeApi,
  KubeApiError,
  KubeConfig,
  type Lease,
  LeaseHeartbeat,
  leaseClient,
  loadKubeConfig,
  type ResourceClient,
  type RunningController,
  resourceClient,
  runController,
  splitKey,
  typed,
  WorkQueue,
} from '../../kube/index.ts';
import { version } from '../../platform/package.ts';
import type { Runtime } from '../engine.ts';
import type { ReplicaPhase, RuntimeEvent } from '../supervisor/spec.ts';
import { applyHostStatus, ensureHost, type HostFacts, hostFacts, hostStatus } from './host.ts';
import { createHttpApi, listen } from './http.ts';
import { AgentMetrics } from './metrics.ts';
import type { NormalizedAgentOptions } from './options.ts';
import { PortAllocator } from './ports.ts';
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
import { ensureToken, tokenPath } from './token.ts';

/** Minimum time between two writes of Host.status.replicas. */
const HOST_COUNT_INTERVAL_MS = 1000;

export interface AgentStopOptions {
  /** Stop every replica too (`orrery up`'s Ctrl-C); default false: workloads keep running for re-adoption. */
  stopWorkloads?: boolean;
}

export interface Agent {
  readonly hostName: string;
  /** `http://<listen host>:<port>`, as written to Host.status.apiEndpoint. */
  readonly apiEndpoint: string;
  readonly token: string;
  readonly tokenFile: string;
  readonly runtime: Runtime;
  readonly metrics: AgentMetrics;
  readonly options: NormalizedAgentOptions;
  /** True while the Lease could not be renewed for its whole duration and every replica was stopped. */
  isFenced(): boolean;
  stop(opts?: AgentStopOptions): Promise<void>;
}

function kubeConfigOf(k: string | KubeConfig | undefined): KubeConfig {
  if (k instanceof KubeConfig) return k;
  return loadKubeConfig(k === undefined ? {} : { kubeconfig: k });
}

/** Counts failed Lease API calls for /metrics; the heartbeat itself only logs them. */
/**
 * Whether a failed renewal shows the API server itself in trouble (down, restarting, overloaded)
 * rather than unreachable from here: the connection was refused or reset, or the server answered
 * with a 5xx or 429. A partition looks different: requests get no answer at all (they hang, time
 * out, or the network is unreachable).
 */
export function apiServerTrouble(err: unknown): boolean {
  for (
    let e = err as { code?: unknown; status?: unknown; cause?: unknown } | undefined, depth = 0;
    e && depth < 5;
    depth++
  ) {
    if (e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' || e.code === 'EPIPE') return true;
    if (e instanceof KubeApiError && (e.status >= 500 || e.status === 429)) return true;
    e = e.cause as typeof e;
  }
  return false;
}

function countingLeaseClient(
  client: ResourceClient<Lease>,
  onFailure: (err: unknown) => void,
): ResourceClient<Lease> {
  const wrap =
    <A extends unknown[], R>(fn: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      try {
        return await fn(...a);
      } catch (err) {
        if (!isNotFound(err)) onFailure(err);
        throw err;
      }
    };
  return Object.assign(Object.create(client) as ResourceClient<Lease>, {
    get: wrap(client.get.bind(client)),
    create: wrap(client.create.bind(client)),
    replace: wrap(client.replace.bind(client)),
  });
}

/** What startAgent (start.ts) hands over once the runtime has re-adopted its replicas. */
export interface ReadoptedRuntime {
  options: NormalizedAgentOptions;
  log: Logger;
  /** Started: every replica recorded in the run dir is supervised again. */
  runtime: Runtime;
  /**
   * Replicas re-adopted, the duration of runtime.start() (pidfd_open and a start-time check of
   * every recorded process) and the time since the process started; on /healthz for the
   * docs/DESIGN.md §9 target.
   */
  readopted: { replicas: number; ms: number; sinceProcessStartMs: number };
}

/**
 * Joins the cluster with a runtime that has re-adopted its replicas. On failure the runtime is
 * left to the caller, started.
 */
export async function joinCluster({
  options: o,
  log,
  runtime,
  readopted: readopt,
}: ReadoptedRuntime): Promise<Agent> {
  const me = o.hostName;
  const fieldManager = `orrery-runtime/${me}`;
  const api = await KubeApi.fromKubeConfig(kubeConfigOf(o.kubeconfig));
  const cleanups: (() => Promise<void> | void)[] = [() => api.close()];
  const unwind = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  };

  try {
    const token = await ensureToken(o.stateDir, o.token);
    const facts: HostFacts = await hostFacts(o.capacity);
    const layout = runtime.cgroupLayout;
    if (!layout) throw new Error('runtime started without a cgroup layout');

    // Which object each replica was run for (replicaDigest, which covers its uid) lives in its
    // spec's annotations, in the runtime's own state record (written with the spec, before the
    // spawn). A replica adopted from an agent that did not annotate is remembered here until it is
    // run again.
    const adopted = new Map<string, string>();
    const appliedDigestOf = (id: string): string | undefined =>
      runtime.spec(id).annotations?.[DIGEST_ANNOTATION] ?? adopted.get(id);
    const ports = new PortAllocator(o.portRange, o.address);
    for (const s of runtime.list()) for (const p of s.ports) ports.reserve(p.port);

    const replicas = resourceClient(api, typed<Replica>(REPLICAS), fieldManager);
    const hosts = resourceClient(api, typed<Host>(HOSTS), fieldManager);
    const recorder = new EventRecorder(api, { reportingController: 'orrery-runtime', reportingInstance: me });

    const phaseCounts = () => {
      const m = new Map<ReplicaPhase, number>();
      for (const s of runtime.list()) m.set(s.phase, (m.get(s.phase) ?? 0) + 1);
      return m;
    };
    const metrics = new AgentMetrics(me, phaseCounts);

    // ---- state shared by the pieces below ----------------------------------------------------
    let fenced = false;
    let stopping = false;
    /** Keys whose replica the fence stopped: re-checked against a fresh read before running again. */
    const fencedKeys = new Set<string>();
    /** Replicas being started by a reconcile: their events wait for the one status write after run(). */
    const starting = new Set<string>();
    const failures = new Map<string, RunFailure>();

    const informer = new Informer<Replica>(replicas, {
      fieldSelector: `spec.host=${me}`,
      log,
      name: 'replicas-bound-here',
      resyncPeriodMs: 5 * 60_000,
      // Back quickly after an API outage: the replicas bound here wait on this watch.
      backoffMaxMs: 2000,
    });

    const ownWrites: OwnWrites = new WeakMap();
    const statusWriter = new StatusWriter({
      log,
      compute: (key) => {
        // While fenced the API is unreachable and the replicas are being killed: nothing to say.
        if (fenced) return undefined;
        const replica = informer.get(key);
        if (!replica || replica.spec.host !== me) return undefined;
        const id = replicaId(replica.metadata.namespace as string, replica.metadata.name as string);
        const rs = runtime.has(id) ? runtime.status(id) : undefined;
        if (!rs && replica.metadata.deletionTimestamp) return undefined;
        return { replica, status: apiStatusOf(replica, rs, failures.get(id), o.address) };
      },
      write: (replica, status: ApiReplicaStatus) => {
        log.debug(
          { replica: `${replica.metadata.namespace}/${replica.metadata.name}`, phase: status.phase },
          'writing status',
        );
        return replaceReplicaStatus(replicas, replica, status, ownWrites);
      },
      onWrite: (outcome) => metrics.statusWrites.inc({ outcome }),
    });

    // ---- HTTP API --------------------------------------------------------------------------
    let heartbeat: LeaseHeartbeat | undefined;
    const app = createHttpApi({
      runtime,
      metrics,
      token,
      hostName: me,
      log,
      health: () => ({
        fenced,
        leaseLastRenew: heartbeat ? new Date(heartbeat.lastRenewTime()).toISOString() : null,
        replicas: runtime.list().length,
        readopted: readopt,
      }),
    });
    const server: Server = await listen(app, o.listenHost, o.listenPort);
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    const addr = server.address();
    const port = typeof addr === 'object' && addr ? addr.port : o.listenPort;
    // A wildcard listen address is no address to reach: the host's own address stands in.
    const reachable = o.listenHost === '0.0.0.0' || o.listenHost === '::' ? o.address : o.listenHost;
    const endpointHost = reachable.includes(':') ? `[${reachable}]` : reachable;
    const apiEndpoint = `http://${endpointHost}:${port}`;

    // ---- Host registration -----------------------------------------------------------------
    const nowSeconds = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    let readySince = nowSeconds();
    const boundCount = () => informer.list((r) => !r.metadata.deletionTimestamp).length;
    const currentHostStatus = () =>
      hostStatus({
        facts,
        address: o.address,
        apiEndpoint,
        runtimeVersion: version,
        layout,
        cgroupParent: o.cgroupParent,
        replicas: informer.hasSynced() ? boundCount() : runtime.list().length,
        ready: {
          status: 'True',
          reason: 'RuntimeReady',
          message: `runtime ${version} is renewing its lease`,
        },
        readySince,
      });
    const register = async () => {
      const host = await ensureHost(hosts, me, o.labels, o.registerUnschedulable);
      // Ready's lastTransitionTime moves when it was not True (e.g. the operator's
      // HostLeaseExpired), as apimachinery's SetStatusCondition does.
      if (host.status?.conditions?.find((c) => c.type === 'Ready')?.status !== 'True')
        readySince = nowSeconds();
      await applyHostStatus(hosts, me, currentHostStatus());
    };
    // The namespace of the Leases; creating it is racy between hosts and harmless.
    try {
      await api.request({
        method: 'POST',
        path: '/api/v1/namespaces',
        body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: SYSTEM_NAMESPACE } },
      });
    } catch (err) {
      if (!isAlreadyExists(err) && !isForbidden(err)) throw err;
    }
    await register();

    // Host.status.replicas follows the informer, and the whole registration is written again
    // when the Host is gone or not Ready (the operator marks it Unknown when it judged the Lease
    // expired, and never back: like the kubelet, the runtime reports itself Ready). Coalesced:
    // one write in flight, the latest wins.
    let hostWriteInFlight = false;
    let hostWriteDirty = false;
    let needRegister = false;
    let lastHostReplicas = -1;
    let lastHostCountWrite = 0;
    const requestHostWrite = () => {
      hostWriteDirty = true;
      if (hostWriteInFlight || fenced || stopping) return;
      hostWriteInFlight = true;
      void (async () => {
        while (hostWriteDirty && !stopping && !fenced) {
          hostWriteDirty = false;
          const n = boundCount();
          try {
            if (needRegister) {
              needRegister = false;
              log.info('Host missing or not Ready while the runtime is healthy: registering again');
              await register();
              lastHostReplicas = n;
              continue;
            }
            if (n === lastHostReplicas) continue;
            // The count is informational (the scheduler keeps its own usage): at most one write
            // per HOST_COUNT_INTERVAL_MS, so a ramp of 1,000 replicas is a handful of Host
            // updates, not one per replica for every Host watcher to process.
            const wait = lastHostCountWrite + HOST_COUNT_INTERVAL_MS - Date.now();
            if (wait > 0) {
              await new Promise((r) => setTimeout(r, wait).unref());
              hostWriteDirty = true;
              continue;
            }
            lastHostCountWrite = Date.now();
            await hosts.patchStatus(me, { replicas: n });
            lastHostReplicas = n;
          } catch (err) {
            log.warn({ err: (err as Error).message }, 'could not update the Host');
            break;
          }
        }
        hostWriteInFlight = false;
      })();
    };
    const hostInformer = new Informer<Host>(hosts, {
      fieldSelector: `metadata.name=${me}`,
      log,
      name: 'own-host',
      backoffMaxMs: 2000,
    });
    const checkHost = (h: Host | undefined) => {
      const ready = h?.status?.conditions?.find((c) => c.type === 'Ready');
      if (!h || ready?.status !== 'True' || h.status?.apiEndpoint !== apiEndpoint) {
        needRegister = true;
        requestHostWrite();
      }
    };
    hostInformer.addHandlers({
      add: checkHost,
      update: (_old, h) => checkHost(h),
      delete: () => checkHost(undefined),
    });

    // ---- Heartbeat and self-fencing ----------------------------------------------------------
    /** The fence's stops: recovery waits for them, so a replica half-stopped is not taken as running. */
    let fenceStops: Promise<void> = Promise.resolve();
    // Self-fencing protects against a partition, in which the operator (reaching the API server)
    // moves our replicas while we cannot hear about it. When the API server itself is in trouble
    // (refusing or resetting connections, answering 5xx/429) it is so for everyone: nobody can move
    // anything, and killing workloads would turn a control plane restart into an outage. So such a
    // failure defers the fence; a renewal that gets no answer at all (a partition) fences, also
    // while deferred.
    let lastRenewError: unknown;
    let fenceDeferred = false;
    const onRenewFailure = (err: unknown) => {
      metrics.leaseRenewFailures.inc();
      lastRenewError = err;
      if (fenceDeferred && !apiServerTrouble(err)) {
        fenceDeferred = false;
        fence();
      }
    };
    const onLost = () => {
      if (fenced || stopping) return;
      if (apiServerTrouble(lastRenewError)) {
        fenceDeferred = true;
        log.warn(
          { leaseDurationSeconds: o.leaseDurationSeconds },
          'host Lease not renewed for its whole duration, but the API server is down or failing (not partitioned from us): keeping replicas running',
        );
        return;
      }
      fence();
    };
    const fence = () => {
      if (fenced || stopping) return;
      fenced = true;
      metrics.selfFences.inc();
      const ids = runtime.list().map((s) => s.id);
      for (const id of ids) {
        const key = keyOfReplicaId(id);
        if (key) fencedKeys.add(key);
      }
      log.error(
        { replicas: ids.length, leaseDurationSeconds: o.leaseDurationSeconds },
        'self-fencing: the host Lease could not be renewed for its whole duration; killing every replica so the operator can run them elsewhere',
      );
      fenceStops = Promise.all(
        ids.map(async (id) => {
          try {
            // Grace 0: the stop signal, then the cgroup kill at once. The operator may already be
            // starting the replacement elsewhere.
            await stopReplica(id, false, 0);
          } catch (err) {
            log.error(
              { replica: id, err: (err as Error).message },
              'self-fencing: stopping a replica failed',
            );
          }
        }),
      ).then(() => {
        log.warn({ replicas: ids.length }, 'self-fencing: every replica stopped');
      });
    };
    const onRecovered = () => {
      fenceDeferred = false;
      if (!fenced || stopping) return;
      log.warn({ replicas: fencedKeys.size }, 'host Lease renewed again: re-registering and resyncing');
      void (async () => {
        await fenceStops;
        for (let attempt = 0; !stopping; attempt++) {
          try {
            await register();
            break;
          } catch (err) {
            log.warn({ err: (err as Error).message, attempt }, 're-registration failed; retrying');
            await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
          }
        }
        fenced = false;
        const host = await hosts.get(me).catch(() => undefined);
        if (host) {
          void recorder.warning(
            host,
            'SelfFenced',
            `the runtime could not renew its Lease for ${o.leaseDurationSeconds}s and stopped ${fencedKeys.size} replica(s); it is back and resyncing`,
          );
        }
        for (const key of informer.keys()) queue.add(key);
        for (const key of fencedKeys) queue.add(key);
        requestHostWrite();
      })();
    };
    heartbeat = new LeaseHeartbeat({
      client: countingLeaseClient(leaseClient(api, fieldManager), onRenewFailure),
      namespace: SYSTEM_NAMESPACE,
      name: hostLeaseName(me),
      holderIdentity: me,
      leaseDurationSeconds: o.leaseDurationSeconds,
      renewIntervalMs: o.leaseRenewIntervalMs,
      labels: { [HOST_LABEL]: me },
      onLost,
      onRecovered,
      log,
    });
    await heartbeat.start();
    metrics.leaseRenewals.set(heartbeat.lastRenewTime() / 1000);
    const hb = heartbeat;
    const renewGauge = setInterval(() => metrics.leaseRenewals.set(hb.lastRenewTime() / 1000), 1000);
    renewGauge.unref();
    cleanups.push(async () => {
      clearInterval(renewGauge);
      await hb.stop();
    });

    // ---- Replica reconcile -------------------------------------------------------------------
    async function stopReplica(id: string, removeLogs: boolean, graceSeconds?: number): Promise<void> {
      if (!runtime.has(id)) return;
      const held = runtime.status(id).ports.map((p) => p.port);
      try {
        await runtime.stop(id, graceSeconds === undefined ? {} : { graceSeconds });
      } finally {
        for (const p of held) ports.release(p);
        adopted.delete(id);
      }
      if (removeLogs) await runtime.logs.removeReplica(id).catch(() => {});
    }

    async function removeFinalizer(start: Replica): Promise<void> {
      let obj: Replica | undefined = start;
      for (let attempt = 0; obj && attempt < 8; attempt++) {
        const fins = obj.metadata.finalizers ?? [];
        if (!fins.includes(RUNTIME_FINALIZER)) return;
        try {
          // JSON patch whose `test` makes it conditional on the finalizer list only (RFC 6902):
          // a finalizer someone added meanwhile is not dropped by our stale list, while our own
          // status writes (which change the resourceVersion) do not make it fail.
          await replicas.patch(
            obj.metadata.name as string,
            [
              { op: 'test', path: '/metadata/finalizers', value: fins },
              {
                op: 'replace',
                path: '/metadata/finalizers',
                value: fins.filter((f) => f !== RUNTIME_FINALIZER),
              },
            ],
            { namespace: obj.metadata.namespace, type: 'json' },
          );
          return;
        } catch (err) {
          if (isNotFound(err)) return;
          // A failed test is 422 Invalid; a conflict may still come from the storage layer.
          if (!isConflict(err) && !isInvalid(err)) throw err;
          obj = await replicas
            .get(obj.metadata.name as string, { namespace: obj.metadata.namespace })
            .catch((e: unknown) => {
              if (isNotFound(e)) return undefined;
              throw e;
            });
        }
      }
      if (obj) throw new Error(`could not remove finalizer ${RUNTIME_FINALIZER}: kept conflicting`);
    }

    async function startReplica(key: string, replica: Replica, id: string): Promise<void> {
      const allocated = new Map<string, number>();
      const releaseAll = () => {
        for (const p of allocated.values()) ports.release(p);
      };
      let spec: ReturnType<typeof buildReplicaSpec>;
      try {
        const template = templateOf(replica);
        for (const w of portsToAllocate(template)) {
          allocated.set(`${w.process}/${w.name}`, await ports.allocate());
        }
        for (const p of template.processes) {
          for (const port of p.ports ?? []) if (port.port !== undefined) ports.reserve(port.port);
        }
        spec = buildReplicaSpec(
          replica,
          template,
          me,
          (proc, name) => allocated.get(`${proc}/${name}`) as number,
        );
      } catch (err) {
        releaseAll();
        failures.set(id, { reason: 'InvalidSpec', message: (err as Error).message });
        statusWriter.request(key);
        if (err instanceof TypeError) return;
        throw err;
      }
      failures.delete(id);
      spec.annotations = { [DIGEST_ANNOTATION]: replicaDigest(replica, me) };
      starting.add(id);
      const t0 = performance.now();
      try {
        await runtime.run(spec);
        const ms = performance.now() - t0;
        metrics.spawnLatency.observe(ms / 1000);
        log.debug({ replica: key, ms: Math.round(ms * 100) / 100 }, 'replica started');
        if (fenced) {
          // The fence fell while this replica was starting: it must not run either.
          fencedKeys.add(key);
          await stopReplica(id, false, 0);
        }
      } catch (err) {
        releaseAll();
        const e = err as Error & { code?: string };
        failures.set(id, {
          reason:
            e.code === 'ENOENT' || e.code === 'EACCES'
              ? 'ExecFailed'
              : e instanceof TypeError
                ? 'InvalidSpec'
                : 'RunFailed',
          message: e.message,
        });
        if (runtime.has(id)) await runtime.stop(id, { graceSeconds: 0 }).catch(() => {});
        if (!(err instanceof TypeError)) throw err;
      } finally {
        starting.delete(id);
        statusWriter.request(key);
      }
    }

    async function reconcile(key: string): Promise<undefined> {
      if (fenced || stopping) return undefined;
      log.debug({ replica: key }, 'reconciling');
      const { namespace, name } = splitKey(key);
      if (!namespace) return undefined;
      const id = replicaId(namespace, name);
      let replica = informer.get(key);

      if (replica && fencedKeys.has(key)) {
        // After a fence the cache may still hold what was true before the partition: ask the API.
        replica = await replicas.get(name, { namespace }).catch((err: unknown) => {
          if (isNotFound(err)) return undefined;
          throw err;
        });
        fencedKeys.delete(key);
      }

      if (!replica || replica.spec.host !== me) {
        // Gone, or bound elsewhere: "when an agent comes back it kills what no longer belongs to it".
        if (runtime.has(id)) {
          log.info({ replica: key }, 'stopping a replica that is no longer bound to this host');
          await stopReplica(id, true);
        }
        failures.delete(id);
        statusWriter.forget(key);
        return undefined;
      }

      if (replica.metadata.deletionTimestamp) {
        if (runtime.has(id)) {
          statusWriter.request(key);
          await stopReplica(id, true);
        }
        failures.delete(id);
        await removeFinalizer(replica);
        statusWriter.forget(key);
        return undefined;
      }

      if (runtime.has(id)) {
        const digest = replicaDigest(replica, me);
        const applied = appliedDigestOf(id);
        if (applied === undefined) {
          // Run by an agent that did not annotate its replicas: adopt it as it runs.
          adopted.set(id, digest);
        } else if (applied !== digest) {
          log.info(
            { replica: key },
            'replica object changed (new uid or template): stopping and running it again',
          );
          await stopReplica(id, false);
        }
      }
      if (!runtime.has(id)) await startReplica(key, replica, id);
      else statusWriter.request(key);
      return undefined;
    }

    const queue = new WorkQueue<string>({ name: 'replicas' });
    informer.addHandlers({
      add: (r) => queue.add(`${r.metadata.namespace}/${r.metadata.name}`),
      update: (_old, r) => queue.add(`${r.metadata.namespace}/${r.metadata.name}`),
      delete: (r) => queue.add(`${r.metadata.namespace}/${r.metadata.name}`),
    });
    informer.addHandlers({
      add: requestHostWrite,
      delete: requestHostWrite,
      update: (a, b) => {
        if (Boolean(a.metadata.deletionTimestamp) !== Boolean(b.metadata.deletionTimestamp))
          requestHostWrite();
      },
    });

    const onRuntimeEvent = (e: RuntimeEvent) => {
      metrics.runtimeEvents.inc({ type: e.type });
      const key = keyOfReplicaId(e.replica);
      if (e.type === 'restarting' && key) {
        const { namespace, name } = splitKey(key);
        metrics.processRestarts.inc({ namespace: namespace ?? '', replica: name, process: e.process });
      }
      if (!key || starting.has(e.replica) || e.type === 'stopped') return;
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
      statusWriter.request(key);
    };
    runtime.on('event', onRuntimeEvent);
    cleanups.push(() => {
      runtime.off('event', onRuntimeEvent);
    });

    informer.start();
    cleanups.push(() => informer.stop());
    hostInformer.start();
    cleanups.push(() => hostInformer.stop());
    const controller: RunningController = runController({
      name: 'replicas',
      queue,
      reconcile,
      workers: o.workers,
      log,
      waitFor: [informer],
      onReconciled: (_key, outcome) => metrics.reconciles.inc({ outcome: outcome.error ? 'error' : 'ok' }),
    });
    cleanups.push(() => controller.stop());
    cleanups.push(() => statusWriter.close());

    // Once the cache is complete, every replica the runtime re-adopted is checked against it:
    // those whose object is gone or bound elsewhere are stopped by their reconcile.
    void informer.waitForSync().then(() => {
      for (const s of runtime.list()) {
        const key = keyOfReplicaId(s.id);
        if (key) queue.add(key);
        else {
          log.warn({ replica: s.id }, 'stopping a runtime replica with an id this agent never makes');
          void stopReplica(s.id, true).catch(() => {});
        }
      }
      requestHostWrite();
    });

    log.info(
      {
        apiEndpoint,
        stateDir: o.stateDir,
        runDir: o.runDir,
        cgroupParent: o.cgroupParent,
        cgroupMode: layout.mode,
        readopted: runtime.list().length,
      },
      'runtime agent started',
    );

    return {
      hostName: me,
      apiEndpoint,
      token,
      tokenFile: tokenPath(o.stateDir),
      runtime,
      metrics,
      options: o,
      isFenced: () => fenced,
      async stop(stopOpts: AgentStopOptions = {}) {
        if (stopping) return;
        stopping = true;
        // No new work (events, reconciles, watches, renewals), and in-flight API calls cut short
        // (destroying the sockets: a write to an unreachable API would otherwise wait out its
        // 30 s timeout); then the HTTP API; then the workloads are either stopped or left
        // running, detached for re-adoption.
        runtime.off('event', onRuntimeEvent);
        clearInterval(renewGauge);
        api.close();
        await Promise.all([
          controller.stop(),
          informer.stop(),
          hostInformer.stop(),
          statusWriter.close(),
          hb.stop(),
        ]);
        await new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        });
        if (stopOpts.stopWorkloads) {
          await Promise.all(
            runtime
              .list()
              .map((s) =>
                stopReplica(s.id, false).catch((err: Error) =>
                  log.error({ replica: s.id, err: err.message }, 'stopping a workload failed'),
                ),
              ),
          );
          await runtime
            .removeCgroupParentIfEmpty()
            .catch((err: Error) => log.warn({ err: err.message }, 'could not remove the cgroup parent'));
        }
        await runtime.close();
        api.close();
        log.info({ stoppedWorkloads: Boolean(stopOpts.stopWorkloads) }, 'runtime agent stopped');
      },
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}
