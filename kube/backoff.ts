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

/**
 * An AbortController that aborts when any of the given signals does, until dispose() unlinks it
 * from them; the caller may also abort it itself (a timeout, a watch restart). Used instead of
 * AbortSignal.any(), which has no unlink: as the DOM spec requires, a combined signal with an
 * abort listener stays referenced by its sources until one of them aborts, so every request
 * made under a long-lived stop signal would keep its combined signal, and the request its
 * listener closes over, until that stop. Call dispose() when done.
 */
export function linkedAbort(...signals: (AbortSignal | undefined)[]): {
  controller: AbortController;
  dispose(): void;
} {
  const controller = new AbortController();
  const cleanups: (() => void)[] = [];
  for (const s of signals) {
    if (!s) continue;
    if (s.aborted) {
      controller.abort(s.reason);
      break;
    }
    const onAbort = () => controller.abort(s.reason);
    s.addEventListener('abort', onAbort, { once: true });
    cleanups.push(() => s.removeEventListener('abort', onAbort));
  }
  return {
    controller,
    dispose() {
      for (const c of cleanups) c();
      cleanups.length = 0;
    },
  };
}
