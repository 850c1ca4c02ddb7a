// The scheduler: reconcile(namespace/name) binds an unbound Replica to a Host (spec.host), or,
// when nothing fits, records why on the Replica (status reason Unschedulable, condition
// Scheduled=False — the scheduler owns a Replica's status until it is bound, as kube-scheduler
// writes PodScheduled) and as a Warning Event, and retries when Hosts change. An unbound Replica
// being deleted has no runtime to remove its runtime finalizer: the scheduler removes it.
//
// Host usage is kept incrementally from the Replica informer plus the bindings made but not yet
// seen back ("assumed", as kube-scheduler's cache does), so one decision costs O(hosts).

import { setConditions } from '../../crds/conditions.ts';
import { HOST_LABEL, RUNTIME_FINALIZER } from '../../crds/labels.ts';
import type { Replica } from '../../crds/types.ts';
import {
  isConflict,
  isInvalid,
  isNotFound,
  objectKey,
  type ReconcileResult,
  removeFinalizer,
  splitKey,
} from '../../kube/index.ts';
import { type Controller, type OperatorContext, unboundReplicas } from '../context.ts';
import type { LeaseObserver } from '../hosts/controller.ts';
import {
  addUsage,
  emptyUsage,
  type HostUsage,
  type Placer,
  pickHost,
  type ScheduleResult,
  usageIn,
} from './fit.ts';

/** Bound replicas per host, maintained from informer events and our own bindings. */
export class SchedulerCache {
  readonly #boundTo = new Map<string, { host: string; replica: Replica }>();
  #usage: Map<string, HostUsage> | undefined;

  /** Record what the API says about a replica (undefined: it is gone). */
  observe(key: string, replica: Replica | undefined): void {
    const host = replica?.spec.host;
    const previous = this.#boundTo.get(key);
    if (replica && host) {
      if (previous?.host === host) return;
      this.#boundTo.set(key, { host, replica });
    } else if (previous && !replica) {
      this.#boundTo.delete(key);
    } else {
      return;
    }
    this.#usage = undefined;
  }

  /**
   * Drop an assumption whose write failed, falling back to what the informer holds for the key
   * (`current`): a create that met an existing Replica must not uncount that one.
   */
  forget(key: string, host: string, current: Replica | undefined): void {
    if (this.#boundTo.get(key)?.host !== host) return;
    this.#boundTo.delete(key);
    this.#usage = undefined;
    if (current) this.observe(key, current);
  }

  assume(key: string, replica: Replica, host: string): void {
    this.#boundTo.set(key, { host, replica });
    if (this.#usage) {
      addUsage(usageIn(this.#usage, host), replica);
    }
  }

  usageOf = (host: string): HostUsage => {
    if (!this.#usage) {
      this.#usage = new Map();
      for (const { host: h, replica } of this.#boundTo.values()) addUsage(usageIn(this.#usage, h), replica);
    }
    return this.#usage.get(host) ?? emptyUsage();
  };

  replicasOn(host: string): number {
    return this.usageOf(host).replicas;
  }
}

/** Binding writes in flight at once. */
const BIND_WORKERS = 16;

export interface SchedulerOptions {
  cache: SchedulerCache;
  /** Which hosts renew their Lease; a host coming back retries the replicas left unbound. */
  leases: LeaseObserver;
}

/** Unbound Replicas; retried when Hosts change, room frees up, or a silent host renews again. */
export function schedulerController(ctx: OperatorContext, { cache, leases }: SchedulerOptions): Controller {
  const isLive = (host: string) => leases.isLive(ctx, host);
  return {
    name: 'scheduler',
    // Decisions are synchronous (pick + assume, no await between), so they stay one at a time on
    // the event loop; the workers only overlap the binding writes (kube-scheduler binds
    // asynchronously for the same reason). One worker capped a burst at one bind per round trip.
    workers: BIND_WORKERS,
    watch(queue) {
      const requeuePending = () => {
        for (const pending of unboundReplicas(ctx)) queue.add(objectKey(pending));
      };
      ctx.informers.replicas.addHandlers({
        add: (r) => {
          cache.observe(objectKey(r), r);
          if (!r.spec.host) queue.add(objectKey(r));
        },
        update: (_, r) => {
          cache.observe(objectKey(r), r);
          if (!r.spec.host) queue.add(objectKey(r));
        },
        delete: (r) => {
          cache.observe(objectKey(r), undefined);
          requeuePending(); // room was freed: pending replicas may fit now
        },
      });
      ctx.informers.hosts.addHandlers({
        add: requeuePending,
        update: requeuePending,
        delete: requeuePending,
      });
      leases.onHostBack(requeuePending);
    },
    reconcile: (key) => reconcileScheduling(ctx, cache, key, isLive),
  };
}

/**
 * One scheduling decision: pick a host and assume the replica on it at once, before any write
 * (as kube-scheduler assumes before its asynchronous bind), so the next decision, made while the
 * write is in flight, already counts it. The caller forgets the assumption if its write fails.
 */
function decide(
  ctx: OperatorContext,
  cache: SchedulerCache,
  key: string,
  replica: Replica,
  isLive?: (host: string) => boolean,
): ScheduleResult {
  const result = pickHost(replica, ctx.informers.hosts.list(), cache.usageOf, isLive);
  if (result.host !== undefined) cache.assume(key, replica, result.host);
  return result;
}

/** The Instance controller's placer: Replicas are created already bound when a host fits. */
export function placeAtCreation(
  ctx: OperatorContext,
  cache: SchedulerCache,
  isLive?: (host: string) => boolean,
): Placer {
  return (key, replica) => {
    const { host } = decide(ctx, cache, key, replica, isLive);
    return host === undefined
      ? undefined
      : { host, undo: () => cache.forget(key, host, ctx.informers.replicas.get(key)) };
  };
}

export async function reconcileScheduling(
  ctx: OperatorContext,
  cache: SchedulerCache,
  key: string,
  isLive?: (host: string) => boolean,
): Promise<ReconcileResult> {
  const replica = ctx.informers.replicas.get(key);
  if (!replica || replica.spec.host) return undefined;
  if (replica.metadata.deletionTimestamp) {
    await removeFinalizer(ctx.clients.replicas, replica, RUNTIME_FINALIZER);
    return undefined;
  }
  const { namespace, name } = splitKey(key);
  const result = decide(ctx, cache, key, replica, isLive);
  if (result.host === undefined) {
    await markUnschedulable(ctx, replica, result.message, result.reason);
    return { requeueAfterMs: 5_000 };
  }
  try {
    await ctx.clients.replicas.mergePatch(
      name,
      {
        metadata: {
          resourceVersion: replica.metadata.resourceVersion,
          labels: { [HOST_LABEL]: result.host },
        },
        spec: { host: result.host },
      },
      { namespace },
    );
  } catch (error) {
    cache.forget(key, result.host, ctx.informers.replicas.get(key));
    // Changed or bound meanwhile (spec.host is immutable once set): the informer brings the new state.
    if (isConflict(error) || isNotFound(error) || isInvalid(error)) return undefined;
    throw error;
  }
  if (replica.status?.reason === 'Unschedulable') {
    void ctx.recorder.normal(replica, 'Scheduled', `Bound to host ${result.host}`);
  }
  return undefined;
}

async function markUnschedulable(
  ctx: OperatorContext,
  replica: Replica,
  message: string,
  reason: string,
): Promise<void> {
  const previous = replica.status;
  if (previous?.reason === 'Unschedulable' && previous.message === message) return;
  void ctx.recorder.warning(replica, 'FailedScheduling', message);
  try {
    await ctx.clients.replicas.patchStatus(
      replica.metadata.name as string,
      {
        phase: 'Pending',
        ready: false,
        reason: 'Unschedulable',
        message,
        conditions: setConditions(
          previous?.conditions,
          [{ type: 'Scheduled', status: 'False', reason, message }],
          replica.metadata.generation,
        ),
      },
      { namespace: replica.metadata.namespace },
    );
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
}
