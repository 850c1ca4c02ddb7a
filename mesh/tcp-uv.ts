/**
 * The `tcp` path (tcp.ts has the contract) on libuv's TCP handles directly (uv-tcp.ts): the same
 * steps, breaker, pick, connect with retries, then bytes both ways, without a net.Socket on either
 * side. Per side it keeps what a stream would: a read end of file seen, writes in flight, a FIN
 * sent.
 *
 * - Backpressure: a write the kernel cannot take at once stops reading the side it came from
 *   until it is done (one chunk in flight per direction at most).
 * - Half-close: the end of one side's bytes (its FIN) is passed on with shutdown(), which libuv
 *   does after the writes in flight; the other direction goes on. Once both sides' bytes ended
 *   and nothing is in flight, both sockets are closed (an orderly close: nothing is unread).
 * - An error on one side (a read, a write, a shutdown) resets the other and closes it.
 * - Idle timeout: the shared sweep of tcp.ts; destroy() (drain timeout, stop) closes both.
 */
import type { Logger } from '../kube/index.ts';
import type { Upstream } from './endpoints.ts';
import type { PortListener, Served } from './listener.ts';
import type { EndpointStats } from './metrics.ts';
import { idleSweep, type TcpRoute, TcpTries } from './tcp.ts';
import {
  errorName,
  newConnectReq,
  newShutdownReq,
  newSocket,
  readInto,
  readResult,
  UV_EOF,
  type UvConnectReq,
  type UvShutdownReq,
  type UvTcp,
  type UvWriteReq,
  write,
} from './uv-tcp.ts';

/** Every handle of this path reads into it; a read's bytes are copied out before the next read. */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

const CLIENT = 0;
const UPSTREAM = 1;

class UvConnection extends TcpTries {
  readonly client: UvTcp;
  upstream: UvTcp | undefined = undefined;
  /** Both handles closed (or reset): nothing more happens. */
  ended = false;
  /** Per side (CLIENT, UPSTREAM): its bytes ended (a FIN read), writes to it in flight. */
  eof0 = false;
  eof1 = false;
  pending0 = 0;
  pending1 = 0;
  /** Per side: a shutdown (our FIN) in flight; libuv cannot reset a socket then, only close it. */
  shutting0 = false;
  shutting1 = false;

  constructor(client: UvTcp, route: TcpRoute, log: Logger, listener: PortListener) {
    super(route, log, listener);
    this.client = client;
  }

  get gone(): boolean {
    return this.ended;
  }

  clientAddress(): string {
    const peer: { address?: string } = {};
    this.client.getpeername(peer);
    return peer.address ?? '';
  }

  destroy(): void {
    this.close(false);
  }

  drain(): void {}

  idle(): void {
    if (this.ended) return;
    this.route.stats.idleTimeouts++;
    this.close(false);
  }

  dial(u: Upstream): string | undefined {
    const upstream = newSocket();
    upstream.owner = this;
    upstream.setNoDelay(true);
    this.upstream = upstream;
    const req = newConnectReq();
    req.oncomplete = onConnected;
    req.owner = this;
    const err = upstream.connect(req, u.address, u.port);
    return err === 0 ? undefined : errorName(err);
  }

  dropTry(): void {
    this.upstream?.close();
    this.upstream = undefined;
  }

  afterGone(): void {}

  giveUp(): void {
    if (this.ended) return;
    const { stats } = this.route;
    if (this.exclude === undefined) stats.noEndpoint++;
    else stats.connectFailed++;
    this.close(true);
  }

  connected(): void {
    const upstream = this.upstream as UvTcp;
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
    if (this.route.idleTimeoutMs > 0) idleSweep(this.route.idleTimeoutMs).add(this);
    client.onread = onClientRead;
    upstream.onread = onUpstreamRead;
    readInto(client, READ_BUFFER);
    readInto(upstream, READ_BUFFER);
    const err = client.readStart() || upstream.readStart();
    if (err !== 0) this.failed(CLIENT);
  }

  /** `n` bytes (in READ_BUFFER) came from `from`: they go to the other side. */
  forward(from: number, n: number): void {
    this.activity++;
    const es = this.es as EndpointStats;
    const to = from === CLIENT ? (this.upstream as UvTcp) : this.client;
    if (from === CLIENT) es.bytesIn += n;
    else es.bytesOut += n;
    const result = write(to, Buffer.copyBytesFrom(READ_BUFFER, 0, n), this, 1 - from, onWritten);
    if (result === 0) return;
    if (result < 0) {
      this.failed(1 - from);
      return;
    }
    // In flight: no more reading from `from` until it is written.
    if (from === CLIENT) this.pending1++;
    else this.pending0++;
    (from === CLIENT ? this.client : (this.upstream as UvTcp)).readStop();
  }

  /** A write in flight to `to` is done. */
  written(to: number, status: number): void {
    if (this.ended) return;
    if (status < 0) {
      this.failed(to);
      return;
    }
    const pending = to === CLIENT ? --this.pending0 : --this.pending1;
    if (pending > 0) return;
    if (this.eof0 && this.eof1) {
      if (this.pending0 === 0 && this.pending1 === 0) this.close(false);
      return;
    }
    // Read again from the side that was waiting for it, unless its bytes ended.
    const from = 1 - to;
    if (from === CLIENT ? !this.eof0 : !this.eof1) {
      const err = (from === CLIENT ? this.client : (this.upstream as UvTcp)).readStart();
      if (err !== 0) this.failed(from);
    }
  }

  /** `side` sent its FIN: passed on to the other side, or, both ended, the connection closes. */
  end(side: number): void {
    if (side === CLIENT) this.eof0 = true;
    else this.eof1 = true;
    if (this.eof0 && this.eof1) {
      // Both directions ended: close both once nothing is in flight (the close sends what FIN is
      // still owed; nothing is unread, so it is no reset).
      if (this.pending0 === 0 && this.pending1 === 0) this.close(false);
      return;
    }
    const other = side === CLIENT ? (this.upstream as UvTcp) : this.client;
    const req = newShutdownReq();
    req.oncomplete = onShutdown;
    req.owner = this;
    req.side = 1 - side;
    if (side === CLIENT) this.shutting1 = true;
    else this.shutting0 = true;
    const err = other.shutdown(req);
    if (err !== 0) this.failed(1 - side);
  }

  shutdownDone(side: number, status: number): void {
    if (side === CLIENT) this.shutting0 = false;
    else this.shutting1 = false;
    if (status < 0 && !this.ended) this.failed(side);
  }

  /** An error on `side`: the other side is reset, and both are closed. */
  failed(side: number): void {
    if (this.ended) return;
    this.ended = true;
    const other = side === CLIENT ? this.upstream : this.client;
    const self = side === CLIENT ? this.client : this.upstream;
    if (other) {
      if (side === CLIENT ? this.shutting1 : this.shutting0) other.close();
      else other.reset();
    }
    self?.close();
    this.finish();
  }

  /** Closes both (reset: with a reset, as to a client nothing could be forwarded for). */
  close(reset: boolean): void {
    if (this.ended) return;
    this.ended = true;
    if (this.connecting) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.connecting = false;
      this.balancer?.ended(this.u as Upstream, this.route.connectTimeoutMs);
    } else if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (reset) this.client.reset();
    else this.client.close();
    this.upstream?.close();
    this.finish();
  }

  /** Both handles are closed: what the connection held is given back. */
  finish(): void {
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
}

// --- shared callbacks: `this` is the handle or the request; the connection is its owner ---

function onConnected(this: UvConnectReq, status: number, handle: UvTcp): void {
  const conn = this.owner as UvConnection;
  // A try given up on (timed out, or the connection closed) reports here too (ECANCELED).
  if (conn.upstream !== handle || !conn.connecting || conn.ended) return;
  if (status < 0) conn.connectFailed(errorName(status));
  else conn.connected();
}

function onClientRead(this: UvTcp): void {
  read(this.owner as UvConnection, CLIENT);
}

function onUpstreamRead(this: UvTcp): void {
  read(this.owner as UvConnection, UPSTREAM);
}

function read(conn: UvConnection, side: number): void {
  if (conn.ended) return;
  const n = readResult();
  if (n > 0) conn.forward(side, n);
  else if (n === UV_EOF) conn.end(side);
  else if (n < 0) conn.failed(side);
}

function onWritten(this: UvWriteReq, status: number): void {
  this.buffer = undefined;
  (this.owner as UvConnection).written(this.side as number, status);
}

function onShutdown(this: UvShutdownReq, status: number): void {
  (this.owner as UvConnection).shutdownDone(this.side as number, status);
}

/**
 * Serves one accepted client handle (not reading yet) of a `tcp` port through `route`; it calls
 * `listener.release()` once it closed both sides. Over the Service's maxConnections: undefined,
 * and the listener resets the client.
 */
export function serveTcpUv(
  client: UvTcp,
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
  client.setNoDelay(true);
  const conn = new UvConnection(client, route, log, listener);
  client.owner = conn;
  conn.next();
  return conn;
}
