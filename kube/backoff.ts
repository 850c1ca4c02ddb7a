/**
 * Exponential backoff with full jitter for reconnects (AWS architecture blog "Exponential
 * Backoff And Jitter"; client-go's reflector uses a jittered 800 ms..30 s backoff manager).
 */
export class Backoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  #attempt = 0;

  constructor(initialMs: number, maxMs: number) {
    if (!(initialMs > 0) || !(maxMs >= initialMs)) {
      throw new TypeError(`backoff needs 0 < initialMs <= maxMs, got initialMs=${initialMs} maxMs=${maxMs}`);
    }
    this.#initialMs = initialMs;
    this.#maxMs = maxMs;
  }

  /** Next delay: uniform in [cap/2, cap] where cap doubles per attempt up to maxMs. */
  next(): number {
    const cap = Math.min(this.#maxMs, this.#initialMs * 2 ** this.#attempt);
    this.#attempt++;
    return cap / 2 + Math.random() * (cap / 2);
  }

  reset(): void {
    this.#attempt = 0;
  }
}

/** setTimeout as a promise that resolves early (without throwing) when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
