import { defaultControllerRateLimiter, type RateLimiter } from './ratelimit.ts';

/**
 * A controller work queue with client-go's guarantees
 * (k8s.io/client-go/util/workqueue/queue.go, delaying_queue.go, rate_limiting_queue.go):
 *  - a key is queued at most once, however often it is added ("dirty" set);
 *  - a key is processed by at most one worker at a time: added while processing, it is
 *    marked dirty and queued again only when `done(key)` is called ("processing" set);
 *  - `addAfter` holds keys until their time (an earlier deadline wins for a key already waiting);
 *  - `addRateLimited` delays by the rate limiter (per-key exponential backoff + token bucket);
 *  - `shutdown` wakes all waiting `get()` calls; queued keys are still handed out (drain),
 *    then `get()` returns undefined.
 */

interface Waiting<K> {
  at: number;
  seq: number;
  key: K;
}

/** Binary min-heap on (at, seq): seq keeps insertion order among equal deadlines. */
class DeadlineHeap<K> {
  readonly #items: Waiting<K>[] = [];

  get size(): number {
    return this.#items.length;
  }

  peek(): Waiting<K> | undefined {
    return this.#items[0];
  }

  push(w: Waiting<K>): void {
    const a = this.#items;
    a.push(w);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(a[i] as Waiting<K>, a[p] as Waiting<K>)) break;
      [a[i], a[p]] = [a[p] as Waiting<K>, a[i] as Waiting<K>];
      i = p;
    }
  }

  pop(): Waiting<K> | undefined {
    const a = this.#items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.#less(a[l] as Waiting<K>, a[m] as Waiting<K>)) m = l;
        if (r < a.length && this.#less(a[r] as Waiting<K>, a[m] as Waiting<K>)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m] as Waiting<K>, a[i] as Waiting<K>];
        i = m;
      }
    }
    return top;
  }

  clear(): void {
    this.#items.length = 0;
  }

  #less(x: Waiting<K>, y: Waiting<K>): boolean {
    return x.at < y.at || (x.at === y.at && x.seq < y.seq);
  }
}

export interface WorkQueueOptions<K> {
  name?: string;
  rateLimiter?: RateLimiter<K>;
  /** Clock in ms; injectable so tests of ordering do not depend on wall time. */
  now?: () => number;
  /**
   * Called when a worker takes a key, with how long it waited in the queue since it became ready
   * (controller-runtime's workqueue_queue_duration_seconds): the part of reconcile latency that
   * is queueing, not work.
   */
  onDequeue?: (key: K, queuedMs: number) => void;
}

export class WorkQueue<K = string> {
  readonly name: string;
  readonly rateLimiter: RateLimiter<K>;
  readonly #now: () => number;
  readonly #onDequeue: ((key: K, queuedMs: number) => void) | undefined;
  readonly #readySince = new Map<K, number>();
  #queue: K[] = [];
  #head = 0;
  readonly #dirty = new Set<K>();
  readonly #processing = new Set<K>();
  readonly #getters: ((key: K | undefined) => void)[] = [];
  #shuttingDown = false;
  // Delaying part: earliest deadline per key, plus a heap with lazy deletion of superseded entries.
  readonly #waitingAt = new Map<K, number>();
  readonly #heap = new DeadlineHeap<K>();
  #seq = 0;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Number.POSITIVE_INFINITY;

  constructor(opts: WorkQueueOptions<K> = {}) {
    this.name = opts.name ?? 'queue';
    this.rateLimiter = opts.rateLimiter ?? defaultControllerRateLimiter<K>();
    this.#now = opts.now ?? (() => performance.now());
    this.#onDequeue = opts.onDequeue;
  }

  /** Queue a key now (no-op if already queued, deferred if being processed, ignored after shutdown). */
  add(key: K): void {
    if (this.#shuttingDown) return;
    if (this.#dirty.has(key)) return;
    this.#dirty.add(key);
    if (this.#processing.has(key)) return;
    this.#push(key);
  }

  /** Queue a key after `delayMs`; a non-positive delay adds immediately. */
  addAfter(key: K, delayMs: number): void {
    if (this.#shuttingDown) return;
    if (!(delayMs > 0)) {
      this.add(key);
      return;
    }
    const at = this.#now() + delayMs;
    const existing = this.#waitingAt.get(key);
    if (existing !== undefined && existing <= at) return;
    this.#waitingAt.set(key, at);
    this.#heap.push({ at, seq: this.#seq++, key });
    this.#arm();
  }

  /** Queue a key after the rate limiter's delay (failure backoff). */
  addRateLimited(key: K): void {
    this.addAfter(key, this.rateLimiter.when(key));
  }

  /** Clear the key's failure history (after a successful reconcile). */
  forget(key: K): void {
    this.rateLimiter.forget(key);
  }

  numRequeues(key: K): number {
    return this.rateLimiter.numRequeues(key);
  }

  /**
   * Wait for the next key. The caller owns it until `done(key)`. Resolves undefined once the
   * queue is shut down and drained.
   */
  get(): Promise<K | undefined> {
    const key = this.#take();
    if (key !== undefined || this.#shuttingDown) return Promise.resolve(key);
    return new Promise((resolve) => this.#getters.push(resolve));
  }

  /** Processing of `key` finished; if it was added meanwhile, it goes back in the queue. */
  done(key: K): void {
    this.#processing.delete(key);
    if (this.#dirty.has(key)) this.#push(key);
  }

  /** Keys queued and ready (not counting those waiting for a delay or being processed). */
  len(): number {
    return this.#queue.length - this.#head;
  }

  /** Keys waiting for their addAfter / rate-limit delay. */
  waitingLen(): number {
    return this.#waitingAt.size;
  }

  processingLen(): number {
    return this.#processing.size;
  }

  isShuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Stop accepting keys, drop delayed ones, and release every waiting `get()` once the queue is empty. */
  shutdown(): void {
    this.#shuttingDown = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    this.#heap.clear();
    this.#waitingAt.clear();
    // Hand out what is queued; anyone left waiting gets undefined.
    while (this.#getters.length > 0) {
      const key = this.#take();
      (this.#getters.shift() as (k: K | undefined) => void)(key);
    }
  }

  #push(key: K): void {
    const getter = this.#getters.shift();
    if (getter) {
      this.#dirty.delete(key);
      this.#processing.add(key);
      this.#onDequeue?.(key, 0);
      getter(key);
      return;
    }
    if (this.#onDequeue) this.#readySince.set(key, this.#now());
    this.#queue.push(key);
  }

  #take(): K | undefined {
    if (this.#head >= this.#queue.length) return undefined;
    const key = this.#queue[this.#head] as K;
    this.#head++;
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    this.#dirty.delete(key);
    this.#processing.add(key);
    if (this.#onDequeue) {
      const since = this.#readySince.get(key);
      this.#readySince.delete(key);
      this.#onDequeue(key, since === undefined ? 0 : this.#now() - since);
    }
    return key;
  }

  #arm(): void {
    const next = this.#heap.peek();
    if (!next) return;
    if (this.#timer && this.#timerAt <= next.at) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timerAt = next.at;
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, next.at - this.#now()));
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    const now = this.#now();
    for (;;) {
      const top = this.#heap.peek();
      // setTimeout may fire a little early relative to performance.now(); allow 1 ms slack.
      if (!top || top.at > now + 1) break;
      this.#heap.pop();
      if (this.#waitingAt.get(top.key) !== top.at) continue; // superseded by an earlier deadline
      this.#waitingAt.delete(top.key);
      this.add(top.key);
    }
    this.#arm();
  }
}
