/**
 * Port numbers for template ports that have none: unique on this host, from a configured range
 * (like a Service's NodePort range), skipping ports another process already listens on. The
 * numbers end up in the runtime's spec and state record, so a re-adopted replica keeps its
 * ports; `reserve` puts them back into the allocator after a restart.
 *
 * Several runtimes may share a machine (tests, `orrery up --hosts`, a node running two): a free
 * port is also claimed machine-wide, by a file `<claimDir>/<port>` created O_EXCL naming the
 * runtime's state dir, as user namespace slots are (engine.ts). A bind probe alone leaves a
 * window between the probe and the workload's own bind, in which another runtime's probe finds
 * the port free too. A claim whose state dir is gone is stale and taken over.
 */
import { randomInt } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { claim, claimContent } from '../claims.ts';
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

/** Where machine-wide port claims live by default (tmpfs: a reboot ends every workload anyway). */
export const DEFAULT_PORT_CLAIM_DIR = '/run/orrery/ports';

export interface PortClaims {
  /** Default DEFAULT_PORT_CLAIM_DIR. */
  dir?: string;
  /** The runtime's state dir: a claim naming one that no longer exists is stale. */
  owner: string;
}

export class PortAllocator {
  readonly range: PortRange;
  readonly #host: string;
  readonly #used = new Set<number>();
  readonly #claims: Required<PortClaims> | undefined;
  #next: number;

  /**
   * The first port tried is a random one of the range (`start` fixes it), as the kernel picks
   * ephemeral ports: several runtimes on one machine with the same range (tests; one host
   * machine running two agents) then rarely probe the same port at the same moment, where the
   * probe and the workload's bind could otherwise both succeed for two of them.
   */
  constructor(
    range: PortRange,
    host = '127.0.0.1',
    start = randomInt(range.min, range.max + 1),
    claims?: PortClaims,
  ) {
    if (!(start >= range.min && start <= range.max)) {
      throw new RangeError(`start must be within ${range.min}-${range.max}, got ${start}`);
    }
    this.range = range;
    this.#host = host;
    this.#next = start;
    if (claims) {
      this.#claims = { dir: claims.dir ?? DEFAULT_PORT_CLAIM_DIR, owner: path.resolve(claims.owner) };
      mkdirSync(this.#claims.dir, { recursive: true, mode: 0o700 });
    }
  }

  /**
   * Mark a port as taken (a re-adopted replica's, or a fixed one from a template); claimed unless
   * another runtime on the machine holds it (a re-adopted one's claim is ours already).
   */
  reserve(port: number): void {
    this.#used.add(port);
    if (this.#claims && this.#inRange(port)) this.#claim(port);
  }

  /** Free again, and its claim removed when it is this runtime's. */
  release(port: number): void {
    this.#used.delete(port);
    if (!this.#claims || !this.#inRange(port)) return;
    const file = this.#claimFile(port);
    try {
      if (readFileSync(file, 'utf8') === this.#owner()) rmSync(file, { force: true });
    } catch {
      // no claim
    }
  }

  #inRange(port: number): boolean {
    return port >= this.range.min && port <= this.range.max;
  }

  #claimFile(port: number): string {
    return path.join((this.#claims as Required<PortClaims>).dir, String(port));
  }

  #owner(): string {
    return claimContent((this.#claims as Required<PortClaims>).owner);
  }

  /** Claims the port machine-wide; false when another runtime on the machine holds it. */
  #claim(port: number): boolean {
    return !this.#claims || claim(this.#claimFile(port), this.#owner());
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
      if ((await portIsFree(port, this.#host)) && this.#claim(port)) return port;
      this.#used.delete(port);
    }
    throw new Error(`no free port left in the range ${this.range.min}-${this.range.max}`);
  }
}
