/**
 * The `tcp` side of the proxy (docs/DESIGN.md §6.1): a listener at `virtualIP:port` per Service
 * port, and per accepted connection an endpoint picked by the Service's policy, a connect with
 * retries on other endpoints, then bytes passed both ways until both sides are done.
 *
 * - Backpressure: a write the other socket cannot take at once (past its high-water mark) pauses
 *   the reading side until that socket drains.
 * - Half-close: both sockets allow half-open; a FIN from one side ends the write side of the
 *   other, and the other direction keeps flowing until its own FIN.
 * - A reset (or error) on one side resets the other, so a truncated stream never looks complete.
 * - Idle timeout: no byte either way for that long closes both (Envoy tcp_proxy idle_timeout),
 *   found by one coarse sweep per timeout value (IdleSweep), not a timer per socket.
 * - No endpoint, every try failed, or the Service's maxConnections reached: the client
 *   connection is reset at once and counted; nothing waits.
 *
 * The per-connection path is what a new connection costs, so it is kept lean: one object per
 * connection (`TcpConnection`), event handlers shared by all of them (module functions reading
 * the connection from the socket), no promise, no AbortController, no timer once connected, and
 * the upstream read through `onread` into one shared buffer (copied only to hand to the client
 * socket), so no read goes through the stream machinery on that side.
 */
import { connect, type Socket } from 'node:net';
import type { Logger } from '../kube/index.ts';
import type { Balancer } from './balancer.ts';
import type { Upstream } from './endpoints.ts';
import type { CircuitBreaker } from './limits.ts';
import { retryBackoffMs } from './limits.ts';
import { type PortListener, reset, type Served } from './listener.ts';
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

export class ConnectError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * The part of a tcp connection that does not depend on its sockets, the same on net.Socket
 * (TcpConnection here) and on libuv's handles (tcp-uv.ts): pick an endpoint, connect within the
 * connect timeout, and on a failure record it and try again (an endpoint not tried yet at once,
 * else after the back-off on any of them, within `route.retries`), or give up. Subclasses say how
 * a try's socket is made and dropped, and what giving up does to the client.
 */
export abstract class TcpTries implements Served, Sweepable {
  readonly route: TcpRoute;
  readonly log: Logger;
  readonly listener: PortListener;
  connecting = false;
  /** The connect timeout or the back-off before a retry. */
  timer: NodeJS.Timeout | undefined = undefined;
  /** The endpoint of the current try and what it reports to. */
  u: Upstream | undefined = undefined;
  balancer: Balancer<Upstream> | undefined = undefined;
  es: EndpointStats | undefined = undefined;
  /** When the current try started, then its connect time (ms). */
  rttMs = 0;
  /** Endpoints tried and failed; undefined until the first failure. */
  exclude: Set<string> | undefined = undefined;
  attempt = 0;
  backoff = false;
  established = false;
  /** Chunks either way, and their count at the last idle sweep with how many sweeps saw it still. */
  activity = 0;
  seen = 0;
  quiet = 0;

  constructor(route: TcpRoute, log: Logger, listener: PortListener) {
    this.route = route;
    this.log = log;
    this.listener = listener;
  }

  /** The client connection is gone: no try is started, a failed one is not followed by another. */
  abstract get gone(): boolean;
  /** The client's address (the ring-hash key). */
  abstract clientAddress(): string;
  /** Starts connecting a socket to `u`; an error that is known at once is returned (its text). */
  abstract dial(u: Upstream): string | undefined;
  /** Closes the socket of the try that failed. */
  abstract dropTry(): void;
  /** A try failed after the client went. */
  abstract afterGone(): void;
  /** No endpoint, or every try failed: the client is reset. */
  abstract giveUp(): void;
  abstract destroy(): void;
  abstract drain(): void;
  abstract idle(): void;

  /** Picks an endpoint (not one tried, while there is one) and connects, after the back-off when one is due. */
  next(): void {
    const { pool, stats } = this.route;
    // The balancer it picks from hears of the start and the end (the Service may change its policy meanwhile).
    const balancer = pool.balancer;
    const key = pool.hashes ? this.clientAddress() : '';
    let u = pool.pick(key, this.exclude);
    // Every endpoint failed this connection once: a retry (after the back-off) goes back to one.
    if (!u && this.exclude) u = pool.pick(key);
    if (!u) {
      this.giveUp();
      return;
    }
    if (this.exclude) stats.retries++;
    if (this.backoff) {
      // Envoy's back-off before a retry, full jitter from 25 ms doubling to 250 ms.
      this.timer = setTimeout(connectAfterBackoff, retryBackoffMs(this.attempt - 1), this, u, balancer);
      return;
    }
    this.connect(u, balancer);
  }

  connect(u: Upstream, balancer: Balancer<Upstream>): void {
    this.timer = undefined;
    if (this.gone) return;
    this.u = u;
    this.balancer = balancer;
    this.es = this.route.endpointStats(u);
    balancer.started(u);
    this.rttMs = performance.now();
    this.connecting = true;
    const err = this.dial(u);
    if (err !== undefined) {
      this.connectFailed(err);
      return;
    }
    this.timer = setTimeout(onConnectTimeout, this.route.connectTimeoutMs, this);
  }

  /** The try in progress failed (refused, reset, timed out): another endpoint, or the client is reset. */
  connectFailed(message: string): void {
    const { route } = this;
    const { pool } = route;
    const u = this.u as Upstream;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.connecting = false;
    this.dropTry();
    // A failed connect counts as the slowest answer there is, so p2c-ewma steers away from an
    // endpoint that refuses fast instead of favouring it.
    this.balancer?.ended(u, route.connectTimeoutMs);
    if (this.gone) {
      this.afterGone();
      return;
    }
    (this.es as EndpointStats).connectFailures++;
    this.log.debug({ endpoint: u.id, err: message, attempt: this.attempt }, 'connect failed');
    if (pool.failed(u)) {
      (this.es as EndpointStats).ejections++;
      route.onEjected(u);
    }
    const exclude = this.exclude ?? new Set<string>();
    this.exclude = exclude;
    exclude.add(u.id);
    // Retries counted against route.retries; a refused connect with an endpoint not tried yet in
    // the pool goes on to it at once and counts nothing (as the http side: the pool may hold
    // endpoints whose processes are gone until the EndpointSlices say so). Bounded by the pool.
    this.backoff = route.retries > 0 && !pool.hasUntried(exclude);
    if (route.retries === 0 || (this.backoff && ++this.attempt > route.retries)) this.giveUp();
    else this.next();
  }
}

function connectAfterBackoff(conn: TcpTries, u: Upstream, balancer: Balancer<Upstream>): void {
  conn.connect(u, balancer);
}

function onConnectTimeout(conn: TcpTries): void {
  conn.timer = undefined;
  if (conn.connecting) conn.connectFailed(`no connect in ${conn.route.connectTimeoutMs} ms`);
}

/** The connection a socket of the tcp path belongs to (set on both of its sockets). */
const kConn = Symbol('orrery.tcp.connection');
type TcpSocket = Socket & { [kConn]: TcpConnection };

/**
 * What every upstream socket reads into (`onread`): one buffer for the whole process, since a
 * read's bytes are copied out before the next read can happen. 64 KiB, as libuv reads by default.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/**
 * One client connection and, once connected, its upstream. Its fields are the whole state of the
 * connection; the shared handlers below find it on the socket they were called for.
 */
class TcpConnection extends TcpTries {
  readonly client: Socket;
  /** The try in progress (connecting) or the connected upstream. */
  upstream: Socket | undefined = undefined;
  clientClosed = false;
  upstreamClosed = false;
  released = false;

  constructor(client: Socket, route: TcpRoute, log: Logger, listener: PortListener) {
    super(route, log, listener);
    this.client = client;
  }

  get gone(): boolean {
    return this.clientClosed;
  }

  clientAddress(): string {
    return this.client.remoteAddress ?? '';
  }

  /** Ends it now (drain timeout, proxy stop): both sockets, and a connect or back-off in progress. */
  destroy(): void {
    this.client.destroy();
    this.upstream?.destroy();
  }

  drain(): void {}

  dial(u: Upstream): undefined {
    const upstream = connect({
      host: u.address,
      port: u.port,
      allowHalfOpen: true,
      noDelay: true,
      onread: { buffer: READ_BUFFER, callback: onUpstreamRead },
    }) as TcpSocket;
    upstream[kConn] = this;
    this.upstream = upstream;
    upstream.on('error', onUpstreamError);
    upstream.on('close', onUpstreamClose);
    upstream.once('connect', onUpstreamConnect);
    return undefined;
  }

  dropTry(): void {
    const upstream = this.upstream;
    this.upstream = undefined;
    upstream?.destroy();
  }

  afterGone(): void {
    this.closed();
  }

  /** No endpoint, or every try failed: the client is reset at once. */
  giveUp(): void {
    if (this.clientClosed) return;
    const { stats } = this.route;
    if (this.exclude === undefined) stats.noEndpoint++;
    else stats.connectFailed++;
    reset(this.client);
  }

  /** Connected: bytes go both ways from now on. */
  connected(): void {
    const upstream = this.upstream as Socket;
    const client = this.client;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.connecting = false;
    this.established = true;
    this.rttMs = performance.now() - this.rttMs;
    this.route.pool.succeeded(this.u as Upstream);
    const es = this.es as EndpointStats;
    es.connections++;
    es.active++;
    client.on('data', onClientData);
    client.on('end', onClientEnd);
    client.on('drain', onClientDrain);
    upstream.on('end', onUpstreamEnd);
    upstream.on('drain', onUpstreamDrain);
    if (this.route.idleTimeoutMs > 0) idleSweep(this.route.idleTimeoutMs).add(this);
    client.resume();
  }

  /** One side closed: the other follows, unless both of its directions are done already (it is flushing its last bytes and closes by itself). */
  follow(other: Socket | undefined): void {
    if (other && !other.destroyed && !(other.readableEnded && other.writableEnded)) other.destroy();
  }

  /** After each close: once nothing is left open, everything it held is given back. */
  closed(): void {
    if (this.released || !this.clientClosed || this.connecting || this.timer !== undefined) return;
    if (this.established && !this.upstreamClosed) return;
    this.released = true;
    const { route } = this;
    route.stats.active--;
    route.breaker.release('connections');
    if (this.established) {
      (this.es as EndpointStats).active--;
      this.balancer?.ended(this.u as Upstream, this.rttMs);
      if (route.idleTimeoutMs > 0) idleSweep(route.idleTimeoutMs).delete(this);
    }
    this.listener.release(this);
  }

  /** Nothing went through either way for the idle timeout. */
  idle(): void {
    this.route.stats.idleTimeouts++;
    this.client.destroy();
    this.upstream?.destroy();
  }
}

// --- the shared handlers: `this` is the socket; its connection is socket[kConn] ---

function onUpstreamConnect(this: TcpSocket): void {
  const conn = this[kConn];
  if (conn.upstream === this && conn.connecting) conn.connected();
}

function onUpstreamError(this: TcpSocket, err: Error): void {
  const conn = this[kConn];
  if (conn.upstream !== this) return; // a failed try's socket
  if (conn.connecting) conn.connectFailed(err.message);
  else reset(conn.client);
}

function onUpstreamClose(this: TcpSocket): void {
  const conn = this[kConn];
  if (conn.upstream !== this) return; // a failed try's socket
  if (conn.connecting) {
    // Destroyed while connecting: the client went (its close aborts the try) or destroy().
    conn.connectFailed('connection closed');
    return;
  }
  conn.upstreamClosed = true;
  conn.follow(conn.client);
  conn.closed();
}

function onClientError(this: TcpSocket): void {
  // The 'close' that follows is what counts; an established upstream is reset with it.
  const conn = this[kConn];
  if (conn.established && conn.upstream) reset(conn.upstream);
}

function onClientClose(this: TcpSocket): void {
  const conn = this[kConn];
  conn.clientClosed = true;
  if (conn.timer !== undefined && !conn.connecting) {
    // In the back-off before a retry: no try is made.
    clearTimeout(conn.timer);
    conn.timer = undefined;
  }
  if (conn.connecting) {
    // The try in progress ends with the client; its close reports it (connectFailed).
    conn.upstream?.destroy();
    return;
  }
  if (conn.established) conn.follow(conn.upstream);
  conn.closed();
}

function onClientData(this: TcpSocket, chunk: Buffer): void {
  const conn = this[kConn];
  conn.activity++;
  (conn.es as EndpointStats).bytesIn += chunk.length;
  if (!(conn.upstream as Socket).write(chunk)) this.pause();
}

function onUpstreamRead(this: TcpSocket, n: number, buf: Uint8Array): boolean {
  const conn = this[kConn];
  conn.activity++;
  (conn.es as EndpointStats).bytesOut += n;
  // The buffer is read into again by the next read of any upstream: the client socket gets a copy
  // (from Node's buffer pool when small), as the stream path would have allocated one per read.
  // False pauses this socket until the client drains.
  return conn.client.write(Buffer.copyBytesFrom(buf, 0, n));
}

function onClientEnd(this: TcpSocket): void {
  passFin(this[kConn].upstream);
}

function onUpstreamEnd(this: TcpSocket): void {
  passFin(this[kConn].client);
}

/**
 * The FIN of one side goes on to `other`. When `other` has sent its own FIN already and holds no
 * write, this is the last step of the connection: closing its socket sends that FIN (nothing is
 * left unread, so the close is an orderly one, not a reset) without a shutdown() before it.
 */
function passFin(other: Socket | undefined): void {
  if (!other) return;
  if (other.readableEnded && other.writableLength === 0) other.destroy();
  else other.end();
}

function onClientDrain(this: TcpSocket): void {
  this[kConn].upstream?.resume();
}

function onUpstreamDrain(this: TcpSocket): void {
  this[kConn].client.resume();
}

/**
 * The idle timeout of every connection with one timeout value: one interval, an eighth of the
 * timeout, that closes a connection after eight sweeps in a row saw no chunk go through it. A
 * connection is closed between the timeout and an eighth more after its last byte; the interval
 * runs only while connections are open, so an idle proxy does not wake up for it.
 */
const SWEEPS = 8;

/** What the idle sweep reads and calls on a connection. */
export interface Sweepable {
  /** Chunks either way so far. */
  activity: number;
  /** `activity` at the last sweep, and how many sweeps in a row saw it unchanged. */
  seen: number;
  quiet: number;
  /** Nothing went through for the timeout: close it (and count it). */
  idle(): void;
}

class IdleSweep {
  readonly #connections = new Set<Sweepable>();
  readonly #everyMs: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(timeoutMs: number) {
    this.#everyMs = Math.max(1, timeoutMs / SWEEPS);
  }

  add(conn: Sweepable): void {
    conn.seen = conn.activity;
    conn.quiet = 0;
    this.#connections.add(conn);
    if (!this.#timer) {
      this.#timer = setInterval(() => this.#sweep(), this.#everyMs);
      this.#timer.unref();
    }
  }

  delete(conn: Sweepable): void {
    this.#connections.delete(conn);
    if (this.#connections.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  #sweep(): void {
    for (const conn of this.#connections) {
      if (conn.activity !== conn.seen) {
        conn.seen = conn.activity;
        conn.quiet = 0;
      } else if (++conn.quiet >= SWEEPS) {
        this.#connections.delete(conn);
        conn.idle();
      }
    }
  }
}

const sweeps = new Map<number, IdleSweep>();
export function idleSweep(timeoutMs: number): IdleSweep {
  let sweep = sweeps.get(timeoutMs);
  if (!sweep) {
    sweep = new IdleSweep(timeoutMs);
    sweeps.set(timeoutMs, sweep);
  }
  return sweep;
}

/**
 * Serves one accepted client connection (paused, as pauseOnConnect leaves it) of a `tcp` port
 * through `route`; it calls `listener.release()` when both sides are closed. Over the Service's
 * maxConnections: undefined, and the listener resets the client.
 */
export function serveTcp(
  client: Socket,
  route: TcpRoute,
  log: Logger,
  listener: PortListener,
): Served | undefined {
  const { stats } = route;
  stats.accepted++;
  if (!route.breaker.tryAcquire('connections')) {
    stats.overflows.connections++;
    return undefined;
  }
  stats.active++;
  const conn = new TcpConnection(client, route, log, listener);
  (client as TcpSocket)[kConn] = conn;
  client.on('error', onClientError);
  client.on('close', onClientClose);
  conn.next();
  return conn;
}
