/**
 * Outlier detection with Envoy's semantics (docs/DESIGN.md §6.1), per Service and host proxy:
 *
 * - an endpoint whose consecutive errors (5xx answers, connect failures, resets, timeouts) reach
 *   `consecutiveErrors` is ejected at once, for `baseEjectionSeconds` × the number of times it has
 *   been ejected, at most `maxEjectionSeconds` (Envoy: 300 s);
 * - `maxEjectionPercent` bounds how many are out at once, and one endpoint always stays in;
 * - each `intervalSeconds` sweep brings back the endpoints whose time is up (an endpoint is out
 *   until that sweep) and lowers the multiplier of those that stayed in (Envoy decrements it for
 *   every interval a host is healthy);
 * - panic: when fewer than PANIC_THRESHOLD of the endpoints are in, balancing goes over all of
 *   them, ejected or not (Envoy's healthy panic threshold, 50 %).
 *
 * Pure: the clock is injected and the proxy calls sweep() on its interval timer.
 */

export interface OutlierOptions {
  consecutiveErrors: number;
  intervalSeconds: number;
  baseEjectionSeconds: number;
  maxEjectionPercent: number;
  /** Default 300 (Envoy's max_ejection_time). */
  maxEjectionSeconds?: number;
}

/** Below this fraction of endpoints in, balance over all of them. */
export const PANIC_THRESHOLD = 0.5;

interface State {
  consecutive: number;
  ejections: number;
  /** Monotonic ms from which the next sweep brings it back; 0 when in. */
  ejectedUntil: number;
}

export class OutlierDetector {
  readonly #o: Required<OutlierOptions>;
  readonly #now: () => number;
  readonly #state = new Map<string, State>();

  constructor(options: OutlierOptions, now: () => number = () => performance.now()) {
    this.#o = { maxEjectionSeconds: 300, ...options };
    this.#now = now;
  }

  /** The endpoint set changed: state is kept for the endpoints that stay. */
  update(ids: Iterable<string>): void {
    const keep = new Set(ids);
    for (const id of keep)
      if (!this.#state.has(id)) this.#state.set(id, { consecutive: 0, ejections: 0, ejectedUntil: 0 });
    for (const id of this.#state.keys()) if (!keep.has(id)) this.#state.delete(id);
  }

  /** Records the outcome of a request (or connection); true when it ejected the endpoint. */
  record(id: string, ok: boolean): boolean {
    const s = this.#state.get(id);
    if (!s) return false;
    if (ok) {
      s.consecutive = 0;
      return false;
    }
    s.consecutive++;
    if (s.consecutive < this.#o.consecutiveErrors || this.isEjected(id) || !this.#mayEject()) return false;
    s.consecutive = 0;
    s.ejections++;
    const seconds = Math.min(this.#o.baseEjectionSeconds * s.ejections, this.#o.maxEjectionSeconds);
    s.ejectedUntil = this.#now() + seconds * 1000;
    return true;
  }

  /**
   * Out of balancing: from its ejection until the first sweep after its ejection time is up (as
   * Envoy brings hosts back on its interval timer), so what this says is what the pool does.
   */
  isEjected(id: string): boolean {
    const s = this.#state.get(id);
    return s !== undefined && s.ejectedUntil > 0;
  }

  /** The interval sweep: endpoints whose time is up come back; those in lower their multiplier. */
  sweep(): string[] {
    const back: string[] = [];
    const now = this.#now();
    for (const [id, s] of this.#state) {
      if (s.ejectedUntil > 0 && s.ejectedUntil <= now) {
        s.ejectedUntil = 0;
        back.push(id);
      } else if (s.ejectedUntil === 0 && s.ejections > 0) {
        s.ejections--;
      }
    }
    return back;
  }

  /** The endpoints to balance over: those in, or every one of them in panic. */
  select<E extends { id: string }>(endpoints: readonly E[]): { endpoints: readonly E[]; panic: boolean } {
    const inside = endpoints.filter((e) => !this.isEjected(e.id));
    if (endpoints.length > 0 && inside.length < endpoints.length * PANIC_THRESHOLD) {
      return { endpoints, panic: true };
    }
    return { endpoints: inside, panic: false };
  }

  ejected(): string[] {
    return [...this.#state.keys()].filter((id) => this.isEjected(id));
  }

  #mayEject(): boolean {
    const total = this.#state.size;
    const out = this.ejected().length;
    if (out + 1 >= total) return false; // one endpoint always stays in
    return ((out + 1) * 100) / total <= this.#o.maxEjectionPercent;
  }
}
