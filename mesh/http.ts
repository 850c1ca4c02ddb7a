/**
 * The `http` side of the proxy (docs/DESIGN.md §6.1): HTTP/1.1 requests on a client connection
 * balanced one by one over keep-alive connections to the endpoints.
 *
 * Per request: the head is parsed (http1.ts; malformed → 400, over 64 KiB → 431, nothing
 * forwarded, connection closed); the Service's `maxRequests` breaker; an endpoint from the pool
 * (the policy, outlier selection, a retry avoids the endpoints that failed it); an idle
 * connection to it or a new one (`maxPendingRequests` while connecting, `maxConnections` in all,
 * waiting for a free one when all are busy); the head rewritten (hop-by-hop fields dropped,
 * X-Forwarded-For appended) and the body streamed as it comes, never buffered whole; the response
 * head parsed, the body streamed back with backpressure both ways. A request body is kept in
 * memory only while it may still be sent again (up to 64 KiB, idempotent methods).
 *
 * Retries (`retries.retryOn`): connect-failure for any method (no byte was sent); reset, 5xx,
 * gateway-error (502/503/504) and per-try timeouts only for idempotent methods (their bytes were
 * sent), and only before any byte of the response reached the client; within `attempts`,
 * `maxRetries` and the retry budget (`budgetPercent` of active requests, at least 3), after
 * Envoy's jittered back-off. `timeoutMs` bounds the whole exchange, retries included (504 before
 * the response head, a cut connection after); `perTryTimeoutMs` bounds each try until its
 * response head.
 *
 * Upgrade requests (WebSocket) get a connection of their own and become a two-way tunnel once
 * the head is sent; never retried. Requests are served one at a time per client connection
 * (pipelined ones wait in the buffer, as RFC 9112 §9.3.2 allows).
 */
import type { Logger } from '../kube/index.ts';
import type { Balancer } from './balancer.ts';
import type { Upstream } from './endpoints.ts';
import { type Conn, type ConnSink, connectSocket, connectUv, tunnel } from './http-conn.ts';
import {
  type BodyEnd,
  bodyEnd,
  cookieValue,
  encodeRequestHead,
  encodeResponseHead,
  fieldValue,
  isIdempotent,
  localResponse,
  MAX_HEAD_BYTES,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
  type ResponseHead,
} from './http1.ts';
import { type CircuitBreaker, type Limit, OVERFLOW_HEADER, retryAllowed, retryBackoffMs } from './limits.ts';
import type { Served } from './listener.ts';
import { countResponse, type EndpointStats, type LocalReason, type PortStats } from './metrics.ts';
import type { Pool } from './pool.ts';
import { ConnectError } from './tcp.ts';
import { available as uvAvailable } from './uv-tcp.ts';

/** The failures `retries.retryOn` names. */
export type RetryOn = 'connect-failure' | 'reset' | '5xx' | 'gateway-error';

/** What a request needs of its Service port, read when its head arrives. */
export interface HttpRoute {
  pool: Pool;
  connections: UpstreamConnections;
  breaker: CircuitBreaker;
  /** Tries after the first. */
  attempts: number;
  retryOn: ReadonlySet<RetryOn>;
  /** Until the response head of each try; undefined: only the overall timeout. */
  perTryTimeoutMs: number | undefined;
  budgetPercent: number;
  /** The whole exchange, retries included. */
  timeoutMs: number;
  connectTimeoutMs: number;
  /** A client connection with nothing going on for this long is closed; 0: never. */
  idleTimeoutMs: number;
  /** Host field for an HTTP/1.0 request without one: virtualIP:port. */
  authority: string;
  /** ring-hash: hash this request header or cookie (else, and without it, the client address). */
  hashOn: { header?: string | undefined; cookie?: string | undefined } | undefined;
  /** "Service ns/name port p", for the proxy's own answers. */
  describe: string;
  stats: PortStats;
  endpointStats(u: Upstream): EndpointStats;
  onEjected(u: Upstream, cause: string): void;
}

/** A response head and the body bytes that came with it go out as one buffer up to this size. */
const COALESCE_BYTES = 16 * 1024;
/** Bytes of a request body kept so that it can be sent again on a retry. */
const MAX_REPLAY_BYTES = 64 * 1024;
/** An idle upstream connection older than this is closed, below Node's 5 s keepAliveTimeout. */
export const UPSTREAM_IDLE_MS = 4_000;

// --- upstream connections ---------------------------------------------------------------------

/** What an upstream connection reports to the exchange using it. */
interface ConnOwner {
  upstreamData(chunk: Buffer): void;
  upstreamDrain(): void;
  upstreamClosed(): void;
}

/** New upstream connections: on libuv's handles when Node has them (http-conn.ts), else net.Socket. */
const connectConn = uvAvailable ? connectUv : connectSocket;

export class UpstreamConn implements ConnSink {
  readonly conn: Conn;
  readonly upstream: Upstream;
  readonly #breaker: CircuitBreaker;
  readonly #onGone: (c: UpstreamConn) => void;
  owner: ConnOwner | undefined;
  /** performance.now() when it went idle. */
  idleSince = 0;
  /** Requests it has carried. */
  uses = 0;
  #closed = false;

  constructor(conn: Conn, upstream: Upstream, breaker: CircuitBreaker, onGone: (c: UpstreamConn) => void) {
    this.conn = conn;
    this.upstream = upstream;
    this.#breaker = breaker;
    this.#onGone = onGone;
    conn.sink = this;
    conn.resume();
  }

  connData(chunk: Buffer): void {
    if (this.owner) this.owner.upstreamData(chunk);
    else this.destroy(); // bytes on an idle connection: nothing to give them to
  }

  connEnd(): void {
    this.destroy();
  }

  connDrain(): void {
    this.owner?.upstreamDrain();
  }

  connClosed(): void {
    this.destroy();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Closes it (idempotent); its owner hears of it; its unit of maxConnections is given back. */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.conn.destroy();
    this.#breaker.release('connections');
    const owner = this.owner;
    this.owner = undefined;
    this.#onGone(this);
    owner?.upstreamClosed();
  }

  /**
   * Hands the connection over as a tunnel: no more parsing; it still counts (maxConnections)
   * until it closes, and the tunnel's sink must call `tunnelClosed()` then.
   */
  detach(): Conn {
    this.owner = undefined;
    this.conn.sink = undefined;
    return this.conn;
  }

  /** The tunnel this connection was handed to closed it. */
  tunnelClosed(): void {
    this.conn.sink = this;
    this.destroy();
  }
}

export class Overflow extends Error {
  readonly limit: Limit;
  constructor(limit: Limit) {
    super(`circuit breaker: ${limit}`);
    this.limit = limit;
  }
}

/**
 * The keep-alive connections of one Service port to its endpoints: idle ones by endpoint (last
 * used first), new ones within the Service's maxConnections and maxPendingRequests, and a queue
 * of requests waiting for a connection when all of them are busy.
 */
export class UpstreamConnections {
  readonly #idle = new Map<string, UpstreamConn[]>();
  readonly #waiting = new Set<() => void>();
  #sweep: NodeJS.Timeout | undefined;
  #closed = false;

  /** An idle connection to `u`, now taken by the caller, or undefined. */
  takeIdle(u: Upstream, now = performance.now()): UpstreamConn | undefined {
    const list = this.#idle.get(u.id);
    if (!list) return undefined;
    while (list.length > 0) {
      const c = list.pop() as UpstreamConn;
      if (c.closed) continue;
      if (now - c.idleSince > UPSTREAM_IDLE_MS) {
        c.destroy();
        continue;
      }
      return c;
    }
    this.#idle.delete(u.id);
    return undefined;
  }

  /** A connection is done with its request and may carry another. */
  release(c: UpstreamConn, now = performance.now()): void {
    if (c.closed) return;
    if (this.#closed) {
      c.destroy();
      return;
    }
    c.owner = undefined;
    c.idleSince = now;
    let list = this.#idle.get(c.upstream.id);
    if (!list) {
      list = [];
      this.#idle.set(c.upstream.id, list);
    }
    list.push(c);
    this.#wake();
    if (!this.#sweep) {
      this.#sweep = setInterval(() => this.#sweepIdle(), UPSTREAM_IDLE_MS);
      this.#sweep.unref();
    }
  }

  /**
   * A new connection to `u`, counted in `pending-requests` until it is made and in `connections`
   * until it closes. At maxConnections, an idle connection to another endpoint is closed to make
   * room, or else the request waits for one to be freed (until `signal`). Rejects with Overflow,
   * ConnectError, or an abort.
   */
  async open(
    u: Upstream,
    breaker: CircuitBreaker,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<UpstreamConn> {
    if (!breaker.tryAcquire('pending-requests')) throw new Overflow('pending-requests');
    try {
      while (!breaker.tryAcquire('connections')) {
        if (this.#closeOneIdle()) continue;
        await this.#waitForRoom(signal);
      }
      let conn: Conn;
      try {
        conn = await connectConn(u.address, u.port, timeoutMs, signal);
      } catch (err) {
        breaker.release('connections');
        this.#wake();
        throw err;
      }
      return new UpstreamConn(conn, u, breaker, this.#goneFn);
    } finally {
      breaker.release('pending-requests');
    }
  }

  /** Connections idle now (tests, /healthz). */
  get idle(): number {
    let n = 0;
    for (const list of this.#idle.values()) n += list.length;
    return n;
  }

  /** Closes the idle connections and those released from now on. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const list of this.#idle.values()) for (const c of [...list]) c.destroy();
    this.#idle.clear();
    for (const wake of this.#waiting) wake();
  }

  readonly #goneFn = (c: UpstreamConn) => this.#gone(c);

  #gone(c: UpstreamConn): void {
    const list = this.#idle.get(c.upstream.id);
    if (list) {
      const i = list.indexOf(c);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.#idle.delete(c.upstream.id);
    }
    this.#wake();
  }

  #wake(): void {
    const first = this.#waiting.values().next();
    if (!first.done) {
      this.#waiting.delete(first.value);
      first.value();
    }
  }

  #waitForRoom(signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted || this.#closed) return reject(new ConnectError('ABORTED', 'request ended'));
      const wake = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        this.#waiting.delete(wake);
        reject(new ConnectError('ABORTED', 'request ended'));
      };
      this.#waiting.add(wake);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Closes the least recently used idle connection; false when there is none. */
  #closeOneIdle(): boolean {
    let oldest: UpstreamConn | undefined;
    for (const list of this.#idle.values()) {
      const c = list[0];
      if (c && (!oldest || c.idleSince < oldest.idleSince)) oldest = c;
    }
    oldest?.destroy();
    return oldest !== undefined;
  }

  #sweepIdle(): void {
    const now = performance.now();
    for (const list of this.#idle.values())
      for (const c of [...list]) if (now - c.idleSince > UPSTREAM_IDLE_MS) c.destroy();
    if (this.#idle.size === 0) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }
}

/** The ring-hash key of a request: its hashOn header or cookie, else the client's address. */
export function hashKey(route: Pick<HttpRoute, 'hashOn'>, head: RequestHead, clientAddress: string): string {
  const on = route.hashOn;
  if (!on) return clientAddress;
  const value = on.header
    ? fieldValue(head, on.header)
    : on.cookie
      ? cookieValue(head, on.cookie)
      : undefined;
  return value ?? clientAddress;
}

// --- one client connection --------------------------------------------------------------------

type Failure = 'connect-failure' | 'reset' | 'timeout' | 'bad-response';

const FAILURE_TEXT: Record<Failure, string> = {
  'connect-failure': 'could not connect to an endpoint',
  reset: 'the endpoint closed the connection before answering',
  timeout: 'the endpoint did not answer in time',
  'bad-response': 'the endpoint sent a malformed response',
};

/** The header of a 502 or 504 the proxy makes, naming the failure. */
export const FAILURE_HEADER = 'x-orrery-upstream-failure';

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
};

const REASON_OF: Record<Failure, LocalReason> = {
  'connect-failure': 'connect-failed',
  reset: 'reset',
  timeout: 'timeout',
  'bad-response': 'bad-response',
};

/** One request in flight and its tries. */
interface Exchange {
  head: RequestHead;
  route: HttpRoute;
  t0: number;
  /** Where the request body ends; undefined once it has. */
  body: BodyEnd | undefined;
  /** The body bytes received and kept (to send on a connection not yet made, or again on a retry). */
  kept: Buffer[] | undefined;
  keptBytes: number;
  /** The request may be sent again after its bytes were sent (idempotent, body kept whole). */
  replayable: boolean;
  /** What ring-hash hashes for this request (the same for its retries). */
  key: string;
  attempt: number;
  /** Endpoints that failed this request; undefined until one did. */
  exclude: Set<string> | undefined;
  /** Holds a unit of maxRequests. */
  holdsRequest: boolean;
  /** Holds a unit of maxRetries (from its first retry to its end). */
  holdsRetry: boolean;
  abort: AbortController | undefined;
  // The current try.
  u: Upstream | undefined;
  es: EndpointStats | undefined;
  /** The balancer the try started on (the Service may change its policy meanwhile). */
  balancer: Balancer<Upstream> | undefined;
  conn: UpstreamConn | undefined;
  tryStart: number;
  /** performance.now() when the current try's perTryTimeoutMs runs out (Infinity: none, or its head came). */
  tryDue: number;
  /** The back-off before a retry. */
  retryTimer: NodeJS.Timeout | undefined;
  /** The current try went on a connection that had carried requests before. */
  reused: boolean;
  /** Response bytes not yet parsed (a head in parts). */
  resBuf: Buffer | undefined;
  res: ResponseHead | undefined;
  resBody: BodyEnd | undefined;
  /** Some byte of a response (interim included) went to the client: no retry from here on. */
  answered: boolean;
  /** The client connection closes after this response. */
  closeAfter: boolean;
  lastFailure: Failure | undefined;
}

class HttpSession implements ConnOwner, ConnSink, Served {
  readonly #client: Conn;
  readonly #route: () => HttpRoute | undefined;
  readonly #log: Logger;
  readonly #clientAddress: string;
  /** Bytes from the client not yet parsed (the next request's head, pipelined requests). */
  #in: Buffer | undefined;
  #x: Exchange | undefined;
  #parsing = false;
  #draining = false;
  /** No more requests on this connection (it is closing). */
  #closed = false;
  #tunnel = false;
  /** The client sent its FIN. */
  #clientEof = false;
  /** The response's connection is paused until the client drains. */
  #upstreamPaused = false;
  #clientPaused = false;
  /** The overall timeout's timer (#armDeadline) and its duration. */
  #timer: NodeJS.Timeout | undefined;
  /** performance.now() when #timer is due. */
  #timerDue = 0;
  readonly #onClosed: (s: HttpSession) => void;

  constructor(
    client: Conn,
    route: () => HttpRoute | undefined,
    log: Logger,
    onClosed: (s: HttpSession) => void,
  ) {
    this.#client = client;
    this.#route = route;
    this.#log = log;
    this.#onClosed = onClosed;
    this.#clientAddress = client.remoteAddress;
    client.sink = this;
    const idle = route()?.idleTimeoutMs ?? 0;
    if (idle > 0) client.setIdleTimeout(idle);
    client.resume();
  }

  // ConnSink: the client connection.
  connData(chunk: Buffer): void {
    this.#clientData(chunk);
  }

  connEnd(): void {
    this.#clientEof = true;
    if (this.#tunnel) return; // passed on once the tunnel is up
    // The client is done sending: after the response in flight, if any, the connection ends.
    if (this.#x) this.#x.closeAfter = true;
    else this.#close();
  }

  connDrain(): void {
    if (this.#upstreamPaused) {
      this.#upstreamPaused = false;
      this.#x?.conn?.conn.resume();
    }
  }

  connClosed(): void {
    this.#clientClosed();
    this.#onClosed(this);
  }

  /** The current try's connection took all that was written to it. */
  upstreamDrain(): void {
    this.#resumeClient();
  }

  destroy(): void {
    this.#client.destroy();
  }

  drain(): void {
    this.#draining = true;
    if (this.#x) this.#x.closeAfter = true;
    else if (!this.#tunnel) this.#close();
  }

  /** Ends the client connection after what was written (a FIN, then close). */
  #close(): void {
    this.#closed = true;
    this.#in = undefined;
    this.#client.end();
    // Read on (dropping what comes) until the client's FIN, so that the connection closes in order.
    this.#clientPaused = false;
    this.#client.resume();
  }

  // --- client side ---

  #clientData(chunk: Buffer): void {
    if (this.#tunnel || this.#closed) return;
    const x = this.#x;
    if (x?.body) {
      const end = x.body.feed(chunk, 0);
      if (x.body.error) {
        this.#badRequestBody(x);
        return;
      }
      if (end < 0) {
        this.#bodyBytes(x, chunk);
        return;
      }
      if (end > 0) this.#bodyBytes(x, chunk.subarray(0, end));
      x.body = undefined;
      if (end < chunk.length) this.#buffer(chunk.subarray(end));
      return;
    }
    this.#buffer(chunk);
    if (!this.#x) this.#next();
  }

  /** Keeps bytes for the next request; stops reading while too many wait. */
  #buffer(chunk: Buffer): void {
    this.#in = this.#in ? Buffer.concat([this.#in, chunk]) : chunk;
    if (this.#x && this.#in.length > MAX_HEAD_BYTES) this.#pauseClient();
  }

  #pauseClient(): void {
    if (!this.#clientPaused) {
      this.#clientPaused = true;
      this.#client.pause();
    }
  }

  #resumeClient(): void {
    if (this.#clientPaused) {
      this.#clientPaused = false;
      this.#client.resume();
    }
  }

  /** Parses and starts the requests waiting in the buffer, one at a time. */
  #next(): void {
    if (this.#parsing) return;
    this.#parsing = true;
    try {
      while (!this.#x && this.#in && !this.#closed && !this.#tunnel) {
        const r = parseRequestHead(this.#in);
        if (!r.ok) {
          if (r.incomplete) return;
          const stats = this.#route()?.stats;
          if (stats) {
            stats.localResponses['bad-request']++;
            countResponse(stats, r.status);
          }
          this.#log.debug({ client: this.#clientAddress, err: r.reason, status: r.status }, 'bad request');
          this.#client.write(
            Buffer.from(
              localResponse(r.status, STATUS_TEXT[r.status] ?? '', `${r.reason}\n`, { close: true }),
            ),
          );
          this.#close();
          return;
        }
        const rest = r.size < this.#in.length ? this.#in.subarray(r.size) : undefined;
        this.#in = undefined;
        this.#start(r.head, rest);
      }
    } finally {
      this.#parsing = false;
    }
  }

  #start(head: RequestHead, rest: Buffer | undefined): void {
    const route = this.#route();
    if (!route) {
      this.#client.write(
        Buffer.from(
          localResponse(503, 'Service Unavailable', 'the Service port is no longer served\n', {
            close: true,
          }),
        ),
      );
      this.#close();
      return;
    }
    const x: Exchange = {
      head,
      route,
      t0: performance.now(),
      body: head.framing.kind === 'none' ? undefined : bodyEnd(head.framing),
      kept: undefined,
      keptBytes: 0,
      replayable: isIdempotent(head.method),
      key: hashKey(route, head, this.#clientAddress),
      attempt: 0,
      exclude: undefined,
      holdsRequest: false,
      holdsRetry: false,
      abort: undefined,
      u: undefined,
      es: undefined,
      balancer: undefined,
      conn: undefined,
      tryStart: 0,
      tryDue: Number.POSITIVE_INFINITY,
      retryTimer: undefined,
      reused: false,
      resBuf: undefined,
      res: undefined,
      resBody: undefined,
      answered: false,
      closeAfter: !head.keepAlive || this.#draining,
      lastFailure: undefined,
    };
    this.#x = x;
    route.stats.activeRequests++;
    if (head.upgrade) {
      this.#startTunnel(x, rest);
      return;
    }
    if (!route.breaker.tryAcquire('requests')) {
      route.stats.overflows.requests++;
      this.#overflow(x, 'requests');
      return;
    }
    x.holdsRequest = true;
    this.#armTimer(x.t0 + route.timeoutMs);
    if (rest) this.#clientData(rest);
    if (this.#x === x && !x.conn) this.#try(x);
  }

  #bodyBytes(x: Exchange, chunk: Buffer): void {
    if (!x.conn || x.replayable) {
      if (!x.kept) x.kept = [];
      x.kept.push(chunk);
      x.keptBytes += chunk.length;
      if (x.keptBytes > MAX_REPLAY_BYTES) {
        x.replayable = false;
        // Not connected yet: wait for the connection before reading more.
        if (!x.conn) this.#pauseClient();
      }
    }
    if (x.conn) {
      if (!x.replayable) x.kept = undefined;
      if (!x.conn.conn.write(chunk)) this.#pauseClient(); // upstreamDrain resumes it
    }
  }

  #badRequestBody(x: Exchange): void {
    x.route.stats.localResponses['bad-request']++;
    this.#log.debug({ client: this.#clientAddress, err: x.body?.error }, 'malformed request body');
    if (x.answered) {
      this.#abortAll(x);
      return;
    }
    x.closeAfter = true;
    this.#reply(x, 400, `malformed chunked body: ${x.body?.error}\n`);
  }

  // --- tries ---

  #try(x: Exchange): void {
    const { route, key } = x;
    let u = route.pool.pick(key, x.exclude);
    // Every endpoint failed this request once: a retry may go back to one.
    if (!u && x.exclude) u = route.pool.pick(key);
    if (!u) {
      if (x.lastFailure) {
        this.#failed(x, x.lastFailure);
        return;
      }
      route.stats.noEndpoint++;
      route.stats.localResponses['no-endpoint']++;
      this.#reply(x, 503, `no ready endpoint for ${route.describe}\n`);
      return;
    }
    const es = route.endpointStats(u);
    x.u = u;
    x.es = es;
    x.balancer = route.pool.balancer;
    x.balancer.started(u);
    es.requests++;
    // The first try starts with the request (the same tick); a retry when it is made.
    x.tryStart = x.attempt === 0 && x.exclude === undefined ? x.t0 : performance.now();
    if (route.perTryTimeoutMs !== undefined) {
      x.tryDue = x.tryStart + route.perTryTimeoutMs;
      this.#armTimer(x.tryDue);
    }
    const idle = route.connections.takeIdle(u, x.tryStart);
    if (idle) {
      this.#attach(x, idle);
      return;
    }
    const abort = new AbortController();
    x.abort = abort;
    route.connections.open(u, route.breaker, route.connectTimeoutMs, abort.signal).then(
      (conn) => {
        if (abort.signal.aborted || this.#x !== x || x.u !== u) {
          conn.destroy();
          return;
        }
        x.abort = undefined;
        es.connections++;
        this.#attach(x, conn);
      },
      (err: unknown) => {
        if (abort.signal.aborted || this.#x !== x || x.u !== u) return;
        x.abort = undefined;
        if (err instanceof Overflow) {
          route.stats.overflows[err.limit]++;
          this.#endTry(x);
          this.#overflow(x, err.limit);
          return;
        }
        es.connectFailures++;
        this.#log.debug({ endpoint: u.id, err: (err as Error).message }, 'connect failed');
        this.#tryFailed(x, 'connect-failure');
      },
    );
  }

  #attach(x: Exchange, conn: UpstreamConn): void {
    x.conn = conn;
    conn.owner = this;
    conn.uses++;
    x.reused = conn.uses > 1;
    const head = encodeRequestHead(x.head, this.#clientAddress, x.route.authority);
    // The head and the body bytes kept so far in one write.
    const drained = conn.conn.write(x.kept ? Buffer.concat([head, ...x.kept]) : head);
    if (!x.replayable) x.kept = undefined;
    if (drained) this.#resumeClient();
    else this.#pauseClient(); // upstreamDrain resumes it
  }

  /** Response bytes from the current try's connection. */
  upstreamData(chunk: Buffer): void {
    const x = this.#x;
    if (!x?.conn) return;
    if (x.resBody) {
      this.#responseBody(x, chunk, 0);
      return;
    }
    if (x.res) {
      // The response ended, yet bytes follow: the connection cannot be trusted again.
      this.#dropConn(x);
      return;
    }
    const buf = x.resBuf ? Buffer.concat([x.resBuf, chunk]) : chunk;
    let at = 0;
    for (;;) {
      const r = parseResponseHead(buf, at, x.head.method);
      if (!r.ok) {
        if (r.incomplete) {
          x.resBuf = at < buf.length ? buf.subarray(at) : undefined;
          return;
        }
        this.#log.debug({ endpoint: x.u?.id, err: r.reason }, 'malformed response');
        this.#tryFailed(x, 'bad-response');
        return;
      }
      const res = r.head;
      at += r.size;
      if (res.status >= 100 && res.status < 200 && res.status !== 101) {
        // Interim (100 Continue, 103 Early Hints): passed on at once; the final one follows.
        x.answered = true;
        this.#client.write(encodeResponseHead(res, undefined).buf);
        continue;
      }
      x.resBuf = undefined;
      this.#responseHead(x, res, buf, at);
      return;
    }
  }

  #responseHead(x: Exchange, res: ResponseHead, buf: Buffer, at: number): void {
    const { route } = x;
    const u = x.u as Upstream;
    const es = x.es as EndpointStats;
    // Only an Upgrade request (tunnelled, not parsed) may be answered 101.
    if (res.status === 101) {
      this.#tryFailed(x, 'bad-response');
      return;
    }
    x.tryDue = Number.POSITIVE_INFINITY;
    if (res.status >= 500) {
      es.requestErrors++;
      if (route.pool.failed(u)) {
        es.ejections++;
        route.onEjected(u, `consecutive errors, the last a ${res.status}`);
      }
      const retriable =
        route.retryOn.has('5xx') ||
        (route.retryOn.has('gateway-error') &&
          (res.status === 502 || res.status === 503 || res.status === 504));
      if (retriable && this.#mayRetry(x, true)) {
        // The answer is dropped with its connection; the retry avoids this endpoint.
        excludeFrom(x, u);
        this.#dropConn(x);
        this.#endTry(x);
        this.#scheduleRetry(x);
        return;
      }
    } else route.pool.succeeded(u);
    x.res = res;
    x.answered = true;
    if (!res.keepAlive || this.#draining) x.closeAfter = true;
    const connection = x.closeAfter ? 'close' : x.head.minor === 0 ? 'keep-alive' : undefined;
    countResponse(route.stats, res.status);
    x.resBody = res.framing.kind === 'none' ? undefined : bodyEnd(res.framing);
    if (!x.resBody) {
      this.#client.write(encodeResponseHead(res, connection).buf);
      if (at < buf.length) this.#dropConn(x); // bytes after a response without a body
      this.#finish(x);
      return;
    }
    const body = x.resBody;
    const end = at < buf.length ? body.feed(buf, at) : -1;
    if (body.error) {
      this.#log.debug({ endpoint: x.u?.id, err: body.error }, 'malformed response body');
      this.#abortAll(x);
      return;
    }
    const bodyBytes = at < buf.length ? (end < 0 ? buf.length : end) - at : 0;
    // Head and the body bytes that came with it in one buffer: one write, one syscall.
    const coalesce = bodyBytes > 0 && bodyBytes <= COALESCE_BYTES;
    const head = encodeResponseHead(res, connection, coalesce ? bodyBytes : 0);
    if (coalesce) {
      buf.copy(head.buf, head.size, at, at + bodyBytes);
      this.#sendBody(x, head.buf, end);
    } else {
      this.#client.write(head.buf);
      if (bodyBytes > 0) this.#sendBody(x, buf.subarray(at, at + bodyBytes), end);
    }
    if (end >= 0) {
      if (end < buf.length) this.#dropConn(x); // bytes after the response: not reusable
      x.resBody = undefined;
      this.#finish(x);
    }
  }

  #responseBody(x: Exchange, buf: Buffer, at: number): void {
    const body = x.resBody as BodyEnd;
    const end = body.feed(buf, at);
    if (body.error) {
      this.#log.debug({ endpoint: x.u?.id, err: body.error }, 'malformed response body');
      this.#abortAll(x);
      return;
    }
    const slice = end < 0 ? (at === 0 ? buf : buf.subarray(at)) : buf.subarray(at, end);
    if (slice.length > 0) this.#sendBody(x, slice, end);
    if (end >= 0) {
      if (end < buf.length) this.#dropConn(x); // bytes after the response: not reusable
      x.resBody = undefined;
      this.#finish(x);
    }
  }

  /** Writes response bytes to the client; a full client buffer pauses the upstream (end < 0: more to come). */
  #sendBody(x: Exchange, bytes: Buffer, end: number): void {
    if (!this.#client.write(bytes) && end < 0 && x.conn) {
      this.#upstreamPaused = true;
      x.conn.conn.pause();
    }
  }

  /** The current try's connection closed. */
  upstreamClosed(): void {
    const x = this.#x;
    if (!x) return;
    x.conn = undefined;
    if (x.res === undefined) {
      this.#tryFailed(x, 'reset');
      return;
    }
    if (x.resBody) {
      // A body read to the close ends there; any other was cut short, and the client must see that.
      if (x.res.framing.kind !== 'close') {
        this.#abortAll(x);
        return;
      }
      x.resBody = undefined;
      this.#finish(x);
    }
  }

  /**
   * The response is complete: the exchange ends. A request body still coming (an early answer)
   * cannot be skipped over: the client connection closes after the response.
   */
  #finish(x: Exchange): void {
    const { route } = x;
    if (x.body !== undefined) {
      x.closeAfter = true;
      this.#dropConn(x);
    }
    const conn = x.conn;
    x.conn = undefined;
    const now = performance.now();
    if (conn && !conn.closed) {
      if (this.#upstreamPaused) conn.conn.resume();
      if (x.res?.keepAlive) route.connections.release(conn, now);
      else conn.destroy();
    }
    this.#upstreamPaused = false;
    this.#endTry(x, now);
    route.stats.latency.observe(now - x.t0);
    this.#endExchange(x);
    this.#afterExchange(x);
  }

  #afterExchange(x: Exchange): void {
    if (x.closeAfter) {
      this.#close();
      return;
    }
    this.#resumeClient();
    this.#next();
  }

  /** Detaches the current connection and closes it (its answer, if any, is dropped). */
  #dropConn(x: Exchange): void {
    const conn = x.conn;
    x.conn = undefined;
    if (conn) {
      conn.owner = undefined;
      conn.destroy();
    }
  }

  /** The current try is over: its timer, and the balancer hears how long it took. */
  #endTry(x: Exchange, now = performance.now()): void {
    x.tryDue = Number.POSITIVE_INFINITY;
    if (x.retryTimer !== undefined) {
      clearTimeout(x.retryTimer);
      x.retryTimer = undefined;
    }
    if (x.u) x.balancer?.ended(x.u, now - x.tryStart);
    x.u = undefined;
    x.es = undefined;
  }

  /**
   * Whether another try may be made: tries left, nothing answered yet, the request can be sent
   * again (when its bytes were sent), and, when `budgeted`, within the retry budget and
   * maxRetries (a unit taken). A failed connect sent nothing anywhere: trying another endpoint
   * adds no load to one that got the request, so it is held to `attempts` only (as Linkerd's
   * balancer takes an endpoint that refuses connections out rather than retrying the request,
   * and as the tcp side's connect retries).
   */
  #mayRetry(x: Exchange, bytesSent: boolean, budgeted = bytesSent): boolean {
    const { route } = x;
    if (x.attempt >= route.attempts || x.answered) return false;
    if (bytesSent && !x.replayable) return false;
    if (!budgeted || x.holdsRetry) return true;
    if (
      !retryAllowed(route.breaker.active('requests'), route.breaker.active('retries'), route.budgetPercent) ||
      !route.breaker.tryAcquire('retries')
    ) {
      route.stats.overflows.retries++;
      return false;
    }
    x.holdsRetry = true;
    return true;
  }

  #scheduleRetry(x: Exchange): void {
    x.attempt++;
    x.route.stats.retries++;
    x.resBuf = undefined;
    x.res = undefined;
    x.resBody = undefined;
    x.retryTimer = setTimeout(
      () => {
        x.retryTimer = undefined;
        if (this.#x === x) this.#try(x);
      },
      retryBackoffMs(x.attempt - 1),
    );
  }

  /** A try failed without an answer to pass on: another try, or the client hears of it. */
  #tryFailed(x: Exchange, failure: Failure): void {
    if (this.#x !== x) return;
    if (x.answered) {
      this.#abortAll(x);
      return;
    }
    const { route } = x;
    const u = x.u;
    if (u && x.es) {
      if (failure !== 'connect-failure') x.es.requestErrors++;
      if (route.pool.failed(u)) {
        x.es.ejections++;
        route.onEjected(u, failure);
      }
      excludeFrom(x, u);
    }
    x.abort?.abort();
    x.abort = undefined;
    x.lastFailure = failure;
    this.#dropConn(x);
    this.#endTry(x);
    const retriable =
      failure === 'connect-failure'
        ? route.retryOn.has('connect-failure')
        : failure === 'reset'
          ? route.retryOn.has('reset')
          : failure === 'timeout'
            ? route.retryOn.has('5xx') || route.retryOn.has('gateway-error')
            : false;
    // Outside the retry budget: a connect that failed (nothing was sent), and a reused keep-alive
    // connection closed before any byte of the answer (the endpoint closed it while idle, or
    // died), which clients retry on their own (Go's http.Transport, undici) for idempotent
    // requests. Both are still bounded by `attempts`.
    const budgeted = failure !== 'connect-failure' && !(failure === 'reset' && x.reused && !x.resBuf);
    // A refused connect while an endpoint this request has not tried is in the pool: on to that
    // one at once, without taking one of `attempts`. The request went nowhere; the pool can hold
    // endpoints whose processes are gone until the EndpointSlices say so (a rollout replacing
    // them faster than the watch), and Linkerd's balancer likewise skips an endpoint that refuses
    // rather than failing the request. Bounded by the endpoints in the pool.
    if (
      retriable &&
      failure === 'connect-failure' &&
      !x.answered &&
      route.pool.hasUntried(x.exclude ?? new Set())
    ) {
      route.stats.retries++;
      this.#try(x);
      return;
    }
    if (retriable && this.#mayRetry(x, failure !== 'connect-failure', budgeted)) {
      this.#scheduleRetry(x);
      return;
    }
    this.#failed(x, failure);
  }

  /** No more tries: the client gets the failure. */
  #failed(x: Exchange, failure: Failure): void {
    x.route.stats.localResponses[REASON_OF[failure]]++;
    this.#reply(x, failure === 'timeout' ? 504 : 502, `${FAILURE_TEXT[failure]} (${x.route.describe})\n`, {
      [FAILURE_HEADER]: failure,
    });
  }

  #overflow(x: Exchange, limit: Limit): void {
    x.route.stats.localResponses.overflow++;
    this.#reply(x, 503, `circuit breaker open: ${limit} of ${x.route.describe}\n`, {
      [OVERFLOW_HEADER]: limit,
    });
  }

  /**
   * The request in flight needs the connection's timer by `due` (performance.now()): its overall
   * timeout, or its try's perTryTimeoutMs. One timer per connection, left running across requests
   * and tries: when it fires it looks at the request in flight then, acts on what ran out and
   * waits again for the earliest of what is left. So a request or try whose time runs out no
   * sooner than the timer is due (the common case: the same timeouts, a later start) touches no
   * timer.
   */
  #armTimer(due: number): void {
    if (this.#timer !== undefined && this.#timerDue <= due) return;
    clearTimeout(this.#timer);
    this.#timerDue = due;
    this.#timer = setTimeout(onSessionTimer, Math.max(1, due - performance.now()), this);
  }

  /** The connection's timer fired (onSessionTimer). */
  timer(): void {
    this.#timer = undefined;
    const x = this.#x;
    if (!x || x.head.upgrade) return;
    const now = performance.now();
    const deadline = x.t0 + x.route.timeoutMs;
    if (deadline - now <= 1) {
      this.#deadline(x);
    } else if (x.tryDue - now <= 1) {
      x.tryDue = Number.POSITIVE_INFINITY;
      this.#tryFailed(x, 'timeout');
    }
    // What is left of the request in flight now (this one, or the next one).
    const next = this.#x;
    if (next && !next.head.upgrade && this.#timer === undefined)
      this.#armTimer(Math.min(next.t0 + next.route.timeoutMs, next.tryDue));
  }

  /** The overall timeout. */
  #deadline(x: Exchange): void {
    if (this.#x !== x) return;
    if (x.answered) {
      this.#abortAll(x);
      return;
    }
    x.route.stats.localResponses.timeout++;
    if (x.es) x.es.requestErrors++;
    this.#reply(x, 504, `no complete answer within ${x.route.timeoutMs} ms (${x.route.describe})\n`, {
      [FAILURE_HEADER]: 'timeout',
    });
  }

  /** The proxy answers the request itself; the connection closes unless the request is complete. */
  #reply(x: Exchange, status: number, body: string, headers: Record<string, string> = {}): void {
    if (this.#x !== x) return;
    if (x.answered) {
      this.#abortAll(x);
      return;
    }
    x.answered = true;
    if (x.body !== undefined) x.closeAfter = true;
    countResponse(x.route.stats, status);
    this.#client.write(
      Buffer.from(localResponse(status, STATUS_TEXT[status] ?? '', body, { close: x.closeAfter, headers })),
    );
    this.#dropConn(x);
    this.#endTry(x);
    x.route.stats.latency.observe(performance.now() - x.t0);
    this.#endExchange(x);
    this.#afterExchange(x);
  }

  /** Something broke after the client saw part of the response: both connections are cut. */
  #abortAll(x: Exchange): void {
    this.#dropConn(x);
    this.#endTry(x);
    this.#endExchange(x);
    this.#closed = true;
    this.#client.reset();
  }

  #endExchange(x: Exchange): void {
    if (this.#x !== x) return;
    this.#x = undefined;
    clearTimeout(x.retryTimer);
    x.abort?.abort();
    x.abort = undefined;
    x.route.stats.activeRequests--;
    if (x.holdsRequest) x.route.breaker.release('requests');
    if (x.holdsRetry) x.route.breaker.release('retries');
    x.kept = undefined;
  }

  #clientClosed(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const x = this.#x;
    if (!x || this.#tunnel) return;
    this.#dropConn(x);
    this.#endTry(x);
    this.#endExchange(x);
  }

  // --- Upgrade: a connection of its own, then a tunnel ---

  #startTunnel(x: Exchange, rest: Buffer | undefined): void {
    const { route } = x;
    const u = route.pool.pick(this.#clientAddress);
    if (!u) {
      route.stats.noEndpoint++;
      route.stats.localResponses['no-endpoint']++;
      x.closeAfter = true;
      this.#reply(x, 503, `no ready endpoint for ${route.describe}\n`);
      return;
    }
    this.#tunnel = true;
    this.#pauseClient();
    const es = route.endpointStats(u);
    es.requests++;
    const balancer = route.pool.balancer;
    balancer.started(u);
    const t0 = performance.now();
    const abort = new AbortController();
    x.abort = abort;
    route.connections.open(u, route.breaker, route.connectTimeoutMs, abort.signal).then(
      (conn) => {
        if (this.#client.closed || this.#x !== x) {
          balancer.ended(u, performance.now() - t0);
          conn.destroy();
          return;
        }
        x.abort = undefined;
        route.pool.succeeded(u);
        route.stats.upgrades++;
        es.connections++;
        es.active++;
        const client = this.#client;
        const upstream = conn.detach();
        const head = encodeRequestHead(x.head, this.#clientAddress, route.authority);
        const parts = [head];
        if (rest) parts.push(rest);
        if (this.#in) parts.push(this.#in);
        this.#in = undefined;
        const drained = upstream.write(parts.length === 1 ? head : Buffer.concat(parts));
        this.#endExchange(x);
        this.#clientPaused = false;
        // Both ways from here (the client's reads wait for that first write when it is in flight).
        tunnel(client, upstream, (side) => {
          if (side === upstream) {
            es.active--;
            balancer.ended(u, performance.now() - t0);
            conn.tunnelClosed();
          } else {
            this.#clientClosed();
            this.#onClosed(this);
          }
        });
        if (!drained) client.pause();
        if (this.#clientEof) upstream.end();
      },
      (err: unknown) => {
        balancer.ended(u, route.connectTimeoutMs);
        if (this.#x !== x) return;
        x.abort = undefined;
        this.#tunnel = false;
        x.closeAfter = true;
        if (err instanceof Overflow) {
          route.stats.overflows[err.limit]++;
          this.#overflow(x, err.limit);
          return;
        }
        es.connectFailures++;
        if (route.pool.failed(u)) {
          es.ejections++;
          route.onEjected(u, 'connect-failure');
        }
        this.#failed(x, 'connect-failure');
      },
    );
  }
}

/** `u` failed the request: its retries avoid it. */
function excludeFrom(x: Exchange, u: Upstream): void {
  if (x.exclude) x.exclude.add(u.id);
  else x.exclude = new Set([u.id]);
}

function onSessionTimer(session: HttpSession): void {
  session.timer();
}

/**
 * Serves one accepted client connection (not reading yet) of an `http` port; `onClosed` is called
 * once the client connection closed (no promise per connection).
 */
export function serveHttp(
  client: Conn,
  route: () => HttpRoute | undefined,
  log: Logger,
  onClosed: (served: Served) => void,
): Served {
  return new HttpSession(client, route, log, onClosed);
}
