/**
 * The autoscaler (docs/DESIGN.md §4.6): every `syncPeriodMs` (the HPA's 15 s) each Instance with
 * `spec.autoscale` gets its replicas' CPU from the runtimes of the hosts they run on (usage.ts: one
 * read per host per period, shared by every Instance on that host), the HPA algorithm (hpa.ts)
 * decides, and a change is written to `spec.replicas` through the scale subresource with its own
 * field manager, as the HPA does; `kubectl scale` on an autoscaled Instance is overridden at the
 * next period. Each decision that changes the count is an Event with its numbers; an Instance the
 * autoscaler cannot act on (no `resources.cpu`, no runtime token) gets a Warning Event naming why.
 */
import { cpuMillis } from '../../crds/quantity.ts';
import type { Host, Instance, Replica } from '../../crds/types.ts';
import { isNotFound, objectKey, type ReconcileResult, type WorkQueue } from '../../kube/index.ts';
import { hostTarget } from '../../platform/runtime-api.ts';
import { type Controller, type OperatorContext, replicasLabelledFor } from '../context.ts';
import { type ReplicaSample, recommend, ScaleHistory } from './hpa.ts';
import { type HostSample, scrapeHost, UsageTracker } from './usage.ts';

type AutoscaleStatus = NonNullable<NonNullable<Instance['status']>['autoscale']>;

/** The field manager of the autoscaler's scale writes (the HPA's is its own too). */
export const AUTOSCALER_FIELD_MANAGER = 'orrery-autoscaler';
/** The HPA's --horizontal-pod-autoscaler-sync-period. */
export const DEFAULT_SYNC_PERIOD_MS = 15_000;

export interface AutoscaleOptions {
  /** Bearer token of the hosts' runtime APIs (read when needed); without one the autoscaler says it cannot act. */
  runtimeToken: () => string | undefined;
  syncPeriodMs?: number | undefined;
  /** Seconds, monotonic; injectable for tests. */
  now?: () => number;
}

export function autoscaleController(ctx: OperatorContext, opts: AutoscaleOptions): Controller {
  const period = opts.syncPeriodMs ?? DEFAULT_SYNC_PERIOD_MS;
  const now = opts.now ?? (() => performance.now() / 1000);
  const tracker = new UsageTracker();
  const histories = new Map<string, ScaleHistory>();
  /** The last read of each host and the read in flight, so that Instances on one host share it. */
  const reads = new Map<string, { at: number; sample: Promise<HostSample | undefined> }>();
  /** What was last said about an Instance that cannot be scaled, to say it once. */
  const warned = new Map<string, string>();

  /** A host's sample no older than half a period (one read per host per period). */
  function readHost(host: Host): Promise<HostSample | undefined> {
    const name = host.metadata.name as string;
    const target = hostTarget(host);
    const last = reads.get(name);
    if (last && performance.now() - last.at < period / 2) return last.sample;
    const token = opts.runtimeToken();
    const sample =
      target && token
        ? scrapeHost(target, token).then(
            (s) => {
              tracker.add(s);
              return s;
            },
            (err: unknown) => {
              ctx.log.warn(
                { host: name, err: (err as Error).message },
                "autoscaler: cannot read the host's stats",
              );
              return undefined;
            },
          )
        : Promise.resolve(undefined);
    reads.set(name, { at: performance.now(), sample });
    return sample;
  }

  /** A Warning Event once per message, and the same in status.autoscale.message. */
  async function cannotAct(instance: Instance, reason: string, message: string): Promise<void> {
    const key = objectKey(instance);
    if (warned.get(key) !== message) {
      warned.set(key, message);
      void ctx.recorder.warning(instance, reason, message);
    }
    const target = instance.spec.autoscale?.cpuUtilization ?? 70;
    await writeStatus(instance, { cpu: `<unknown>/${target}%`, message });
  }

  /** status.autoscale, written (a merge patch of that field alone) only when it changed. */
  async function writeStatus(instance: Instance, next: AutoscaleStatus): Promise<void> {
    const prev = instance.status?.autoscale;
    if (prev && JSON.stringify(prev) === JSON.stringify(next)) return;
    try {
      await ctx.clients.instances.patchStatus(
        instance.metadata.name as string,
        { autoscale: next },
        { namespace: instance.metadata.namespace, fieldManager: AUTOSCALER_FIELD_MANAGER },
      );
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  return {
    name: 'autoscale',
    workers: 2,
    watch(queue: WorkQueue<string>) {
      ctx.informers.instances.addHandlers({
        add: (i) => {
          if (i.spec.autoscale) queue.add(objectKey(i));
        },
        update: (old, i) => {
          if (i.spec.autoscale || old.spec.autoscale) queue.add(objectKey(i));
        },
        delete: (i) => queue.add(objectKey(i)),
      });
    },
    async reconcile(key: string): Promise<ReconcileResult> {
      const instance = ctx.informers.instances.get(key);
      const spec = instance?.spec.autoscale;
      if (!instance || !spec || instance.metadata.deletionTimestamp) {
        histories.delete(key);
        warned.delete(key);
        return {};
      }
      const namespace = instance.metadata.namespace as string;
      const name = instance.metadata.name as string;
      const cpu = instance.spec.template.resources?.cpu;
      if (!cpu) {
        await cannotAct(
          instance,
          'FailedGetResourceMetric',
          'spec.autoscale needs spec.template.resources.cpu: utilisation is a percentage of it',
        );
        return { requeueAfterMs: period };
      }
      if (!opts.runtimeToken()) {
        await cannotAct(
          instance,
          'FailedGetResourceMetric',
          "the operator has no token for the hosts' runtime APIs (--runtime-token-file): no CPU to scale on",
        );
        return { requeueAfterMs: period };
      }
      const replicas = replicasLabelledFor(ctx, namespace, name).filter(
        (r) =>
          r.metadata.ownerReferences?.some((o) => o.uid === instance.metadata.uid) &&
          !r.metadata.deletionTimestamp,
      );
      const hostNames = new Set(replicas.map((r) => r.spec.host).filter((h): h is string => Boolean(h)));
      await Promise.all(
        [...hostNames].map((h) => {
          const host = ctx.informers.hosts.get(h);
          return host ? readHost(host) : undefined;
        }),
      );
      const samples: ReplicaSample[] = replicas.map((r: Replica) => ({
        name: r.metadata.name as string,
        ready: r.status?.phase === 'Running' && r.status.ready === true,
        cpuMillis: tracker.get(namespace, r.metadata.name as string)?.cpuMillis,
      }));
      const current = instance.spec.replicas ?? 1;
      const target = spec.cpuUtilization ?? 70;
      const rec = recommend(current, samples, cpuMillis(cpu), target);
      let history = histories.get(key);
      if (!history) {
        history = new ScaleHistory();
        histories.set(key, history);
      }
      const at = now();
      const { replicas: desired, limitedBy } = history.decide(at, current, rec.desired, {
        minReplicas: spec.minReplicas,
        maxReplicas: spec.maxReplicas,
        cpuUtilization: target,
        scaleDownStabilizationSeconds: spec.behavior?.scaleDown?.stabilizationWindowSeconds,
        scaleUpStabilizationSeconds: spec.behavior?.scaleUp?.stabilizationWindowSeconds,
      });
      ctx.log.debug(
        {
          instance: key,
          current,
          recommended: rec.desired,
          desired,
          utilization: rec.utilization,
          limitedBy,
        },
        rec.reason,
      );
      const why =
        rec.utilization === undefined
          ? rec.reason
          : `cpu utilisation ${Math.round(rec.utilization)}% of resources.cpu, target ${target}%`;
      const message = `${desired === current ? `Holding ${current}` : `New size: ${desired}`}; reason: ${why}${limitedBy ? `; limited by ${limitedBy}` : ''}`;
      let lastScaleTime = instance.status?.autoscale?.lastScaleTime;
      if (desired !== current) {
        await ctx.clients.instances.scale(name, desired, {
          namespace,
          fieldManager: AUTOSCALER_FIELD_MANAGER,
        });
        history.scaled(at, current, desired);
        warned.delete(key);
        lastScaleTime = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
        void ctx.recorder.normal(instance, 'SuccessfulRescale', message);
      }
      await writeStatus(instance, {
        cpu: `${rec.utilization === undefined ? '<unknown>' : `${Math.round(rec.utilization)}%`}/${target}%`,
        ...(rec.utilization === undefined
          ? {}
          : { currentCPUUtilizationPercentage: Math.round(rec.utilization) }),
        desiredReplicas: desired,
        ...(lastScaleTime ? { lastScaleTime } : {}),
        message,
      });
      return { requeueAfterMs: period };
    },
  };
}
