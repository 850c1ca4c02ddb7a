import type { KubeApi } from './api.ts';
import { Backoff } from './backoff.ts';
import { isAlreadyExists, isConflict, isNotFound } from './errors.ts';
import { type Logger, silentLogger } from './log.ts';
import { LEASES, ResourceClient, typed } from './resources.ts';
import type { KubeObject } from './types.ts';

/**
 * coordination.k8s.io/v1 Lease helpers, shared by leader election (operator) and the host
 * heartbeat (`host-<name>` in `orrery-system`, renewed by each runtime the way the kubelet
 * renews its node Lease in kube-node-lease).
 */

export interface LeaseSpec {
  holderIdentity?: string | null;
  leaseDurationSeconds?: number | null;
  acquireTime?: string | null;
  renewTime?: string | null;
  leaseTransitions?: number | null;
}

export interface Lease extends KubeObject {
  spec?: LeaseSpec;
}

export function leaseClient(api: KubeApi, fieldManager: string): ResourceClient<Lease> {
  return new ResourceClient(api, typed<Lease>(LEASES), { fieldManager });
}

/** metav1.MicroTime wire format: RFC 3339 with exactly six fractional digits. */
export function microTime(d: Date = new Date()): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/** When the lease stops being valid, by its own renewTime + duration (ms since epoch); undefined if never renewed. */
export function leaseExpiresAt(lease: Lease): number | undefined {
  const renew = lease.spec?.renewTime;
  const dur = lease.spec?.leaseDurationSeconds;
  if (!renew || dur === undefined || dur === null) return undefined;
  const t = Date.parse(renew);
  return Number.isNaN(t) ? undefined : t + dur * 1000;
}

/**
 * Whether a lease is expired judged by the wall clock. Readers on other machines should prefer
 * "not renewed since I last saw it change, for a duration" (what LeaderElector does) to be
 * immune to clock skew; on one host or with synced clocks this is fine.
 */
export function leaseExpired(lease: Lease, now: number = Date.now()): boolean {
  if (!lease.spec?.holderIdentity) return true;
  const exp = leaseExpiresAt(lease);
  return exp === undefined || exp <= now;
}

export interface RenewLeaseOptions {
  namespace: string;
  name: string;
  holderIdentity: string;
  leaseDurationSeconds: number;
  /** Labels to set when the Lease is created (e.g. orrery.dev/host). */
  labels?: Record<string, string>;
  /**
   * Annotations this writer sets on the Lease at every write (e.g. what a proxy serves); others
   * on the Lease are left as they are.
   */
  annotations?: Record<string, string>;
  ownerReferences?: NonNullable<Lease['metadata']>['ownerReferences'];
}

/**
 * Create the lease if missing, else move renewTime to now, keeping holderIdentity. One
 * optimistic-concurrency write (PUT with the resourceVersion read); the caller retries on
 * conflict. For a lease that only one writer renews (a host heartbeat) this never conflicts.
 */
export async function renewLease(
  client: ResourceClient<Lease>,
  opts: RenewLeaseOptions,
  /**
   * The Lease as this writer last wrote it. When given, the renewal is a single PUT carrying its
   * resourceVersion (the kubelet's node-lease optimisation); on a conflict or 404 it falls back
   * to read-then-write.
   */
  last?: Lease,
): Promise<Lease> {
  const now = microTime();
  if (last?.metadata?.resourceVersion && last.spec?.holderIdentity === opts.holderIdentity) {
    try {
      return await client.replace({
        ...withAnnotations(last, opts.annotations),
        spec: { ...last.spec, leaseDurationSeconds: opts.leaseDurationSeconds, renewTime: now },
      });
    } catch (err) {
      if (!isConflict(err) && !isNotFound(err)) throw err;
    }
  }
  let current: Lease | undefined;
  try {
    current = await client.get(opts.name, { namespace: opts.namespace });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (!current) {
    return client.create({
      metadata: {
        name: opts.name,
        namespace: opts.namespace,
        ...(opts.labels ? { labels: opts.labels } : {}),
        ...(opts.annotations ? { annotations: opts.annotations } : {}),
        ...(opts.ownerReferences ? { ownerReferences: opts.ownerReferences } : {}),
      },
      spec: {
        holderIdentity: opts.holderIdentity,
        leaseDurationSeconds: opts.leaseDurationSeconds,
        acquireTime: now,
        renewTime: now,
        leaseTransitions: 0,
      },
    });
  }
  const changedHolder = current.spec?.holderIdentity !== opts.holderIdentity;
  return client.replace({
    ...withAnnotations(current, opts.annotations),
    spec: {
      ...current.spec,
      holderIdentity: opts.holderIdentity,
      leaseDurationSeconds: opts.leaseDurationSeconds,
      renewTime: now,
      ...(changedHolder
        ? { acquireTime: now, leaseTransitions: (current.spec?.leaseTransitions ?? 0) + 1 }
        : {}),
    },
  });
}

/** The Lease with `annotations` set over its own (itself when there are none to set). */
function withAnnotations(lease: Lease, annotations: Record<string, string> | undefined): Lease {
  if (!annotations) return lease;
  return {
    ...lease,
    metadata: { ...lease.metadata, annotations: { ...lease.metadata?.annotations, ...annotations } },
  };
}

export interface LeaseHeartbeatOptions extends Omit<RenewLeaseOptions, 'annotations'> {
  client: ResourceClient<Lease>;
  /**
   * Annotations set at every renewal; a function is called for each one, so the Lease can carry
   * a small piece of current state (what a mesh proxy has ejected). See renewSoon().
   */
  annotations?: Record<string, string> | (() => Record<string, string>);
  /**
   * renewSoon() renews no sooner than this after the start of the previous renewal (default
   * 1000 ms): however often it is called, it adds at most one write per this interval.
   */
  minRenewGapMs?: number;
  /**
   * How often to renew, from the start of one renewal to the start of the next (back to back when
   * one takes longer); default a quarter of the duration (the kubelet renews at 1/4 of 40 s).
   */
  renewIntervalMs?: number;
  /**
   * Called once when renewals have failed for a whole lease duration: others now consider us
   * gone, so whatever the lease protects must stop (self-fencing). Heartbeats continue and
   * `onRecovered` fires when a renewal succeeds again.
   */
  onLost?: () => void;
  onRecovered?: () => void;
  /**
   * When to call onLost: this long after the *start* of the last renewal that succeeded. Default
   * the lease duration. The renewal was written at some instant after it started, and others
   * count the lease's duration from when they saw it, so with a value below the duration the
   * holder acts (self-fences) before anyone else can consider the lease expired, by at least the
   * difference (docs/DESIGN.md §4.4).
   */
  lostAfterMs?: number;
  log?: Logger;
}

/** Periodic renewal of one Lease, with loss detection. */
export class LeaseHeartbeat {
  readonly #opts: LeaseHeartbeatOptions;
  readonly #log: Logger;
  readonly #stop = new AbortController();
  #loop: Promise<void> | undefined;
  #lastRenew = 0;
  #lost = false;
  #renewals = 0;
  #last: Lease | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  /** performance.now() at the start of the last renewal attempt. */
  #lastStart = Number.NEGATIVE_INFINITY;
  /** renewSoon() was called after the start of the last renewal attempt. */
  #soon = false;
  /** Set while the loop waits: makes it renew sooner (renewSoon). */
  #wake: (() => void) | undefined;

  constructor(opts: LeaseHeartbeatOptions) {
    if (!(opts.leaseDurationSeconds > 0)) {
      throw new TypeError(`leaseDurationSeconds must be > 0, got ${opts.leaseDurationSeconds}`);
    }
    if (opts.lostAfterMs !== undefined && !(opts.lostAfterMs > 0)) {
      throw new TypeError(`lostAfterMs must be > 0, got ${opts.lostAfterMs}`);
    }
    if (opts.minRenewGapMs !== undefined && !(opts.minRenewGapMs >= 0)) {
      throw new TypeError(`minRenewGapMs must be >= 0, got ${opts.minRenewGapMs}`);
    }
    this.#opts = opts;
    this.#log = (opts.log ?? silentLogger).child({ lease: `${opts.namespace}/${opts.name}` });
  }

  /** Renew once now (awaited, errors thrown) and then keep renewing in the background. */
  async start(): Promise<void> {
    await this.#renewOnce();
    this.#loop = this.#run();
  }

  /** Milliseconds since epoch of the last successful renewal. */
  lastRenewTime(): number {
    return this.#lastRenew;
  }

  renewals(): number {
    return this.#renewals;
  }

  isLost(): boolean {
    return this.#lost;
  }

  /**
   * What the annotations say has changed: renew before the next interval, but no sooner than
   * minRenewGapMs after the start of the previous renewal. Calls while one is due are one.
   */
  renewSoon(): void {
    this.#soon = true;
    this.#wake?.();
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    if (this.#watchdog) clearTimeout(this.#watchdog);
    await this.#loop;
  }

  async #renewOnce(): Promise<void> {
    const started = performance.now();
    this.#lastStart = started;
    // The annotations are read now: a change after this point asks for another renewal.
    this.#soon = false;
    const { annotations } = this.#opts;
    this.#last = await renewLease(
      this.#opts.client,
      {
        ...this.#opts,
        annotations: typeof annotations === 'function' ? annotations() : annotations,
      },
      this.#last,
    );
    this.#lastRenew = Date.now();
    this.#renewals++;
    if (this.#stop.signal.aborted) return;
    // The write happened somewhere between the start of the request and now: counted from the
    // start, as others may have seen it then. A renewal slower than lostAfterMs proves nothing
    // (its deadline has passed already, and the previous one with it): the Lease stays lost, or
    // becomes so, until a renewal answers in time.
    const lostAfterMs = this.#opts.lostAfterMs ?? this.#opts.leaseDurationSeconds * 1000;
    const left = lostAfterMs - (performance.now() - started);
    if (left <= 0) {
      this.#declareLost();
      return;
    }
    // A timer, not a check after each attempt: a renewal can hang (partition) longer than the lease.
    if (this.#watchdog) clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => this.#declareLost(), left);
    if (this.#lost) {
      this.#lost = false;
      this.#log.info('lease renewed again');
      this.#opts.onRecovered?.();
    }
  }

  async #run(): Promise<void> {
    const durationMs = this.#opts.leaseDurationSeconds * 1000;
    const interval = this.#opts.renewIntervalMs ?? durationMs / 4;
    const retry = new Backoff(Math.min(100, interval), interval);
    let delay = interval;
    while (!this.#stop.signal.aborted) {
      await this.#pause(delay);
      if (this.#stop.signal.aborted) break;
      try {
        await this.#renewOnce();
        retry.reset();
        // The next one an interval after this one *started*: counted from its answer, two slow
        // renewals in a row (an API server busy with a burst answered in 220-530 ms) plus the
        // interval passed the fence point though each answered well inside it.
        delay = Math.max(0, interval - (performance.now() - this.#lastStart));
      } catch (err) {
        // Conflict: someone else wrote the lease between our get and put; just retry soon.
        const level = isConflict(err) || isAlreadyExists(err) ? 'debug' : 'warn';
        this.#log[level]({ err: (err as Error).message }, 'lease renewal failed');
        delay = retry.next();
      }
    }
  }

  /** Waits `ms`, or less when renewSoon() is called: until minRenewGapMs after the last start. */
  #pause(ms: number): Promise<void> {
    const signal = this.#stop.signal;
    if (signal.aborted) return Promise.resolve();
    const gap = this.#opts.minRenewGapMs ?? 1000;
    return new Promise((resolve) => {
      const due = performance.now() + ms;
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        signal.removeEventListener('abort', done);
        resolve();
      };
      const at = (when: number) => {
        clearTimeout(timer);
        timer = setTimeout(done, Math.max(0, when - performance.now()));
      };
      at(due);
      this.#wake = () => at(Math.min(due, Math.max(performance.now(), this.#lastStart + gap)));
      signal.addEventListener('abort', done);
      if (this.#soon) this.#wake();
    });
  }

  #declareLost(): void {
    if (this.#lost || this.#stop.signal.aborted) return;
    this.#lost = true;
    this.#log.error(
      { sinceLastRenewMs: Date.now() - this.#lastRenew },
      'lease not renewed in time: others may soon count it expired',
    );
    this.#opts.onLost?.();
  }
}
