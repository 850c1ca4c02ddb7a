/**
 * The endpoints of one Service port as the proxy balances over them (docs/DESIGN.md §6.1): the
 * ready ones, less the replicas this host's runtimes report down (the same-host fast path,
 * local-feed.ts), less those outlier detection ejected (all of them in panic), through the
 * Service's balancing policy. Pure: no sockets, no timers; the proxy reports connect outcomes and
 * calls sweep() on the Service's outlier interval.
 */
import { type Balancer, createBalancer, type Policy } from './balancer.ts';
import { fingerprint, type Upstream } from './endpoints.ts';
import { OutlierDetector, type OutlierOptions } from './outlier.ts';

export interface PoolOptions {
  policy: Policy;
  outlier: OutlierOptions;
  /** Injectable for tests; default Math.random and performance.now. */
  random?: () => number;
  now?: () => number;
}

export class Pool {
  #policy: Policy;
  #outlierKey: string;
  #balancer: Balancer<Upstream>;
  #outlier: OutlierDetector;
  #all: readonly Upstream[] = [];
  #ready: readonly Upstream[] = [];
  /** Replica names this host's runtimes report down: out whatever the slices say. */
  #localDown: ReadonlySet<string> = new Set();
  #fingerprint = '';
  #selected: readonly Upstream[] = [];
  #panic = false;
  readonly #random: (() => number) | undefined;
  readonly #now: (() => number) | undefined;

  constructor(opts: PoolOptions) {
    this.#random = opts.random;
    this.#now = opts.now;
    this.#policy = opts.policy;
    this.#outlierKey = JSON.stringify(opts.outlier);
    this.#balancer = this.#newBalancer(opts.policy);
    this.#outlier = new OutlierDetector(opts.outlier, this.#now);
  }

  /**
   * The Service's policy or outlier settings changed. A new policy starts a new balancer, new
   * outlier settings a new detector (ejections are forgotten, as Envoy forgets them when a
   * cluster's config changes); connections already open finish on the balancer they started on.
   */
  configure(policy: Policy, outlier: OutlierOptions): void {
    const key = JSON.stringify(outlier);
    if (policy === this.#policy && key === this.#outlierKey) return;
    if (policy !== this.#policy) {
      this.#policy = policy;
      this.#balancer = this.#newBalancer(policy);
    }
    if (key !== this.#outlierKey) {
      this.#outlierKey = key;
      this.#outlier = new OutlierDetector(outlier, this.#now);
      this.#outlier.update(this.#ready.map((u) => u.id));
    }
    this.#refresh(true);
  }

  /** The endpoints changed (a slice was written); false when nothing the pool uses did. */
  update(upstreams: readonly Upstream[]): boolean {
    const print = fingerprint(upstreams);
    // Address and port are in the id; the fingerprint covers readiness. Same print, same pool.
    if (print === this.#fingerprint) {
      this.#all = upstreams;
      return false;
    }
    this.#fingerprint = print;
    this.#all = upstreams;
    this.#ready = this.#readyOf(upstreams);
    this.#outlier.update(this.#ready.map((u) => u.id));
    this.#refresh(true);
    return true;
  }

  /**
   * The replicas (by name: `Upstream.replica`) this host's runtimes report down right now
   * (local-feed.ts): their endpoints are out at once, as if their slice said not ready, until a
   * later call leaves them out of the set. Applied on top of the slices' readiness, before outlier
   * selection; an endpoint that comes back starts with a clean outlier record, as one the slices
   * bring back does. True when the endpoints balanced over changed.
   */
  setLocalDown(replicas: ReadonlySet<string>): boolean {
    if (replicas === this.#localDown) return false;
    this.#localDown = replicas;
    const ready = this.#readyOf(this.#all);
    if (sameIds(ready, this.#ready)) return false;
    this.#ready = ready;
    this.#outlier.update(ready.map((u) => u.id));
    this.#refresh(true);
    return true;
  }

  /** Ids of the endpoints the slices say are ready that are out because their runtime says down. */
  localDown(): string[] {
    return this.#all.filter((u) => u.ready && this.#localDown.has(u.replica)).map((u) => u.id);
  }

  /** Whether pick() uses its key (ring-hash): a caller may skip working one out otherwise. */
  get hashes(): boolean {
    return this.#policy === 'ring-hash';
  }

  /** The balancer the next connection starts on: it reports its end to the same one. */
  get balancer(): Balancer<Upstream> {
    return this.#balancer;
  }

  pick(key: string, exclude?: ReadonlySet<string>): Upstream | undefined {
    return this.#balancer.pick(exclude ? { key, exclude } : { key });
  }

  /** Whether an endpoint balanced over now is not among `tried`. */
  hasUntried(tried: ReadonlySet<string>): boolean {
    return this.#selected.some((u) => !tried.has(u.id));
  }

  /** A connection to `u` was made: its run of consecutive failures ends. */
  succeeded(u: Upstream): void {
    this.#outlier.record(u.id, true);
  }

  /** A connect to `u` failed; true when that ejected it. */
  failed(u: Upstream): boolean {
    const ejected = this.#outlier.record(u.id, false);
    if (ejected) this.#refresh();
    return ejected;
  }

  /** The outlier interval: endpoints whose ejection is over come back; returns their ids. */
  sweep(): string[] {
    const back = this.#outlier.sweep();
    if (back.length > 0) this.#refresh();
    return back;
  }

  /** All endpoints, ready or not. */
  get upstreams(): readonly Upstream[] {
    return this.#all;
  }

  get ready(): readonly Upstream[] {
    return this.#ready;
  }

  /** Ids of the endpoints ejected right now. */
  ejected(): string[] {
    return this.#outlier.ejected();
  }

  /** Fewer than half of the ready endpoints are in: balancing goes over all of them. */
  get panic(): boolean {
    return this.#panic;
  }

  #readyOf(upstreams: readonly Upstream[]): Upstream[] {
    const down = this.#localDown;
    return upstreams.filter((u) => u.ready && (down.size === 0 || !down.has(u.replica)));
  }

  #newBalancer(policy: Policy): Balancer<Upstream> {
    const opts = {
      ...(this.#random ? { random: this.#random } : {}),
      ...(this.#now ? { now: this.#now } : {}),
    };
    return createBalancer<Upstream>(policy, opts);
  }

  /** What the balancer picks from: the ready endpoints through outlier selection. */
  #refresh(force = false): void {
    const { endpoints, panic } = this.#outlier.select(this.#ready);
    this.#panic = panic;
    if (!force && sameList(endpoints, this.#selected)) return;
    this.#selected = endpoints;
    this.#balancer.update(endpoints);
  }
}

function sameList(a: readonly Upstream[], b: readonly Upstream[]): boolean {
  return a.length === b.length && a.every((u, i) => u === b[i]);
}

function sameIds(a: readonly Upstream[], b: readonly Upstream[]): boolean {
  return a.length === b.length && a.every((u, i) => u.id === b[i]?.id);
}
