/**
 * The autoscaler (docs/DESIGN.md §4.6): every `syncPeriodMs` (the HPA's 15 s) each Instance with
 * `spec.autoscale` gets its replicas' CPU from the runtimes of the hosts they run on (usage.ts: one
 * read per host per period, shared by every Instance on that host) and, with `requestsPerSecond`,
 * their request rates from the mesh proxies (requests.ts: one read per proxy per period); the HPA
 * algorithm (hpa.ts) recommends per metric, the larger count wins (as an HPA with two metrics),
 * and a change is written to `spec.replicas` through the scale subresource with its own field
 * manager, as the HPA does; `kubectl scale` on an autoscaled Instance is overridden at the next
 * period. Each decision that changes the count is an Event with its numbers; an Instance the
 * autoscaler cannot act on (no `resources.cpu`, no runtime token, no proxy to read) gets a Warning
 * Event naming why, and a metric it cannot read never lets it scale down on the other alone.
 */

import { PROXY_METRICS_ANNOTATION } from '../../crds/labels.ts';
import { cpuMillis } from '../../crds/quantity.ts';
import type { Host, Instance, Replica } from '../../crds/types.ts';
import { isNotFound, objectKey, type ReconcileResult, type WorkQueue } from '../../kube/index.ts';
import { hostTarget } from '../../platform/runtime-api.ts';
import { type Controller, type OperatorContext, proxyLeases, replicasLabelledFor } from '../context.ts';
import { type Recommendation, type ReplicaSample, recommend, recommendAverage, ScaleHistory } from './hpa.ts';
import { RequestRateTracker, scrapeProxies } from './requests.ts';
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
  const rates = new RequestRateTracker();
  /** The last read of every proxy (one read of all per period, shared by every Instance). */
  let proxyRead: { at: number; done: Promise<number> } | undefined;

  /** Reads every proxy that publishes its metrics, at most once per half period; resolves with how many answered. */
  function readProxies(): Promise<number> {
    if (proxyRead && performance.now() - proxyRead.at < period / 2) return proxyRead.done;
    const urls = new Set(
      proxyLeases(ctx)
        .map((l) => l.metadata?.annotations?.[PROXY_METRICS_ANNOTATION])
        .filter((u): u is string => Boolean(u)),
    );
    rates.keep(urls);
    const done = scrapeProxies([...urls]).then(({ samples, errors }) => {
      for (const sample of samples) rates.add(sample);
      for (const err of errors) ctx.log.warn({ err }, "autoscaler: cannot read a mesh proxy's metrics");
      return samples.length;
    });
    proxyRead = { at: performance.now(), done };
    return done;
  }

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
    const { cpu, rps } = targetsOf(instance.spec.autoscale ?? {});
    await writeStatus(instance, {
      ...(cpu !== undefined ? { cpu: `<unknown>/${cpu}%` } : {}),
      ...(rps !== undefined ? { requestsPerSecond: `<unknown>/${rps}` } : {}),
      message,
    });
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
      const targets = targetsOf(spec);
      const replicas = replicasLabelledFor(ctx, namespace, name).filter(
        (r) =>
          r.metadata.ownerReferences?.some((o) => o.uid === instance.metadata.uid) &&
          !r.metadata.deletionTimestamp,
      );
      const ready = (r: Replica) => r.status?.phase === 'Running' && r.status.ready === true;
      const current = instance.spec.replicas ?? 1;
      // Each metric's recommendation, or why it has none this round.
      const recs: { metric: 'cpu' | 'rps'; rec: Recommendation; why: string }[] = [];
      const problems: string[] = [];
      if (targets.cpu !== undefined) {
        const cpu = instance.spec.template.resources?.cpu;
        if (!cpu) {
          problems.push(
            'spec.autoscale needs spec.template.resources.cpu: utilisation is a percentage of it',
          );
        } else if (!opts.runtimeToken()) {
          problems.push(
            "the operator has no token for the hosts' runtime APIs (--runtime-token-file): no CPU to scale on",
          );
        } else {
          const hostNames = new Set(replicas.map((r) => r.spec.host).filter((h): h is string => Boolean(h)));
          await Promise.all(
            [...hostNames].map((h) => {
              const host = ctx.informers.hosts.get(h);
              return host ? readHost(host) : undefined;
            }),
          );
          const samples: ReplicaSample[] = replicas.map((r: Replica) => ({
            name: r.metadata.name as string,
            ready: ready(r),
            cpuMillis: tracker.get(namespace, r.metadata.name as string)?.cpuMillis,
          }));
          const rec = recommend(current, samples, cpuMillis(cpu), targets.cpu);
          recs.push({
            metric: 'cpu',
            rec,
            why:
              rec.utilization === undefined
                ? rec.reason
                : `cpu utilisation ${Math.round(rec.utilization)}% of resources.cpu, target ${targets.cpu}%`,
          });
        }
      }
      if (targets.rps !== undefined) {
        if ((await readProxies()) === 0) {
          problems.push('no mesh proxy publishes its metrics (orrery proxy): no request rate to scale on');
        } else {
          const rec = recommendAverage(
            current,
            replicas.map((r) => ({
              ready: ready(r),
              value: rates.rate(namespace, r.metadata.name as string),
            })),
            targets.rps,
            { unit: ' req/s', what: 'a request rate' },
          );
          recs.push({
            metric: 'rps',
            rec,
            why:
              rec.utilization === undefined
                ? rec.reason
                : `${fmtRate(rec.utilization)} requests/s per replica, target ${targets.rps}`,
          });
        }
      }
      if (recs.length === 0) {
        await cannotAct(instance, 'FailedGetResourceMetric', problems.join('; '));
        return { requeueAfterMs: period };
      }
      // The HPA with several metrics: the largest recommendation; with one unreadable, never
      // smaller than now (it might be the one asking for more).
      let raw = Math.max(...recs.map((r) => r.rec.desired));
      if (problems.length > 0 && raw < current) raw = current;
      let history = histories.get(key);
      if (!history) {
        history = new ScaleHistory();
        histories.set(key, history);
      }
      const at = now();
      const { replicas: desired, limitedBy } = history.decide(at, current, raw, {
        minReplicas: spec.minReplicas,
        maxReplicas: spec.maxReplicas,
        scaleDownStabilizationSeconds: spec.behavior?.scaleDown?.stabilizationWindowSeconds,
        scaleUpStabilizationSeconds: spec.behavior?.scaleUp?.stabilizationWindowSeconds,
      });
      ctx.log.debug(
        {
          instance: key,
          current,
          recommended: raw,
          desired,
          metrics: recs.map((r) => ({ metric: r.metric, desired: r.rec.desired, value: r.rec.utilization })),
          problems,
          limitedBy,
        },
        recs.map((r) => r.rec.reason).join('; '),
      );
      const why = [...recs.map((r) => r.why), ...problems].join('; ');
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
      const cpu = recs.find((r) => r.metric === 'cpu')?.rec.utilization;
      const rps = recs.find((r) => r.metric === 'rps')?.rec.utilization;
      await writeStatus(instance, {
        ...(targets.cpu !== undefined
          ? { cpu: `${cpu === undefined ? '<unknown>' : `${Math.round(cpu)}%`}/${targets.cpu}%` }
          : {}),
        ...(cpu === undefined ? {} : { currentCPUUtilizationPercentage: Math.round(cpu) }),
        ...(targets.rps !== undefined
          ? { requestsPerSecond: `${rps === undefined ? '<unknown>' : fmtRate(rps)}/${targets.rps}` }
          : {}),
        ...(rps === undefined ? {} : { currentRequestsPerSecond: Math.round(rps * 10) / 10 }),
        desiredReplicas: desired,
        ...(lastScaleTime ? { lastScaleTime } : {}),
        message,
      });
      return { requeueAfterMs: period };
    },
  };
}

/** The metrics an Instance scales on: CPU when asked for, or when nothing else is (70 %, the HPA's own default is 80 %). */
function targetsOf(spec: NonNullable<Instance['spec']['autoscale']> | Record<string, never>): {
  cpu: number | undefined;
  rps: number | undefined;
} {
  const rps = 'requestsPerSecond' in spec ? spec.requestsPerSecond : undefined;
  const cpu = 'cpuUtilization' in spec ? spec.cpuUtilization : undefined;
  return { cpu: cpu ?? (rps === undefined ? 70 : undefined), rps };
}

function fmtRate(n: number): string {
  return n >= 10 ? n.toFixed(0) : n.toFixed(1);
}
