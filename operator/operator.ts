// The operator process: leader election on the Lease `orrery-operator` in orrery-system; the
// leader runs the informers and the four controllers (instances, scheduler, host lifecycle,
// services). A leader that loses its Lease stops every controller at once; the next one starts
// from a fresh list, so nothing is lost (reconcilers are level-triggered).
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { OPERATOR_LEASE_NAME, SYSTEM_NAMESPACE } from '../crds/labels.ts';
import {
  ensureNamespace,
  type InformerHealth,
  KubeApi,
  type KubeConfig,
  LeaderElector,
  leaseClient,
  type RunningController,
  runController,
  WorkQueue,
} from '../kube/index.ts';
import { newLogger } from '../platform/log.ts';
import { autoscaleController } from './autoscale/controller.ts';
import {
  allInformers,
  type Controller,
  createContext,
  FIELD_MANAGER,
  type OperatorContext,
} from './context.ts';
import { type OperatorHealth, operatorHealth } from './health.ts';
import { hostAccessController } from './hostaccess/controller.ts';
import { hostController, LeaseObserver } from './hosts/controller.ts';
import { instanceController } from './instance/controller.ts';
import { OperatorMetrics } from './metrics.ts';
import { placeAtCreation, SchedulerCache, schedulerController } from './scheduler/controller.ts';
import { serviceController } from './service/controller.ts';
import { parseCidr } from './service/vip.ts';

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
  /** Bearer token of the hosts' runtime APIs (read when needed), for the autoscaler's CPU reads. */
  runtimeToken?: (() => string | undefined) | undefined;
  /** The autoscaler's period (the HPA's sync period). Default 15 s. */
  autoscaleSyncMs?: number | undefined;
}

export interface Operator {
  readonly identity: string;
  isLeader(): boolean;
  /** What /healthz says (operator/health.ts). */
  health(): OperatorHealth;
  stop(): Promise<void>;
}

export async function startOperator(opts: OperatorOptions): Promise<Operator> {
  const log = opts.log ?? newLogger('orrery-operator');
  const identity = opts.identity ?? `${hostname()}_${randomBytes(4).toString('hex')}`;
  const range = parseCidr(opts.serviceCidr ?? '127.77.0.0/16');
  const metrics = opts.metrics ?? new OperatorMetrics();
  const api = await KubeApi.fromKubeConfig(opts.kubeConfig);
  await ensureNamespace(api, SYSTEM_NAMESPACE, FIELD_MANAGER);

  let term: { ctx: OperatorContext; controllers: RunningController[]; since: number } | undefined;
  let stopped = false;
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
      term = { ctx, controllers: startControllers(ctx, { ...opts, range, metrics }), since: Date.now() };
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
    health: () => {
      const current = term;
      const informers: Record<string, InformerHealth> = {};
      for (const [name, informer] of Object.entries(current?.ctx.informers ?? {}))
        informers[name] = (informer as { health(): InformerHealth }).health();
      return operatorHealth(
        {
          identity,
          stopped,
          leader: elector.isLeader(),
          leaderIdentity: elector.leader(),
          leadingSince: current?.since,
          informers,
        },
        Date.now(),
      );
    },
    async stop() {
      stopped = true;
      await stopTerm();
      await elector.stop();
      api.close();
    },
  };
}

function startControllers(
  ctx: OperatorContext,
  opts: OperatorOptions & { range: ReturnType<typeof parseCidr>; metrics: OperatorMetrics },
): RunningController[] {
  const { informers } = ctx;
  const waitFor = allInformers(ctx);
  const observe = (name: string) => opts.metrics.observer(name);
  // Shared by three controllers: which hosts renew their Lease (by this operator's clock), and
  // the scheduler's view of what is bound where.
  const leases = new LeaseObserver();
  leases.watch(informers.leases);
  const cache = new SchedulerCache();
  const controllers: Controller[] = [
    instanceController(ctx, {
      ...(opts.workers ? { workers: opts.workers } : {}),
      place: placeAtCreation(ctx, cache, (host) => leases.isLive(ctx, host)),
    }),
    schedulerController(ctx, { cache, leases }),
    hostController(ctx, { graceMs: opts.hostGraceMs ?? 1000, leases }),
    hostAccessController(ctx),
    serviceController(ctx, { range: opts.range }),
    autoscaleController(ctx, {
      runtimeToken: opts.runtimeToken ?? (() => undefined),
      syncPeriodMs: opts.autoscaleSyncMs,
    }),
  ];
  return controllers.map((c) => {
    const queue = new WorkQueue<string>({ name: c.name });
    c.watch(queue);
    return runController({
      name: c.name,
      queue,
      workers: c.workers,
      waitFor,
      log: ctx.log,
      reconcile: c.reconcile,
      onReconciled: observe(c.name),
    });
  });
}
