// What the TUI's polled models share (usage.ts reads the runtimes, mesh.ts the proxies): a read
// every `intervalMs` from start() to stop(), a read still running when the next is due not
// doubled, and listeners told after each read.
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

  /** One read; the listeners hear of it unless it was stopped meanwhile. */
  async poll(): Promise<void> {
    if (this.#polling || this.abort.signal.aborted) return;
    this.#polling = true;
    try {
      await this.read();
      if (this.abort.signal.aborted) return;
      for (const listener of this.#listeners) listener();
    } finally {
      this.#polling = false;
    }
  }

  protected abstract read(): Promise<void>;
}
