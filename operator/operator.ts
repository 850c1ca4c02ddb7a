// The operator process: leader election on the Lease `orrery-operator` in orrery-system; the
// leader runs the informers and the four controllers (instances, scheduler, host lifecycle,
// services). A leader that loses its Lease stops every controller at once; the next one starts
// from a fresh list, so nothing is lost (reconcilers are level-triggered).
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { type Logger, pino } from 'pino';
import { hostOfLease, OPERATOR_LEASE_NAME, SYSTEM_NAMESPACE } from '../crds/labels.ts';
import {
  enqueueFromInformer,
  enqueueOwner,
  isAlreadyExists,
  KubeApi,
  type KubeConfig,
  LeaderElector,
  leaseClient,
  NAMESPACES,
  objectKey,
  type RunningController,
  resourceClient,
  runController,
  WorkQueue,
} from '../kube/index.ts';
import { allInformers, createContext, FIELD_MANAGER, type OperatorContext } from './context.ts';
import { LeaseObserver, reconcileHost, reconcileOrphanedTermination } from './hosts/controller.ts';
import { CreateExpectations, reconcileInstance } from './instance/controller.ts';
import { OperatorMetrics } from './metrics.ts';
import {
  placeAtCreation,
  reconcileScheduling,
  SchedulerCache,
  watchForScheduler,
} from './scheduler/controller.ts';
import { reconcileService, servicesSelecting } from './service/controller.ts';
import { parseCidr } from './service/vip.ts';

/** Binding writes in flight at once. */
const SCHEDULER_BIND_WORKERS = 16;
/** Instance status writes that change only replica counts: at most one per Instance per interval. */
const INSTANCE_STATUS_COUNT_INTERVAL_MS = 500;

export interface OperatorOptions {
  kubeConfig: KubeConfig;
  /** Unique per operator process; default `<hostname>_<random>`. */
  identity?: string;
  log?: Logger;
  /** Default 1000 ms: how long a Host may stay silent before its replicas are recreated elsewhere. */
  hostGraceMs?: number;
  /** Default 127.77.0.0/16. */
  serviceCidr?: string;
  /** Leader Lease duration, seconds. Default 15 (controller-runtime's). */
  leaseDurationSeconds?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** Workers of the Instance controller. Default 4. */
  workers?: number;
  metrics?: OperatorMetrics;
  /** Manage only this namespace (default: all). */
  namespace?: string;
  /** Schedule only onto Hosts matching this label selector (default: all). */
  hostSelector?: string;
  /** Name of the leader election Lease in orrery-system. Default `orrery-operator`. */
  leaderLeaseName?: string;
}

export interface Operator {
  readonly identity: string;
  isLeader(): boolean;
  stop(): Promise<void>;
}

export async function startOperator(opts: OperatorOptions): Promise<Operator> {
  const log = opts.log ?? pino({ name: 'orrery-operator' });
  const identity = opts.identity ?? `${hostname()}_${randomBytes(4).toString('hex')}`;
  const range = parseCidr(opts.serviceCidr ?? '127.77.0.0/16');
  const metrics = opts.metrics ?? new OperatorMetrics();
  const api = await KubeApi.fromKubeConfig(opts.kubeConfig);
  await ensureNamespace(api, SYSTEM_NAMESPACE);

  let term: { ctx: OperatorContext; controllers: RunningController[] } | undefined;
  const leaseDurationSeconds = opts.leaseDurationSeconds ?? 15;
  const elector = new LeaderElector({
    client: leaseClient(api, FIELD_MANAGER),
    namespace: SYSTEM_NAMESPACE,
    name: opts.leaderLeaseName ?? OPERATOR_LEASE_NAME,
    identity,
    leaseDurationSeconds,
    renewDeadlineMs: opts.renewDeadlineMs ?? Math.floor(leaseDurationSeconds * 1000 * (2 / 3)),
    retryPeriodMs: opts.retryPeriodMs ?? Math.max(100, Math.floor(leaseDurationSeconds * 1000 * (2 / 15))),
    log,
    onStartedLeading: (signal) => {
      log.info({ identity }, 'leading: starting controllers');
      metrics.leader.set(1);
      const ctx = createContext(api, log, {
        ...(opts.namespace ? { namespace: opts.namespace } : {}),
        ...(opts.hostSelector ? { hostSelector: opts.hostSelector } : {}),
      });
      term = { ctx, controllers: startControllers(ctx, { ...opts, range, metrics }) };
      for (const informer of allInformers(ctx)) informer.start();
      signal.addEventListener('abort', () => void stopTerm());
    },
    onStoppedLeading: (reason) => {
      if (reason === 'lost') log.warn({ identity }, 'leadership lost: stopping controllers');
      metrics.leader.set(0);
      void stopTerm();
    },
  });

  async function stopTerm() {
    const current = term;
    term = undefined;
    if (!current) return;
    await Promise.all(current.controllers.map((c) => c.stop()));
    await Promise.all(allInformers(current.ctx).map((i) => i.stop()));
  }

  elector.start();
  return {
    identity,
    isLeader: () => elector.isLeader(),
    async stop() {
      await stopTerm();
      await elector.stop();
      api.close();
    },
  };
}

async function ensureNamespace(api: KubeApi, name: string): Promise<void> {
  try {
    await resourceClient(api, NAMESPACES, FIELD_MANAGER).create({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name },
    });
  } catch (error) {
    if (!isAlreadyExists(error)) throw error;
  }
}

function startControllers(
  ctx: OperatorContext,
  opts: OperatorOptions & { range: ReturnType<typeof parseCidr>; metrics: OperatorMetrics },
): RunningController[] {
  const { informers } = ctx;
  const waitFor = allInformers(ctx);
  const observe = (name: string) => opts.metrics.observer(name);

  // Instances: own events, and their Replicas' (through the owner reference).
  const instanceQueue = new WorkQueue<string>();
  enqueueFromInformer(informers.instances, instanceQueue);
  enqueueOwner(informers.replicas, instanceQueue, 'Instance', 'orrery.dev');

  // Scheduler: unbound Replicas; retried when Hosts change or room frees up.
  const schedulerQueue = new WorkQueue<string>();
  const cache = new SchedulerCache();
  const scheduling = watchForScheduler(ctx, cache, (key) => schedulerQueue.add(key));

  // Host lifecycle: Hosts, their Leases, and the Replicas bound to them.
  const hostQueue = new WorkQueue<string>();
  enqueueFromInformer(informers.hosts, hostQueue);
  enqueueFromInformer(informers.leases, hostQueue, hostOfLease);
  enqueueFromInformer(informers.replicas, hostQueue, (r) => r.spec.host || undefined);
  informers.replicas.addHandlers({
    add: (r) =>
      void reconcileOrphanedTermination(ctx, r).catch((err) =>
        ctx.log.error({ err }, 'finalizing an unbound replica'),
      ),
    update: (_, r) =>
      void reconcileOrphanedTermination(ctx, r).catch((err) =>
        ctx.log.error({ err }, 'finalizing an unbound replica'),
      ),
  });

  // Services: own events, and Replicas they select.
  const serviceQueue = new WorkQueue<string>();
  enqueueFromInformer(informers.services, serviceQueue);
  enqueueFromInformer(informers.replicas, serviceQueue, (r) => servicesSelecting(ctx, r));

  const hostOptions = { graceMs: opts.hostGraceMs ?? 1000 };
  const leaseObserver = new LeaseObserver();
  const isLive = (host: string) => leaseObserver.isLive(ctx, host);
  const expectations = new CreateExpectations();
  informers.replicas.addHandlers({
    add: (r) => expectations.observed(objectKey(r)),
    delete: (r) => expectations.observed(objectKey(r)),
  });
  const instanceOptions = {
    expectations,
    place: placeAtCreation(ctx, cache, isLive),
    statusSpacing: { intervalMs: INSTANCE_STATUS_COUNT_INTERVAL_MS, written: new Map<string, number>() },
  };
  informers.leases.addHandlers({
    add: (l) => leaseObserver.observe(l),
    update: (old, l) => {
      // A host whose Lease had expired (so the scheduler passed it over) renews again: the
      // replicas left unbound meanwhile are tried at once, not at their next 5 s retry.
      const host = hostOfLease(l);
      const silence = host ? leaseObserver.silence(old, host) : undefined;
      leaseObserver.observe(l);
      if (silence && silence.silentMs >= silence.durationMs) scheduling.requeuePending();
    },
  });
  return [
    runController({
      name: 'instances',
      queue: instanceQueue,
      workers: opts.workers ?? 4,
      waitFor,
      log: ctx.log,
      reconcile: (key) => reconcileInstance(ctx, key, instanceOptions),
      onReconciled: observe('instances'),
    }),
    runController({
      name: 'scheduler',
      queue: schedulerQueue,
      // Decisions are synchronous (pick + assume, no await between), so they stay one at a time
      // on the event loop; the workers only overlap the binding writes (kube-scheduler binds
      // asynchronously for the same reason). One worker capped a burst at one bind per round trip.
      workers: SCHEDULER_BIND_WORKERS,
      waitFor,
      log: ctx.log,
      reconcile: (key) => reconcileScheduling(ctx, cache, key, isLive),
      onReconciled: observe('scheduler'),
    }),
    runController({
      name: 'hosts',
      queue: hostQueue,
      workers: 2,
      waitFor,
      log: ctx.log,
      reconcile: (key) => reconcileHost(ctx, hostOptions, leaseObserver, key),
      onReconciled: observe('hosts'),
    }),
    runController({
      name: 'services',
      queue: serviceQueue,
      waitFor,
      log: ctx.log,
      reconcile: (key) => reconcileService(ctx, opts.range, key),
      onReconciled: observe('services'),
    }),
  ];
}
