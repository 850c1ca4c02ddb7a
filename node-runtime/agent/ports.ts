/**
 * Port numbers for template ports that have none: unique on this host, from a configured range
 * (like a Service's NodePort range), skipping ports another process already listens on. The
 * numbers end up in the runtime's spec and state record, so a re-adopted replica keeps its
 * ports; `reserve` puts them back into the allocator after a restart.
 */
import { randomInt } from 'node:crypto';
import net from 'node:net';
import type { PortRange } from './options.ts';

/** True when nothing listens on `host:port` (probed with a bind, as the kubelet's hostport checks do). */
function portIsFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

export class PortAllocator {
  readonly range: PortRange;
  readonly #host: string;
  readonly #used = new Set<number>();
  #next: number;

  /**
   * The first port tried is a random one of the range (`start` fixes it), as the kernel picks
   * ephemeral ports: several runtimes on one machine with the same range (tests; one host
   * machine running two agents) then rarely probe the same port at the same moment, where the
   * probe and the workload's bind could otherwise both succeed for two of them.
   */
  constructor(range: PortRange, host = '127.0.0.1', start = randomInt(range.min, range.max + 1)) {
    if (!(start >= range.min && start <= range.max)) {
      throw new RangeError(`start must be within ${range.min}-${range.max}, got ${start}`);
    }
    this.range = range;
    this.#host = host;
    this.#next = start;
  }

  /** Mark a port as taken (a re-adopted replica's, or a fixed one from a template). */
  reserve(port: number): void {
    this.#used.add(port);
  }

  release(port: number): void {
    this.#used.delete(port);
  }

  inUse(): number {
    return this.#used.size;
  }

  /**
   * The next port of the range, round-robin (a just-released port is not handed out again at
   * once, so a client of the old replica does not reach the new one), that is neither allocated
   * nor bound by anyone.
   */
  async allocate(): Promise<number> {
    const size = this.range.max - this.range.min + 1;
    for (let i = 0; i < size; i++) {
      const port = this.#next;
      this.#next = port >= this.range.max ? this.range.min : port + 1;
      if (this.#used.has(port)) continue;
      // Reserved before the probe so a concurrent allocate() cannot pick it meanwhile.
      this.#used.add(port);
      if (await portIsFree(port, this.#host)) return port;
      this.#used.delete(port);
    }
    throw new Error(`no free port left in the range ${this.range.min}-${this.range.max}`);
  }
}
