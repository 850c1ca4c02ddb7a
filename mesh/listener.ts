/**
 * A Service port's listening socket at `virtualIP:port` (docs/DESIGN.md §6.1), for both
 * protocols: it keeps trying to bind (an address in use, say while another Service's listener on
 * it drains or the virtual IP moves) until it is closed, hands each accepted connection (paused)
 * to the port's handler, and on close stops accepting at once and lets the connections drain.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Backoff, type Logger } from '../kube/index.ts';
import { errorName, newServer, type UvTcp } from './uv-tcp.ts';

/** Sends a reset rather than a FIN, so the client cannot take the close for an empty answer. */
export function reset(socket: Socket): void {
  if (!socket.destroyed) socket.resetAndDestroy();
}

/** One connection being served. */
export interface Served {
  /** Ends it now: both sides, and whatever is in progress. */
  destroy(): void;
  /** The listener is closing: finish what is in flight and close (http: between requests). */
  drain(): void;
}

export interface PortListenerOptions {
  address: string;
  port: number;
  /**
   * Serves a connection accepted now; undefined resets it at once (no route any more). The
   * connection calls `listener.release(served)` once it is closed (perhaps before this returns,
   * when it is reset at once): no promise per connection.
   */
  handle?: (socket: Socket, listener: PortListener) => Served | undefined;
  /**
   * Instead of `handle`: accept on a libuv TCP handle (uv-tcp.ts) and serve each connection's
   * handle (not reading yet) with this; undefined resets it.
   */
  handleUv?: (handle: UvTcp, listener: PortListener) => Served | undefined;
  log: Logger;
}

/** Node's default listen backlog. */
const BACKLOG = 511;

export class PortListener {
  readonly address: string;
  readonly port: number;
  readonly #handle: ((socket: Socket, listener: PortListener) => Served | undefined) | undefined;
  readonly #handleUv: ((handle: UvTcp, listener: PortListener) => Served | undefined) | undefined;
  /** Connections released before their handler returned (a connection reset at once). */
  readonly #early = new Set<Served>();
  readonly #log: Logger;
  readonly #connections = new Set<Served>();
  readonly #backoff = new Backoff(250, 10_000);
  #server: Server | undefined;
  #uvServer: UvTcp | undefined;
  #retry: NodeJS.Timeout | undefined;
  /** close() waits on this for the last connection to go. */
  #emptied: (() => void) | undefined;
  #listening = false;
  #closed = false;

  constructor(opts: PortListenerOptions) {
    this.address = opts.address;
    this.port = opts.port;
    this.#handle = opts.handle;
    this.#handleUv = opts.handleUv;
    this.#log = opts.log;
    this.#bind();
  }

  get listening(): boolean {
    return this.#listening;
  }

  /** Connections open now (accepted, not yet closed). */
  get connections(): number {
    return this.#connections.size;
  }

  #bind(): void {
    if (this.#closed) return;
    if (this.#handleUv) {
      this.#bindUv(this.#handleUv);
      return;
    }
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) =>
      this.#accept(socket),
    );
    this.#server = server;
    server.on('error', (err: NodeJS.ErrnoException) => {
      if (this.#listening) {
        // accept() failed (EMFILE, say): the listener stays up.
        this.#log.warn({ err: err.message }, 'accept failed');
        return;
      }
      const delay = this.#backoff.next();
      this.#log.warn(
        { address: `${this.address}:${this.port}`, err: err.message, retryInMs: Math.round(delay) },
        'cannot bind the Service port; retrying',
      );
      server.close();
      if (!this.#closed) this.#retry = setTimeout(() => this.#bind(), delay);
    });
    server.listen({ host: this.address, port: this.port }, () => {
      this.#listening = true;
      this.#backoff.reset();
      this.#log.info({ address: `${this.address}:${this.port}` }, 'listening');
    });
  }

  #bindUv(handle: (h: UvTcp, listener: PortListener) => Served | undefined): void {
    const server = newServer();
    let err = server.bind(this.address, this.port);
    if (err === 0) err = server.listen(BACKLOG);
    if (err !== 0) {
      server.close();
      const delay = this.#backoff.next();
      this.#log.warn(
        { address: `${this.address}:${this.port}`, err: errorName(err), retryInMs: Math.round(delay) },
        'cannot bind the Service port; retrying',
      );
      this.#retry = setTimeout(() => this.#bind(), delay);
      return;
    }
    server.onconnection = (status: number, client?: UvTcp) => {
      if (status < 0 || !client) {
        // accept() failed (EMFILE, say): the listener stays up.
        this.#log.warn({ err: errorName(status) }, 'accept failed');
        return;
      }
      const served = this.#closed ? undefined : handle(client, this);
      if (!served) {
        client.reset();
        return;
      }
      this.#add(served);
    };
    this.#uvServer = server;
    this.#listening = true;
    this.#backoff.reset();
    this.#log.info({ address: `${this.address}:${this.port}` }, 'listening');
  }

  #accept(socket: Socket): void {
    const served = this.#closed || !this.#handle ? undefined : this.#handle(socket, this);
    if (!served) {
      reset(socket);
      return;
    }
    this.#add(served);
  }

  #add(served: Served): void {
    if (this.#early.delete(served)) return;
    this.#connections.add(served);
  }

  /** `served` is closed (both of its sides): it leaves the listener's count. */
  release(served: Served): void {
    if (!this.#connections.delete(served)) {
      this.#early.add(served);
      return;
    }
    if (this.#connections.size === 0) this.#emptied?.();
  }

  /**
   * Stops accepting at once (the port is free when this returns) and asks each connection to
   * drain; those still open after drainMs are closed. Resolves when none is left.
   */
  async close(drainMs: number): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      clearTimeout(this.#retry);
      this.#server?.close();
      this.#uvServer?.close();
      this.#uvServer = undefined;
      this.#listening = false;
      for (const c of this.#connections) c.drain();
    }
    if (this.#connections.size === 0) return;
    const emptied = new Promise<void>((resolve) => {
      const previous = this.#emptied;
      this.#emptied = () => {
        previous?.();
        resolve();
      };
    });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      emptied.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), drainMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut && this.#connections.size > 0) {
      this.#log.info({ connections: this.#connections.size, drainMs }, 'drain timeout: closing connections');
      for (const c of this.#connections) c.destroy();
      await emptied;
    }
  }
}
