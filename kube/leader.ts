import { linkedAbort, sleep } from './backoff.ts';
import { isAlreadyExists, isConflict, isNotFound } from './errors.ts';
import { type Lease, type LeaseSpec, microTime } from './lease.ts';
import { type Logger, silentLogger } from './log.ts';
import type { ResourceClient } from './resources.ts';

/**
 * Leader election on a coordination.k8s.io/v1 Lease, following client-go's
 * tools/leaderelection: a candidate acquires the lease when it is free or has not changed for
 * a whole lease duration *as observed locally* (so clock skew between machines does not
 * matter), renews it every retry period with optimistic concurrency on resourceVersion, and
 * steps down if it could not renew within the renew deadline. On a clean stop it releases
 * the lease (clears the holder) so a standby takes over at its next retry instead of waiting
 * for expiry.
 */

export interface LeaderElectorOptions {
  client: ResourceClient<Lease>;
  namespace: string;
  name: string;
  /** Unique per candidate process, e.g. `<hostname>_<random>`. */
  identity: string;
  /** How long a non-renewed lease keeps others away. Whole seconds (the Lease field is seconds). Default 15. */
  leaseDurationSeconds?: number;
  /** The leader gives up if it could not renew for this long; must be < lease duration. Default 10 s. */
  renewDeadlineMs?: number;
  /** Interval between acquire/renew attempts. Default 2 s. */
  retryPeriodMs?: number;
  /** Called when this candidate becomes leader; the signal aborts when leadership ends. */
  onStartedLeading: (signal: AbortSignal) => void | Promise<void>;
  /** Called once when leadership ends: `lost` (renewals failed) or `shutdown` (stop() released it). */
  onStoppedLeading?: (reason: 'lost' | 'shutdown') => void;
  /** Called when the observed leader identity changes (including to us). */
  onNewLeader?: (identity: string) => void;
  /** Clear the holder on clean stop (default true). */
  releaseOnStop?: boolean;
  log?: Logger;
}

/** client-go's wait.JitterUntil factor for retries. */
const JITTER = 1.2;

export class LeaderElector {
  readonly #o: Required<Omit<LeaderElectorOptions, 'onStoppedLeading' | 'onNewLeader' | 'log'>> &
    Pick<LeaderElectorOptions, 'onStoppedLeading' | 'onNewLeader'>;
  readonly #log: Logger;
  readonly #stop = new AbortController();
  #observed: LeaseSpec | undefined;
  #observedAt = 0;
  #leading: AbortController | undefined;
  #lastLeader: string | undefined;
  #run: Promise<void> | undefined;
  /** The renewal #renewLoop last started; it may outlive the loop (see #campaign). */
  #renewing: Promise<boolean> = Promise.resolve(false);

  constructor(opts: LeaderElectorOptions) {
    const o = {
      leaseDurationSeconds: 15,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      releaseOnStop: true,
      ...opts,
    };
    if (!Number.isInteger(o.leaseDurationSeconds) || o.leaseDurationSeconds < 1) {
      throw new TypeError(`leaseDurationSeconds must be a positive integer, got ${o.leaseDurationSeconds}`);
    }
    if (!(o.renewDeadlineMs < o.leaseDurationSeconds * 1000)) {
      throw new TypeError(
        `renewDeadlineMs (${o.renewDeadlineMs}) must be less than the lease duration (${o.leaseDurationSeconds * 1000} ms)`,
      );
    }
    if (!(o.retryPeriodMs > 0 && o.retryPeriodMs * JITTER < o.renewDeadlineMs)) {
      throw new TypeError(
        `retryPeriodMs (${o.retryPeriodMs}) must be > 0 and ${JITTER}× it below renewDeadlineMs`,
      );
    }
    if (!o.identity) throw new TypeError('leader election needs a non-empty identity');
    this.#o = o;
    this.#log = (opts.log ?? silentLogger).child({ lease: `${o.namespace}/${o.name}`, identity: o.identity });
  }

  isLeader(): boolean {
    return this.#leading !== undefined && !this.#leading.signal.aborted;
  }

  /** The holder we last observed (possibly us). */
  leader(): string | undefined {
    return this.#lastLeader;
  }

  /**
   * Campaign until stopped: acquire, lead until the lease is lost, then campaign again.
   * Resolves after stop().
   */
  start(): this {
    this.#run ??= this.#campaign().catch((err) => this.#log.error({ err }, 'leader election loop failed'));
    return this;
  }

  /** Stop campaigning; if leading, end leadership (onStoppedLeading) and release the lease. */
  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#run;
  }

  async #campaign(): Promise<void> {
    const stop = this.#stop.signal;
    while (!stop.aborted) {
      if (!(await this.#tryAcquireOrRenew())) {
        await sleep(this.#o.retryPeriodMs * (1 + Math.random() * (JITTER - 1)), stop);
        continue;
      }
      this.#log.info('became leader');
      const leading = new AbortController();
      this.#leading = leading;
      Promise.resolve()
        .then(() => this.#o.onStartedLeading(leading.signal))
        .catch((err) => this.#log.error({ err }, 'onStartedLeading threw'));
      await this.#renewLoop();
      leading.abort();
      if (stop.aborted && this.#o.releaseOnStop) {
        // The loop stops waiting for a renewal at once on stop, but the renewal goes on: settled
        // first, or it could land between the release's read and write (409: the release fails
        // and the standby waits for the lease to expire) or take the lease back after it.
        await this.#renewing;
        await this.#release();
      }
      const reason = stop.aborted ? 'shutdown' : 'lost';
      this.#log.info(reason === 'shutdown' ? 'stopped leading (shutdown)' : 'lost leadership');
      this.#o.onStoppedLeading?.(reason);
    }
  }

  /** Renew every retry period; return when renewals failed for renewDeadline or on stop. */
  async #renewLoop(): Promise<void> {
    const stop = this.#stop.signal;
    let lastRenew = performance.now();
    while (!stop.aborted) {
      await sleep(this.#o.retryPeriodMs, stop);
      if (stop.aborted) return;
      const remaining = this.#o.renewDeadlineMs - (performance.now() - lastRenew);
      // Bound the attempt by the deadline; cancel the timer either way so it cannot keep the
      // process alive after stop().
      const deadline = linkedAbort(stop);
      const attempt = this.#tryAcquireOrRenew();
      this.#renewing = attempt.catch(() => false);
      const ok = await Promise.race([
        attempt,
        sleep(Math.max(0, remaining), deadline.controller.signal).then(() => false),
      ]).finally(() => {
        deadline.controller.abort();
        deadline.dispose();
      });
      if (ok) lastRenew = performance.now();
      else if (performance.now() - lastRenew >= this.#o.renewDeadlineMs) return;
    }
  }

  #observe(lease: Lease, now: number): void {
    const spec = lease.spec ?? {};
    const o = this.#observed;
    if (
      !o ||
      o.holderIdentity !== spec.holderIdentity ||
      o.renewTime !== spec.renewTime ||
      o.leaseTransitions !== spec.leaseTransitions ||
      o.acquireTime !== spec.acquireTime
    ) {
      this.#observed = spec;
      this.#observedAt = now;
    }
    const holder = spec.holderIdentity ?? '';
    if (holder && holder !== this.#lastLeader) {
      this.#lastLeader = holder;
      this.#o.onNewLeader?.(holder);
    }
  }

  async #tryAcquireOrRenew(): Promise<boolean> {
    const { client, namespace, name, identity } = this.#o;
    const now = performance.now();
    const nowTime = microTime();
    const fresh: LeaseSpec = {
      holderIdentity: identity,
      leaseDurationSeconds: this.#o.leaseDurationSeconds,
      acquireTime: nowTime,
      renewTime: nowTime,
      leaseTransitions: 0,
    };
    let lease: Lease;
    try {
      lease = await client.get(name, { namespace });
    } catch (err) {
      if (!isNotFound(err)) {
        this.#log.warn({ err: (err as Error).message }, 'reading the lease failed');
        return false;
      }
      try {
        const created = await client.create({ metadata: { name, namespace }, spec: fresh });
        this.#observe(created, now);
        return true;
      } catch (err2) {
        if (!isAlreadyExists(err2))
          this.#log.warn({ err: (err2 as Error).message }, 'creating the lease failed');
        return false;
      }
    }
    this.#observe(lease, now);
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const durMs = (spec.leaseDurationSeconds ?? this.#o.leaseDurationSeconds) * 1000;
    if (holder && holder !== identity && this.#observedAt + durMs > now) return false;
    const mine = holder === identity;
    const next: LeaseSpec = {
      ...fresh,
      acquireTime: mine ? (spec.acquireTime ?? nowTime) : nowTime,
      leaseTransitions: mine ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
    };
    try {
      const updated = await client.replace({ ...lease, spec: next });
      this.#observe(updated, now);
      return true;
    } catch (err) {
      // 409: someone else renewed or took it between our read and write.
      if (!isConflict(err)) this.#log.warn({ err: (err as Error).message }, 'updating the lease failed');
      return false;
    }
  }

  async #release(): Promise<void> {
    const { client, namespace, name, identity } = this.#o;
    try {
      const lease = await client.get(name, { namespace });
      if (lease.spec?.holderIdentity !== identity) return;
      const nowTime = microTime();
      await client.replace({
        ...lease,
        spec: {
          leaseTransitions: lease.spec?.leaseTransitions ?? 0,
          leaseDurationSeconds: 1,
          renewTime: nowTime,
          acquireTime: nowTime,
        },
      });
      this.#log.info('released the lease');
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'releasing the lease failed; it will expire');
    }
  }
}
