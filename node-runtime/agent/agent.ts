/**
 * The host agent (`orrery runtime`) once its engine has re-adopted its replicas (start.ts): it
 * joins the cluster with three parts, each with one job, wired here with one teardown list:
 *
 *  - HostRegistration (registration.ts): the Host object and the Lease heartbeat;
 *  - FencePolicy (fence.ts): what a lost Lease means for the replicas (self-fencing);
 *  - ReplicaReconciler (replicas.ts): `reconcile(key)` for each Replica bound here, through a
 *    work queue, as the operator's controllers do; and each Replica's status from engine events;
 *
 * and serves the HTTP API (logs, stats, events, metrics). See node-runtime/agent/README.md for
 * the exact behaviour.
 */

import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { HOSTS, REPLICAS, SERVICES } from '../../crds/resources.ts';
import type { Host, Replica, Service } from '../../crds/types.ts';
import {
  EventRecorder,
  Informer,
  KubeApi,
  KubeConfig,
  loadKubeConfig,
  onlyStatusChanged,
  type ResourceClient,
  resourceClient,
  runController,
  typed,
  WorkQueue,
} from '../../kube/index.ts';
import { type ServingCertificate, selfSignedCertificate } from '../../platform/x509.ts';
import type { CgroupLayout } from '../cgroups/index.ts';
import type { Engine } from '../engine.ts';
import type { WorkloadPhase } from '../supervisor/spec.ts';
import { KernelFastPath } from './fastpath.ts';
import { FencePolicy } from './fence.ts';
import { type HostFacts, hostFacts } from './host.ts';
import { HostAccountReader } from './host-account.ts';
import { createHttpApi, listen } from './http.ts';
import { AgentMetrics } from './metrics.ts';
import type { NormalizedAgentOptions } from './options.ts';
import { persistentDataOf } from './persistent.ts';
import { PortAllocator } from './ports.ts';
import { HostRegistration } from './registration.ts';
import { ReplicaReconciler, VOLUME_SYNC_MS } from './replicas.ts';
import { ensureToken, tokenPath } from './token.ts';

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
  readonly engine: Engine;
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

/** What startAgent (start.ts) hands over once the engine has re-adopted its replicas. */
export interface ReadoptedEngine {
  options: NormalizedAgentOptions;
  log: Logger;
  /** Started: every replica recorded in the run dir is supervised again. */
  engine: Engine;
  /**
   * Replicas re-adopted, the duration of engine.start() (pidfd_open and a start-time check of
   * every recorded process) and the time since the process started; on /healthz for the
   * docs/DESIGN.md §9 target.
   */
  readopted: { replicas: number; ms: number; sinceProcessStartMs: number };
}

const BY_NAMESPACE = 'namespace';

/** The agent's parts, built and wired to each other but not started (assembleParts). */
interface Parts {
  hosts: ResourceClient<Host>;
  recorder: EventRecorder;
  metrics: AgentMetrics;
  /** The Replicas bound here. */
  informer: Informer<Replica>;
  /** Every Service, by namespace: the <SVC>_SERVICE_HOST/PORT variables of the workloads. */
  services: Informer<Service>;
  queue: WorkQueue<string>;
  fence: FencePolicy;
  reconciler: ReplicaReconciler;
  registration: HostRegistration;
  configObjects: HostAccountReader;
}

/**
 * Builds the three parts and what they share (clients, the Replica informer and work queue, the
 * port allocator, metrics, events). They refer to each other through closures, each called only
 * once all three exist.
 */
function assembleParts(a: {
  o: NormalizedAgentOptions;
  log: Logger;
  engine: Engine;
  api: KubeApi;
  /** For the Lease heartbeat alone. */
  leaseApi: KubeApi;
  fieldManager: string;
  facts: HostFacts;
  layout: CgroupLayout;
  stopping: () => boolean;
}): Parts {
  const { o, log, engine, api, fieldManager, stopping } = a;
  const me = o.hostName;
  const replicas = resourceClient(api, typed<Replica>(REPLICAS), fieldManager);
  const hosts = resourceClient(api, typed<Host>(HOSTS), fieldManager);
  const recorder = new EventRecorder(api, { reportingController: 'orrery-runtime', reportingInstance: me });
  const metrics = new AgentMetrics(me, () => {
    const counts = new Map<WorkloadPhase, number>();
    for (const s of engine.list()) counts.set(s.phase, (counts.get(s.phase) ?? 0) + 1);
    return counts;
  });
  const informer = new Informer<Replica>(replicas, {
    fieldSelector: `spec.host=${me}`,
    log,
    name: 'replicas-bound-here',
    resyncPeriodMs: 5 * 60_000,
    // Back quickly after an API outage: the replicas bound here wait on this watch.
    backoffMaxMs: 2000,
  });
  const services = new Informer<Service>(resourceClient(api, typed<Service>(SERVICES), fieldManager), {
    log,
    name: 'services',
    backoffMaxMs: 2000,
  });
  services.addIndex(BY_NAMESPACE, (s) => s.metadata.namespace);
  const queue = new WorkQueue<string>({ name: 'replicas' });
  // Claimed machine-wide (ports.ts): other runtimes on this machine allocate from the same range.
  const ports = new PortAllocator(o.portRange, o.address, undefined, { owner: o.stateDir });
  for (const s of engine.list()) for (const p of s.ports) ports.reserve(p.port);

  const fence: FencePolicy = new FencePolicy({
    log,
    metrics,
    leaseDurationSeconds: o.leaseDurationSeconds,
    replicaIds: () => engine.list().map((s) => s.id),
    stopReplica: (id) => reconciler.stopReplica(id, { graceSeconds: 0 }),
    register: () => registration.register(),
    resync: (fencedKeys) => {
      void hosts.get(me).then(
        (host) =>
          recorder.warning(
            host,
            'SelfFenced',
            `the runtime could not renew its Lease for ${o.leaseDurationSeconds}s and stopped ${fencedKeys.size} replica(s); it is back and resyncing`,
          ),
        () => {},
      );
      for (const key of informer.keys()) queue.add(key);
      for (const key of fencedKeys) queue.add(key);
      registration.requestWrite();
    },
    stopping,
  });
  const configObjects = new HostAccountReader(api, me, log);
  const reconciler = new ReplicaReconciler({
    configFiles: configObjects,
    hostName: me,
    address: o.address,
    engine,
    replicas,
    informer,
    ports,
    fence,
    recorder,
    metrics,
    log,
    stopping,
    servicesIn: (namespace) => services.byIndex(BY_NAMESPACE, namespace),
    configObjects,
    persistentDataChanged: () => registration.writePersistentData(),
  });
  const registration: HostRegistration = new HostRegistration({
    api,
    leaseApi: a.leaseApi,
    hosts,
    fieldManager,
    options: o,
    facts: a.facts,
    layout: a.layout,
    log,
    metrics,
    replicaCount: () =>
      informer.hasSynced()
        ? informer.list((r) => !r.metadata.deletionTimestamp).length
        : engine.list().length,
    paused: () => fence.fenced || stopping(),
    persistentData: () => persistentDataOf(engine.persistentKeys()),
    onRenewFailure: fence.onRenewFailure,
    onLost: fence.onLost,
    onRecovered: fence.onRecovered,
  });
  return {
    hosts,
    recorder,
    metrics,
    informer,
    services,
    queue,
    fence,
    reconciler,
    registration,
    configObjects,
  };
}

/**
 * Joins the cluster with an engine that has re-adopted its replicas. On failure the engine is
 * left to the caller, started.
 */
export async function joinCluster({ options: o, log, engine, readopted }: ReadoptedEngine): Promise<Agent> {
  const me = o.hostName;
  const fieldManager = `orrery-runtime/${me}`;
  const kubeConfig = kubeConfigOf(o.kubeconfig);
  const api = await KubeApi.fromKubeConfig(kubeConfig);
  // The Lease heartbeat on connections of its own, as the kubelet's heartbeat client: behind a
  // backlog of status writes (a burst of starts on a slow API server) a renewal queued in the
  // shared pool waited for them all, past the fence point, and the host fenced itself.
  const leaseApi = await KubeApi.fromKubeConfig(kubeConfig, { maxSockets: 2 });
  // Run in reverse on stop, or when the start fails half-way.
  const teardown: (() => unknown)[] = [() => api.close(), () => leaseApi.close()];
  const unwind = async () => {
    for (const step of teardown.reverse())
      await Promise.resolve()
        .then(step)
        .catch(() => {});
    teardown.length = 0;
  };
  let stopping = false;

  try {
    const token = await ensureToken(o.stateDir, o.token);
    const facts = await hostFacts(o.capacity);
    const layout = engine.cgroupLayout;
    if (!layout) throw new Error('engine started without a cgroup layout');
    const parts = assembleParts({
      o,
      log,
      engine,
      api,
      leaseApi,
      fieldManager,
      facts,
      layout,
      stopping: () => stopping,
    });
    const { metrics, informer, services, queue, fence, reconciler, registration, configObjects } = parts;
    teardown.push(() => configObjects.close());

    // TLS: a certificate of this start's own, its key never written anywhere; clients trust it
    // because the Host (written with this node's credentials) publishes it.
    const serving = o.tls ? servingCertificate(o) : undefined;
    const server: Server = await listen(
      createHttpApi({
        engine,
        metrics,
        token,
        hostName: me,
        log,
        limits: o.apiLimits,
        health: () => {
          const renewed = registration.lastRenewTime();
          return {
            fenced: fence.fenced,
            leaseLastRenew: renewed === undefined ? null : new Date(renewed).toISOString(),
            replicas: engine.list().length,
            readopted,
          };
        },
      }),
      o.listenHost,
      o.listenPort,
      serving,
    );
    teardown.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    const apiEndpoint = endpointOf(server, o);

    // The kernel fast path: on with --kernel-fastpath, and only where BPF and cgroup v2 are; the
    // Host's first status write says which data path is in use.
    const started = o.kernelFastPath
      ? KernelFastPath.start({
          hostName: me,
          cgroupParent: o.cgroupParent,
          layout,
          api,
          fieldManager,
          services,
          engine,
          log,
        })
      : { off: 'off (orrery runtime --kernel-fastpath not given)' };
    const fastPath = 'fastPath' in started ? started.fastPath : undefined;
    if (fastPath) teardown.push(() => fastPath.stop());
    registration.setMeshDataPath(
      'off' in started ? { kernel: false, reason: started.off } : { kernel: true },
    );

    teardown.push(() => registration.stop());
    await registration.start(apiEndpoint, serving?.cert);

    const enqueue = (r: Replica) => queue.add(`${r.metadata.namespace}/${r.metadata.name}`);
    informer.addHandlers({
      add: enqueue,
      // The echo of a status write (ours: this host owns the status once bound) asks nothing of
      // the runtime: one reconcile fewer per write. A resync (the same object) still reconciles.
      update: (old, r) => {
        if (old !== r && onlyStatusChanged(old, r)) return;
        enqueue(r);
      },
      delete: enqueue,
    });
    informer.addHandlers({
      add: registration.requestWrite,
      delete: registration.requestWrite,
      update: (a, b) => {
        if (Boolean(a.metadata.deletionTimestamp) !== Boolean(b.metadata.deletionTimestamp)) {
          registration.requestWrite();
        }
      },
    });
    engine.on('event', reconciler.onRuntimeEvent);
    teardown.push(() => engine.off('event', reconciler.onRuntimeEvent));
    informer.start();
    teardown.push(() => informer.stop());
    services.start();
    teardown.push(() => services.stop());
    const controller = runController({
      name: 'replicas',
      queue,
      reconcile: reconciler.reconcile,
      workers: o.workers,
      log,
      // Replicas start once the Services are known too, so their variables are complete.
      waitFor: [informer, services],
      onReconciled: (_key, outcome) => metrics.reconciles.inc({ outcome: outcome.error ? 'error' : 'ok' }),
    });
    teardown.push(() => controller.stop());
    teardown.push(() => reconciler.statusWriter.close());
    // configMap and secret volumes read again, disk emptyDirs measured (replicas.ts).
    const volumeSync = setInterval(() => {
      void reconciler
        .syncVolumes()
        .catch((err: Error) => log.warn({ err: err.message }, 'volume sync round failed'));
    }, VOLUME_SYNC_MS);
    volumeSync.unref();
    teardown.push(() => clearInterval(volumeSync));

    // Once the cache is complete, every replica the engine re-adopted is checked against it:
    // those whose object is gone or bound elsewhere are stopped by their reconcile.
    void informer.waitForSync().then(() => {
      for (const key of reconciler.runningKeys()) queue.add(key);
      registration.requestWrite();
    });

    log.info(
      {
        apiEndpoint,
        stateDir: o.stateDir,
        runDir: o.runDir,
        cgroupParent: o.cgroupParent,
        cgroupMode: layout.mode,
        readopted: engine.list().length,
      },
      'runtime agent started',
    );

    return {
      hostName: me,
      apiEndpoint,
      token,
      tokenFile: tokenPath(o.stateDir),
      engine,
      metrics,
      options: o,
      isFenced: () => fence.fenced,
      async stop(stopOpts: AgentStopOptions = {}) {
        if (stopping) return;
        stopping = true;
        // No new work (events, reconciles, watches, renewals), in-flight API calls cut short
        // (destroying the sockets: a write to an unreachable API would otherwise wait out its
        // 30 s timeout), the HTTP API closed; then the workloads are either stopped or left
        // running, detached for re-adoption.
        api.close();
        await unwind();
        if (stopOpts.stopWorkloads) await reconciler.stopAll();
        // With nothing running (stopped now, or none was: a DaemonSet deleted after its
        // workloads), nothing is left behind either: no BPF pins, no per-host cgroup. Replicas
        // left running for re-adoption keep both.
        if (engine.list().length === 0) {
          try {
            fastPath?.unload();
          } catch (err) {
            log.warn({ err: (err as Error).message }, 'could not unload the kernel fast path');
          }
          await engine
            .removeCgroupParentIfEmpty()
            .catch((err: Error) => log.warn({ err: err.message }, 'could not remove the cgroup parent'));
        }
        await engine.close();
        log.info({ stoppedWorkloads: Boolean(stopOpts.stopWorkloads) }, 'runtime agent stopped');
      },
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}

/** A wildcard listen address is no address to reach: the host's own address stands in. */
function reachableHost(o: NormalizedAgentOptions): string {
  return o.listenHost === '0.0.0.0' || o.listenHost === '::' ? o.address : o.listenHost;
}

/**
 * `http(s)://<host>:<port>` of the HTTP API, as written to Host.status.apiEndpoint.
 */
function endpointOf(server: Server, o: NormalizedAgentOptions): string {
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : o.listenPort;
  const reachable = reachableHost(o);
  return `${o.tls ? 'https' : 'http'}://${reachable.includes(':') ? `[${reachable}]` : reachable}:${port}`;
}

/** The API's certificate, naming the addresses it is reached at and the host's name. */
function servingCertificate(o: NormalizedAgentOptions): ServingCertificate {
  const names = new Set([reachableHost(o), o.address, o.hostName]);
  return selfSignedCertificate({ commonName: `orrery-runtime ${o.hostName}`, altNames: [...names] });
}
