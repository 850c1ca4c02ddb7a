/**
 * Circuit breakers and the retry budget (docs/DESIGN.md §6.1), per Service and host proxy, with
 * Envoy's meaning: a request over a limit is not queued but answered 503 at once, with a header
 * naming the limit that overflowed.
 */

export interface CircuitBreakerLimits {
  maxConnections: number;
  maxPendingRequests: number;
  maxRequests: number;
  maxRetries: number;
}

export type Limit = 'connections' | 'pending-requests' | 'requests' | 'retries';

const LIMIT_OF: Record<Limit, keyof CircuitBreakerLimits> = {
  connections: 'maxConnections',
  'pending-requests': 'maxPendingRequests',
  requests: 'maxRequests',
  retries: 'maxRetries',
};

/** The response header an overflow answers with; its value names the limit (Envoy: x-envoy-overloaded). */
export const OVERFLOW_HEADER = 'x-orrery-overflow';

export class CircuitBreaker {
  readonly #limits: CircuitBreakerLimits;
  readonly #open: Record<Limit, number> = { connections: 0, 'pending-requests': 0, requests: 0, retries: 0 };
  readonly overflows: Record<Limit, number> = {
    connections: 0,
    'pending-requests': 0,
    requests: 0,
    retries: 0,
  };

  constructor(limits: CircuitBreakerLimits) {
    this.#limits = limits;
  }

  /** Takes one unit of `limit`; false (and an overflow counted) when it is at its maximum. */
  tryAcquire(limit: Limit): boolean {
    if (this.#open[limit] >= this.#limits[LIMIT_OF[limit]]) {
      this.overflows[limit]++;
      return false;
    }
    this.#open[limit]++;
    return true;
  }

  release(limit: Limit): void {
    if (this.#open[limit] > 0) this.#open[limit]--;
  }

  active(limit: Limit): number {
    return this.#open[limit];
  }
}

/**
 * Envoy's retry budget: retries in flight at most `budgetPercent` of the active requests, but
 * always at least `minConcurrency` (Envoy's min_retry_concurrency, 3), so a failure storm cannot
 * multiply the load while a lone failing request can still be retried.
 */
export function retryAllowed(
  activeRequests: number,
  activeRetries: number,
  budgetPercent: number,
  minConcurrency = 3,
): boolean {
  return activeRetries < Math.max(minConcurrency, (activeRequests * budgetPercent) / 100);
}

/** Envoy's retry back-off: full jitter in [0, min(250, 25 × 2^attempt)) ms; attempt counts from 0. */
export function retryBackoffMs(attempt: number, random: () => number = Math.random): number {
  return random() * Math.min(250, 25 * 2 ** attempt);
}
