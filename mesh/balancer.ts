/**
 * Endpoint picking for the mesh proxy (docs/DESIGN.md §6.1), one class per
 * `Service.spec.loadBalancer.policy`. Pure: no sockets, no timers; the proxy reports starts and
 * ends of requests (or connections) and each policy keeps what it needs. `exclude` lets a retry
 * avoid the endpoints that already failed it.
 *
 * - round-robin: smooth weighted round-robin (nginx's), exact order for equal weights;
 * - least-request: power of two choices on active requests;
 * - p2c-ewma: Linkerd's peak EWMA, cost = RTT × (pending + 1), default RTT 30 ms, decay 10 s;
 * - random: uniform;
 * - ring-hash: consistent hashing (Envoy's ketama-style ring), adding one of N endpoints moves
 *   about 1/(N+1) of the keys.
 */
import { HashRing } from '../platform/ring-hash.ts';

export type Policy = 'round-robin' | 'least-request' | 'p2c-ewma' | 'random' | 'ring-hash';

export interface Endpoint {
  /** Stable identity (namespace/replica/port): state survives an update of the endpoint list. */
  readonly id: string;
  /** Relative weight, default 1. */
  readonly weight?: number;
}

export interface Balancer<E extends Endpoint> {
  /** Replaces the endpoint set; per-endpoint state of the endpoints that stay is kept. */
  update(endpoints: readonly E[]): void;
  /** An endpoint not in `exclude`, or undefined when there is none. `key` feeds ring-hash. */
  pick(opts?: { key?: string; exclude?: ReadonlySet<string> }): E | undefined;
  /** A request (or connection) to `e` started. */
  started(e: E): void;
  /** It ended after `rttMs` (its latency; for p2c-ewma). */
  ended(e: E, rttMs: number): void;
}

export interface BalancerOptions {
  /** Random numbers in [0, 1): injectable for tests. */
  random?: () => number;
  /** Milliseconds, monotonic: injectable for tests (p2c-ewma's decay). */
  now?: () => number;
}

export function createBalancer<E extends Endpoint>(policy: Policy, opts: BalancerOptions = {}): Balancer<E> {
  switch (policy) {
    case 'round-robin':
      return new RoundRobin<E>();
    case 'least-request':
      return new LeastRequest<E>(opts.random ?? Math.random);
    case 'p2c-ewma':
      return new PeakEwma<E>(opts.random ?? Math.random, opts.now ?? (() => performance.now()));
    case 'random':
      return new RandomPick<E>(opts.random ?? Math.random);
    case 'ring-hash':
      return new RingHash<E>();
  }
}

const allowed = <E extends Endpoint>(list: readonly E[], exclude?: ReadonlySet<string>) =>
  exclude && exclude.size > 0 ? list.filter((e) => !exclude.has(e.id)) : list;

/** Active requests per endpoint id, kept across updates for the endpoints that stay. */
class ActiveCounts {
  readonly #active = new Map<string, number>();
  of(id: string): number {
    return this.#active.get(id) ?? 0;
  }
  add(id: string, d: number): void {
    const n = this.of(id) + d;
    if (n > 0) this.#active.set(id, n);
    else this.#active.delete(id);
  }
}

class RoundRobin<E extends Endpoint> implements Balancer<E> {
  #endpoints: readonly E[] = [];
  readonly #current = new Map<string, number>();

  update(endpoints: readonly E[]): void {
    this.#endpoints = endpoints;
    const ids = new Set(endpoints.map((e) => e.id));
    for (const id of this.#current.keys()) if (!ids.has(id)) this.#current.delete(id);
  }

  pick(opts: { exclude?: ReadonlySet<string> } = {}): E | undefined {
    const list = allowed(this.#endpoints, opts.exclude);
    let best: E | undefined;
    let bestWeight = Number.NEGATIVE_INFINITY;
    let total = 0;
    for (const e of list) {
      const w = e.weight ?? 1;
      total += w;
      const current = (this.#current.get(e.id) ?? 0) + w;
      this.#current.set(e.id, current);
      if (current > bestWeight) {
        best = e;
        bestWeight = current;
      }
    }
    if (best) this.#current.set(best.id, bestWeight - total);
    return best;
  }

  started(): void {}
  ended(): void {}
}

class RandomPick<E extends Endpoint> implements Balancer<E> {
  #endpoints: readonly E[] = [];
  readonly #random: () => number;
  constructor(random: () => number) {
    this.#random = random;
  }
  update(endpoints: readonly E[]): void {
    this.#endpoints = endpoints;
  }
  pick(opts: { exclude?: ReadonlySet<string> } = {}): E | undefined {
    const list = allowed(this.#endpoints, opts.exclude);
    return list[Math.floor(this.#random() * list.length)];
  }
  started(): void {}
  ended(): void {}
}

/** Two distinct endpoints at random; the one `cost` prefers (lower), the first on a tie. */
function twoChoices<E extends Endpoint>(list: readonly E[], random: () => number, cost: (e: E) => number) {
  if (list.length <= 1) return list[0];
  const i = Math.floor(random() * list.length);
  let j = Math.floor(random() * (list.length - 1));
  if (j >= i) j++;
  const a = list[i] as E;
  const b = list[j] as E;
  return cost(b) < cost(a) ? b : a;
}

/** Power of two choices over a cost; the policies differ only in their cost. */
abstract class TwoChoices<E extends Endpoint> implements Balancer<E> {
  #endpoints: readonly E[] = [];
  protected readonly active = new ActiveCounts();
  readonly #random: () => number;
  constructor(random: () => number) {
    this.#random = random;
  }
  protected abstract cost(e: E): number;
  update(endpoints: readonly E[]): void {
    this.#endpoints = endpoints;
  }
  pick(opts: { exclude?: ReadonlySet<string> } = {}): E | undefined {
    return twoChoices(allowed(this.#endpoints, opts.exclude), this.#random, (e) => this.cost(e));
  }
  started(e: E): void {
    this.active.add(e.id, 1);
  }
  ended(e: E, _rttMs: number): void {
    this.active.add(e.id, -1);
  }
}

class LeastRequest<E extends Endpoint> extends TwoChoices<E> {
  protected cost(e: E): number {
    return this.active.of(e.id);
  }
}

/** Linkerd's defaults: an endpoint with no latency observed yet is assumed at 30 ms. */
export const EWMA_DEFAULT_RTT_MS = 30;
/** Time constant of the decay: an old peak fades to 1/e in 10 s. */
export const EWMA_DECAY_MS = 10_000;

class PeakEwma<E extends Endpoint> extends TwoChoices<E> {
  readonly #rtt = new Map<string, { ewma: number; at: number }>();
  readonly #now: () => number;
  constructor(random: () => number, now: () => number) {
    super(random);
    this.#now = now;
  }
  override update(endpoints: readonly E[]): void {
    super.update(endpoints);
    const ids = new Set(endpoints.map((e) => e.id));
    for (const id of this.#rtt.keys()) if (!ids.has(id)) this.#rtt.delete(id);
  }
  /** RTT × (pending + 1), the RTT decayed toward nothing since it was last observed. */
  protected cost(e: E): number {
    const s = this.#rtt.get(e.id);
    const rtt = s ? s.ewma * Math.exp(-(this.#now() - s.at) / EWMA_DECAY_MS) : EWMA_DEFAULT_RTT_MS;
    return rtt * (this.active.of(e.id) + 1);
  }
  override ended(e: E, rttMs: number): void {
    super.ended(e, rttMs);
    const now = this.#now();
    const s = this.#rtt.get(e.id);
    if (!s) {
      this.#rtt.set(e.id, { ewma: rttMs, at: now });
      return;
    }
    // Peak-sensitive: a slower answer is taken at once, a faster one blends in with the decay.
    const w = Math.exp(-(now - s.at) / EWMA_DECAY_MS);
    const decayed = s.ewma * w;
    s.ewma = rttMs > decayed ? rttMs : decayed * w + rttMs * (1 - w);
    s.at = now;
  }
}

class RingHash<E extends Endpoint> implements Balancer<E> {
  readonly #ring = new HashRing<E>();

  update(endpoints: readonly E[]): void {
    this.#ring.update(endpoints);
  }

  pick(opts: { key?: string; exclude?: ReadonlySet<string> } = {}): E | undefined {
    return this.#ring.pick(opts.key ?? '', opts.exclude);
  }

  started(): void {}
  ended(): void {}
}
