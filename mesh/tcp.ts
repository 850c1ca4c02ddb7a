/**
 * The `tcp` side of the proxy (docs/DESIGN.md §6.1): a listener at `virtualIP:port` per Service
 * port, and per accepted connection an endpoint picked by the Service's policy, a connect with
 * retries on other endpoints, then bytes piped both ways until both sides are done.
 *
 * - Backpressure: stream.pipe() both ways; a slow reader pauses the other side's reads.
 * - Half-close: both sockets allow half-open; a FIN from one side ends the write side of the
 *   other, and the other direction keeps flowing until its own FIN.
 * - A reset (or error) on one side resets the other, so a truncated stream never looks complete.
 * - Idle timeout: no byte either way for that long closes both (Envoy tcp_proxy idle_timeout).
 * - No endpoint, every try failed, or the Service's maxConnections reached: the client
 *   connection is reset at once and counted; nothing waits.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { Backoff, type Logger, sleep } from '../kube/index.ts';
import type { Upstream } from './endpoints.ts';
import type { CircuitBreaker } from './limits.ts';
import { retryBackoffMs } from './limits.ts';
import type { EndpointStats, PortStats } from './metrics.ts';
import type { Pool } from './pool.ts';

/** What a connection needs of its Service port, read once when it is accepted. */
export interface TcpRoute {
  pool: Pool;
  /** The Service's breakers (per Service, shared by its ports). */
  breaker: CircuitBreaker;
  /** Tries after the first failed connect (0 unless retries.retryOn has connect-failure). */
  retries: number;
  /** Per try. */
  connectTimeoutMs: number;
  /** 0: none. */
  idleTimeoutMs: number;
  stats: PortStats;
  endpointStats(u: Upstream): EndpointStats;
  /** A failed connect ejected `u` (for the log). */
  onEjected(u: Upstream): void;
}

/** One client connection and, once connected, its upstream. */
class Connection {
  readonly client: Socket;
  upstream: Socket | undefined;
  readonly abort = new AbortController();
  constructor(client: Socket) {
    this.client = client;
  }
  /** Ends it now (drain timeout, proxy stop): both sockets, and a connect in progress. */
  destroy(): void {
    this.abort.abort();
    this.client.destroy();
    this.upstream?.destroy();
  }
}

/** Sends a reset rather than a FIN, so the client cannot take the close for an empty answer. */
function reset(socket: Socket): void {
  if (!socket.destroyed) socket.resetAndDestroy();
}

class ConnectError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** A connected socket to address:port (half-open allowed, no Nagle), or a rejection within timeoutMs. */
function connectTo(address: string, port: number, timeoutMs: number, signal: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new ConnectError('ABORTED', 'connection closed'));
    const socket = connect({ host: address, port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(
      () => fail(new ConnectError('ETIMEDOUT', `no connect in ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onAbort = () => fail(new ConnectError('ABORTED', 'connection closed'));
    function settle() {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.off('error', fail);
      socket.off('connect', onConnect);
    }
    function fail(err: Error) {
      settle();
      socket.destroy();
      reject(err);
    }
    function onConnect() {
      settle();
      // Until the pipe's own handlers are on: an error in between destroys the socket, which
      // the pipe then sees.
      socket.on('error', () => {});
      resolve(socket);
    }
    socket.once('connect', onConnect);
    socket.once('error', fail);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Forwards one accepted client connection (paused, as pauseOnConnect leaves it) through `route`;
 * resolves when both sides are closed.
 */
async function forward(conn: Connection, route: TcpRoute, log: Logger): Promise<void> {
  const { client } = conn;
  const { pool, breaker, stats } = route;
  stats.accepted++;
  stats.active++;
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  client.on('error', () => {}); // the 'close' that follows is what counts
  if (!breaker.tryAcquire('connections')) {
    stats.overflows++;
    stats.active--;
    reset(client);
    return closed;
  }
  void closed.then(() => {
    stats.active--;
    breaker.release('connections');
  });
  client.once('close', () => conn.abort.abort());

  const key = client.remoteAddress ?? '';
  const exclude = new Set<string>();
  for (let attempt = 0; attempt <= route.retries; attempt++) {
    if (conn.abort.signal.aborted) return closed;
    // The balancer it picks from hears of the start and the end (the Service may change its policy meanwhile).
    const balancer = pool.balancer;
    const u = pool.pick(key, exclude);
    if (!u) break;
    if (attempt > 0) {
      // Envoy's back-off before a retry, full jitter from 25 ms doubling to 250 ms.
      stats.retries++;
      await sleep(retryBackoffMs(attempt - 1), conn.abort.signal);
      if (conn.abort.signal.aborted) return closed;
    }
    const es = route.endpointStats(u);
    balancer.started(u);
    const t0 = performance.now();
    let upstream: Socket;
    try {
      upstream = await connectTo(u.address, u.port, route.connectTimeoutMs, conn.abort.signal);
    } catch (err) {
      // A failed connect counts as the slowest answer there is, so p2c-ewma steers away from an
      // endpoint that refuses fast instead of favouring it.
      balancer.ended(u, route.connectTimeoutMs);
      if ((err as ConnectError).code === 'ABORTED') return closed;
      es.connectFailures++;
      log.debug({ endpoint: u.id, err: (err as Error).message, attempt }, 'connect failed');
      if (pool.failed(u)) {
        es.ejections++;
        route.onEjected(u);
      }
      exclude.add(u.id);
      continue;
    }
    const rttMs = performance.now() - t0;
    pool.succeeded(u);
    es.connections++;
    es.active++;
    conn.upstream = upstream;
    await splice(conn, upstream, route, es);
    es.active--;
    balancer.ended(u, rttMs);
    return closed;
  }
  if (!conn.abort.signal.aborted) {
    if (exclude.size === 0) stats.noEndpoint++;
    else stats.connectFailed++;
    reset(client);
  }
  return closed;
}

/** Pipes client ⇄ upstream until both are closed. */
function splice(conn: Connection, upstream: Socket, route: TcpRoute, es: EndpointStats): Promise<void> {
  const { client } = conn;
  const done = Promise.all([
    new Promise<void>((resolve) => (client.destroyed ? resolve() : client.once('close', () => resolve()))),
    new Promise<void>((resolve) =>
      upstream.destroyed ? resolve() : upstream.once('close', () => resolve()),
    ),
  ]).then(() => {});
  if (client.destroyed || upstream.destroyed || conn.abort.signal.aborted) {
    reset(client);
    reset(upstream);
    return done;
  }
  client.on('error', () => reset(upstream));
  upstream.on('error', () => reset(client));
  // One side closed: the other follows, unless both of its directions are done already (then it
  // is flushing the last bytes and closes by itself).
  const follow = (other: Socket) => () => {
    if (!other.destroyed && !(other.readableEnded && other.writableEnded)) other.destroy();
  };
  client.once('close', follow(upstream));
  upstream.once('close', follow(client));
  if (route.idleTimeoutMs > 0) {
    // Bytes either way touch both sockets (read on one, written on the other), so each one's
    // inactivity timer is the connection's.
    let counted = false;
    const idle = () => {
      if (!counted) route.stats.idleTimeouts++;
      counted = true;
      client.destroy();
      upstream.destroy();
    };
    client.setTimeout(route.idleTimeoutMs, idle);
    upstream.setTimeout(route.idleTimeoutMs, idle);
  }
  client.on('data', (chunk: Buffer) => {
    es.bytesIn += chunk.length;
  });
  upstream.on('data', (chunk: Buffer) => {
    es.bytesOut += chunk.length;
  });
  client.pipe(upstream);
  upstream.pipe(client);
  return done;
}

export interface TcpListenerOptions {
  address: string;
  port: number;
  /** The route of a connection accepted now; undefined closes it at once. */
  route: () => TcpRoute | undefined;
  log: Logger;
}

/**
 * A listening socket at address:port that keeps trying to bind (an address in use, say while
 * another Service's listener on it drains or the virtual IP moves) until it is closed.
 */
export class TcpListener {
  readonly address: string;
  readonly port: number;
  readonly #route: () => TcpRoute | undefined;
  readonly #log: Logger;
  /** Each open connection, with the promise of its end. */
  readonly #connections = new Map<Connection, Promise<void>>();
  readonly #backoff = new Backoff(250, 10_000);
  #server: Server | undefined;
  #retry: NodeJS.Timeout | undefined;
  #listening = false;
  #closed = false;

  constructor(opts: TcpListenerOptions) {
    this.address = opts.address;
    this.port = opts.port;
    this.#route = opts.route;
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

  #accept(socket: Socket): void {
    const route = this.#closed ? undefined : this.#route();
    if (!route) {
      reset(socket);
      return;
    }
    const conn = new Connection(socket);
    const done = forward(conn, route, this.#log)
      .catch((err: unknown) => {
        this.#log.error({ err }, 'forwarding failed');
        conn.destroy();
      })
      .finally(() => this.#connections.delete(conn));
    this.#connections.set(conn, done);
  }

  /**
   * Stops accepting at once (the port is free when this returns); connections open go on for up
   * to drainMs and are then closed. Resolves when none is left.
   */
  async close(drainMs: number): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      clearTimeout(this.#retry);
      this.#server?.close();
      this.#listening = false;
    }
    if (this.#connections.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      Promise.allSettled(this.#connections.values()).then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), drainMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut && this.#connections.size > 0) {
      this.#log.info({ connections: this.#connections.size, drainMs }, 'drain timeout: closing connections');
      for (const c of this.#connections.keys()) c.destroy();
      await Promise.allSettled(this.#connections.values());
    }
  }
}
