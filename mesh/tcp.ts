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
import { connect, type Socket } from 'node:net';
import { type Logger, sleep } from '../kube/index.ts';
import type { Upstream } from './endpoints.ts';
import type { CircuitBreaker } from './limits.ts';
import { retryBackoffMs } from './limits.ts';
import { reset, type Served } from './listener.ts';
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

export class ConnectError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** A connected socket to address:port (half-open allowed, no Nagle), or a rejection within timeoutMs. */
export function connectTo(
  address: string,
  port: number,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Socket> {
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
    stats.overflows.connections++;
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
  // Retries counted against route.retries; a refused connect with an endpoint not tried yet in
  // the pool goes on to it at once and counts nothing (as the http side: the pool may hold
  // endpoints whose processes are gone until the EndpointSlices say so). Bounded by the pool.
  let attempt = 0;
  let backoff = false;
  for (;;) {
    if (conn.abort.signal.aborted) return closed;
    // The balancer it picks from hears of the start and the end (the Service may change its policy meanwhile).
    const balancer = pool.balancer;
    const u = pool.pick(key, exclude);
    if (!u) break;
    if (exclude.size > 0) stats.retries++;
    if (backoff) {
      // Envoy's back-off before a retry, full jitter from 25 ms doubling to 250 ms.
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
      if (route.retries === 0) break;
      backoff = !pool.hasUntried(exclude);
      if (backoff && ++attempt > route.retries) break;
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

/** Serves one accepted client connection (paused) of a `tcp` port through `route`. */
export function serveTcp(client: Socket, route: TcpRoute, log: Logger): Served {
  const conn = new Connection(client);
  return {
    done: forward(conn, route, log).catch((err: unknown) => {
      log.error({ err }, 'forwarding failed');
      conn.destroy();
    }),
    destroy: () => conn.destroy(),
    drain: () => {},
  };
}
