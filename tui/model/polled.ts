// What the TUI's polled models share (usage.ts reads the runtimes, mesh.ts the proxies): a read
// every `intervalMs` from start() to stop(), a read still running when the next is due not
// doubled, and listeners told after a read that changed what the model holds (a read of nothing,
// no host and no proxy, tells no one: each notification redraws the whole screen).
export abstract class PolledModel {
  readonly #intervalMs: number;
  readonly #listeners = new Set<() => void>();
  /** Aborted by stop(): a read in flight gives up. */
  protected readonly abort = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #polling = false;

  constructor(intervalMs: number) {
    this.#intervalMs = intervalMs;
  }

  start(): this {
    this.#timer = setInterval(() => void this.poll(), this.#intervalMs);
    this.#timer.unref();
    void this.poll();
    return this;
  }

  stop(): void {
    clearInterval(this.#timer);
    this.abort.abort();
  }

  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** One read; the listeners hear of it if it changed something, unless it was stopped meanwhile. */
  async poll(): Promise<void> {
    if (this.#polling || this.abort.signal.aborted) return;
    this.#polling = true;
    try {
      const changed = await this.read();
      if (this.abort.signal.aborted || !changed) return;
      for (const listener of this.#listeners) listener();
    } finally {
      this.#polling = false;
    }
  }

  /** One read; whether what the model holds changed (a new sample, a gap, an error, numbers gone). */
  protected abstract read(): Promise<boolean>;
}
