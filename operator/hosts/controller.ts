// Host lifecycle (Kubernetes' node-lifecycle controller, for Hosts): reconcile(hostName) reads
// the Host's heartbeat Lease `host-<name>` in orrery-system.
// - Lease expired (renewTime + leaseDurationSeconds passed): the Host's Ready condition becomes
//   Unknown (reason HostLeaseExpired), so the scheduler stops choosing it.
// - Silent for longer than the grace (default 1 s, never less than the lease duration, counted
//   from the last renewal): its Replicas are deleted, their runtime finalizer removed on the dead
//   host's behalf, and the Instance controller recreates each ordinal, which the scheduler binds
//   elsewhere. The runtime of a partitioned host stops its own replicas once it cannot renew for
//   a lease duration (self-fencing), so two copies do not run for long.
// - Terminating Replicas on a host that is gone or silent get their finalizer removed here, since
//   no runtime will (unbound ones: the scheduler).

import { setConditions } from '../../crds/conditions.ts';
import { hostLeaseName, hostOfLease, RUNTIME_FINALIZER, SYSTEM_NAMESPACE } from '../../crds/labels.ts';
import type { Host, Replica } from '../../crds/types.ts';
import {
  enqueueFromInformer,
  type Informer,
  isConflict,
  isNotFound,
  type Lease,
  type ReconcileResult,
  removeFinalizer,
} from '../../kube/index.ts';
import { forEachLimited } from '../../platform/concurrency.ts';
import { type Controller, type OperatorContext, replicasOnHost } from '../context.ts';

export interface HostLifecycleOptions {
  /** How long a Host may go without renewing its Lease before its replicas move. Default 1000 ms. */
  graceMs: number;
}

/**
 * When each host's Lease was last seen renewed, by this operator's clock (as the node-lifecycle
 * controller keeps a local probeTimestamp): immune to clock skew between machines, and a freshly
 * started operator gives every host a full grace before judging it.
 */
export class LeaseObserver {
  readonly #seen = new Map<string, { renewTime: string; at: number }>();
  readonly #onBack: (() => void)[] = [];
  #disrupted = false;
  #resumedAt = 0;

  /** Feeds the observer from the Lease informer (once, before it starts). */
  watch(leases: Informer<Lease>): void {
    leases.addHandlers({
      add: (l) => this.observe(l),
      update: (old, l) => {
        const host = hostOfLease(l);
        const silence = host ? this.silence(old, host) : undefined;
        this.observe(l);
        if (silence && silence.silentMs >= silence.durationMs) for (const fn of this.#onBack) fn();
      },
    });
  }

  /**
   * When the first renewal was seen after the last full disruption (a time when no host renewed);
   * ms since the epoch, 0 when there was none.
   */
  resumedAt(): number {
    return this.#resumedAt;
  }

  /** Records that no host renews: the next renewal seen ends the disruption. */
  noteFullDisruption(): void {
    this.#disrupted = true;
  }

  /** Calls `fn` when a host whose Lease had expired renews it again. */
  onHostBack(fn: () => void): void {
    this.#onBack.push(fn);
  }

  observe(lease: Lease, now = Date.now()): void {
    const host = hostOfLease(lease);
    const renewTime = lease.spec?.renewTime ?? lease.spec?.acquireTime;
    if (!host || !renewTime) return;
    if (this.#seen.get(host)?.renewTime === renewTime) return;
    this.#seen.set(host, { renewTime, at: now });
    if (this.#disrupted) {
      this.#disrupted = false;
      this.#resumedAt = now;
    }
  }

  /** False only when the host's Lease is known and expired (no Lease seen: no opinion). */
  isLive(ctx: OperatorContext, host: string, now = Date.now()): boolean {
    const silence = this.silence(
      ctx.informers.leases.get(`${SYSTEM_NAMESPACE}/${hostLeaseName(host)}`),
      host,
      now,
    );
    return silence === undefined || silence.silentMs < silence.durationMs;
  }

  /** Milliseconds since the host's Lease was seen renewed, and its duration; undefined when never seen. */
  silence(
    lease: Lease | undefined,
    host: string,
    now = Date.now(),
  ): { silentMs: number; durationMs: number } | undefined {
    if (!lease) return undefined;
    this.observe(lease, now);
    const seen = this.#seen.get(host);
    if (!seen) return undefined;
    return { silentMs: now - seen.at, durationMs: (lease.spec?.leaseDurationSeconds ?? 40) * 1000 };
  }
}

/** Hosts, their Leases, and the Replicas bound to them. */
export function hostController(
  ctx: OperatorContext,
  opts: HostLifecycleOptions & { leases: LeaseObserver },
): Controller {
  return {
    name: 'hosts',
    workers: 2,
    watch(queue) {
      enqueueFromInformer(ctx.informers.hosts, queue);
      enqueueFromInformer(ctx.informers.leases, queue, hostOfLease);
      // A Replica's events matter here only when its host is gone or silent (its finalizer is
      // removed on the host's behalf): for a live host the reconcile would do nothing, and while
      // 1,000 start that was ~2,500 reconciles. Its Lease's events bring a silent host back anyway.
      enqueueFromInformer(ctx.informers.replicas, queue, (r) => {
        const host = r.spec.host;
        if (!host) return undefined;
        if (ctx.informers.hosts.get(host) && opts.leases.isLive(ctx, host)) return undefined;
        return host;
      });
    },
    reconcile: (key) => reconcileHost(ctx, opts, opts.leases, key),
  };
}

export async function removeRuntimeFinalizer(ctx: OperatorContext, replica: Replica): Promise<void> {
  await removeFinalizer(ctx.clients.replicas, replica, RUNTIME_FINALIZER);
}

export async function reconcileHost(
  ctx: OperatorContext,
  opts: HostLifecycleOptions,
  leases: LeaseObserver,
  hostName: string,
): Promise<ReconcileResult> {
  const host = ctx.informers.hosts.get(hostName);
  // Every event of a replica bound here brings the host back to this queue: the scan of its
  // replicas is left to the two paths that move them, so that a live host costs nothing.
  if (!host) {
    // A deleted Host: its replicas can never be stopped by it; move them.
    await evict(ctx, undefined, hostName, replicasOnHost(ctx, hostName), 'HostDeleted');
    return undefined;
  }
  const now = Date.now();
  const silenceOf = (name: string) =>
    leases.silence(ctx.informers.leases.get(`${SYSTEM_NAMESPACE}/${hostLeaseName(name)}`), name, now);
  const silence = silenceOf(hostName);
  if (!silence) return { requeueAfterMs: opts.graceMs }; // not registered yet (or lease not seen yet)

  const expired = silence.silentMs >= silence.durationMs;
  const graceMs = Math.max(opts.graceMs, silence.durationMs);
  if (!expired) return { requeueAfterMs: silence.durationMs - silence.silentMs + 5 };

  await markNotReady(ctx, host, silence.silentMs);
  // Counted from the end of the last full disruption, if that is later: when no host could renew
  // (the API server was down), each one gets the whole grace once renewals resume, as after the
  // operator's own start; one whose renewals resume a little after the others' is not lost.
  const counted = Math.min(silence.silentMs, now - leases.resumedAt());
  if (counted < graceMs) return { requeueAfterMs: graceMs - counted + 5 };
  // The Lease may have been renewed while markNotReady wrote (a restarted agent is back, and
  // re-adopts its replicas): then the host is not lost, nor the live host that allows evicting.
  const latest = silenceOf(hostName);
  if (latest && latest.silentMs < latest.durationMs) {
    return { requeueAfterMs: latest.durationMs - latest.silentMs + 5 };
  }
  // Full disruption (Kubernetes stops evictions when a whole zone is NotReady): when no host
  // renews, the fault is more likely the API server's or ours than every host's, and there is
  // nowhere to move the replicas anyway.
  const anyAlive = ctx.informers.hosts.list().some((h) => {
    if (h.metadata.name === hostName) return false;
    const other = silenceOf(h.metadata.name as string);
    return other !== undefined && other.silentMs < other.durationMs;
  });
  if (!anyAlive) {
    leases.noteFullDisruption();
    ctx.log.warn({ host: hostName }, 'no host renews its Lease: not evicting (full disruption)');
    return { requeueAfterMs: graceMs };
  }
  await evict(ctx, host, hostName, replicasOnHost(ctx, hostName), 'HostLost');
  return undefined;
}

async function markNotReady(ctx: OperatorContext, host: Host, silentMs: number): Promise<void> {
  const ready = host.status?.conditions?.find((c) => c.type === 'Ready');
  if (ready?.status === 'Unknown') return;
  const message = `Lease not renewed for ${(silentMs / 1000).toFixed(1)} s`;
  try {
    await ctx.clients.hosts.patchStatus(host.metadata.name as string, {
      conditions: setConditions(
        host.status?.conditions,
        [{ type: 'Ready', status: 'Unknown', reason: 'HostLeaseExpired', message }],
        undefined,
      ),
    });
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  void ctx.recorder.warning(host, 'HostNotReady', message);
}

async function evict(
  ctx: OperatorContext,
  host: Host | undefined,
  hostName: string,
  replicas: Replica[],
  reason: string,
): Promise<void> {
  if (replicas.length === 0) return;
  await forEachLimited(replicas, 16, async (replica) => {
    await removeRuntimeFinalizer(ctx, replica);
    if (replica.metadata.deletionTimestamp) return;
    try {
      await ctx.clients.replicas.delete(replica.metadata.name as string, {
        namespace: replica.metadata.namespace,
        preconditions: { uid: replica.metadata.uid as string },
      });
    } catch (error) {
      if (!isNotFound(error) && !isConflict(error)) throw error;
    }
  });
  const message = `Host ${hostName} lost: moved ${replicas.length} replicas (${replicas
    .slice(0, 5)
    .map((r) => `${r.metadata.namespace}/${r.metadata.name}`)
    .join(', ')}${replicas.length > 5 ? ', ...' : ''})`;
  ctx.log.warn({ host: hostName, replicas: replicas.length, reason }, 'evicting replicas of a lost host');
  if (host) void ctx.recorder.warning(host, reason, message);
}
