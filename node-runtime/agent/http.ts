/**
 * The runtime's HTTP API (docs/DESIGN.md §5.8): `orrery logs` reads replicas' logs from it and
 * the DaemonSet's probes /healthz; /metrics is Prometheus text. Loopback by default,
 * `Authorization: Bearer <token>` on everything but /healthz. Query parameters are validated
 * here, at the edge; a bad one is a 400 whose message names the parameter and the expected form.
 *
 * Bounded: at most `maxConnections` open connections and `maxStreams` open streams (event streams
 * and followed logs), each over its cap answered 503 with the reason; an event stream whose reader
 * falls `eventBufferBytes` behind is cut off; a log is sent block by block as the client reads it.
 */

import type { Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { http, https } from '../../platform/http.ts';
import { HttpError, type RouteRequest, Router, sendJson } from '../../platform/http-router.ts';
import type { Engine } from '../engine.ts';
import type { EngineEvent } from '../supervisor/spec.ts';
import { type ApiLimits, DEFAULT_API_LIMITS } from './api-limits.ts';
import type { AgentMetrics } from './metrics.ts';
import { keyOfReplicaId, replicaId } from './replica-spec.ts';
import { bearerMatches } from './token.ts';

export interface HttpApiDeps {
  engine: Engine;
  metrics: AgentMetrics;
  token: string;
  hostName: string;
  log: Logger;
  /** Health facts for /healthz (lease state, fencing). */
  health: () => Record<string, unknown>;
  limits?: Partial<ApiLimits>;
}

/** Set by listen() on the connections beyond `maxConnections`: their requests get a 503. */
const OVER_CONNECTION_CAP = Symbol('overConnectionCap');
type CountedSocket = Socket & { [OVER_CONNECTION_CAP]?: number };

/** A 400 naming the parameter, the expected form and what was given. */
class BadParameter extends HttpError {
  constructor(parameter: string, expected: string, got: unknown) {
    super(400, `query parameter "${parameter}" must be ${expected}, got ${JSON.stringify(got)}`);
  }
}

function single(req: RouteRequest, name: string): string | undefined {
  const all = req.query.getAll(name);
  if (all.length === 0) return undefined;
  if (all.length > 1) throw new BadParameter(name, 'given once, as a plain value', all);
  return all[0];
}

function boolParam(req: RouteRequest, name: string): boolean {
  const v = single(req, name);
  if (v === undefined || v === 'false' || v === '0') return false;
  if (v === '' || v === 'true' || v === '1') return true;
  throw new BadParameter(name, 'true, false, 1 or 0', v);
}

function countParam(req: RouteRequest, name: string): number | undefined {
  const v = single(req, name);
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v)) throw new BadParameter(name, 'a non-negative integer (number of lines)', v);
  return Number(v);
}

/** Engine events carry the replica id; clients think in namespace/name. */
function withNames(e: EngineEvent): EngineEvent & { namespace?: string; name?: string } {
  const key = keyOfReplicaId(e.replica);
  if (!key) return e;
  const slash = key.indexOf('/');
  return { ...e, namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/** The API's request handler and the limits `listen` applies to its connections. */
export interface HttpApi {
  handler: Router['listener'];
  limits: ApiLimits;
}

export function createHttpApi(deps: HttpApiDeps): HttpApi {
  const { engine, metrics } = deps;
  const limits = { ...DEFAULT_API_LIMITS, ...deps.limits };
  const router = new Router({
    notFound: (_req, res) =>
      sendJson(res, { error: 'no such endpoint; see /v1/replicas, /v1/events, /metrics, /healthz' }, 404),
    onServerError: (err, req) => deps.log.error({ err, path: req.path }, 'HTTP API request failed'),
  });

  router.use((req, res) => {
    const open = (req.socket as CountedSocket)[OVER_CONNECTION_CAP];
    if (open === undefined) return false;
    metrics.apiRejected.inc({ reason: 'connections' });
    sendJson(
      res,
      {
        error: `too many connections to the runtime API: ${open} open, the limit is ${limits.maxConnections}; close idle ones and retry`,
      },
      503,
      { Connection: 'close', 'Retry-After': '1' },
    );
    return true;
  });

  router.use((req, res) => {
    if (req.path !== '/healthz') return false;
    sendJson(res, { ok: true, host: deps.hostName, ...deps.health() });
    return true;
  });

  router.use((req, res) => {
    if (bearerMatches(req.header('authorization'), deps.token)) return false;
    sendJson(res, { error: 'missing or wrong bearer token: send "Authorization: Bearer <token>"' }, 401, {
      'WWW-Authenticate': 'Bearer realm="orrery-runtime"',
    });
    return true;
  });

  router.get('/metrics', async (_req, res) => {
    const text = await metrics.registry.metrics();
    res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
    res.end(text);
  });

  const replicaIdOf = (req: RouteRequest): string => {
    const { namespace, name } = req.params as { namespace: string; name: string };
    const id = replicaId(namespace, name);
    if (!engine.has(id))
      throw new HttpError(404, `replica ${namespace}/${name} does not run on host ${deps.hostName}`);
    return id;
  };

  // `?stats=true` adds each replica's cgroup stats: one request for all of them instead of one
  // per replica.
  router.get('/v1/replicas', async (req, res) => {
    const withStats = boolParam(req, 'stats');
    const items = await Promise.all(
      engine.list().map(async (s) => {
        const key = keyOfReplicaId(s.id);
        const slash = key?.indexOf('/') ?? -1;
        const item: Record<string, unknown> = key
          ? { namespace: key.slice(0, slash), name: key.slice(slash + 1), status: s }
          : { status: s };
        if (withStats) {
          const stats = await engine.stats(s.id).catch(() => undefined);
          item.stats = stats ? statsJson(stats) : null;
        }
        return item;
      }),
    );
    sendJson(res, { host: deps.hostName, items });
  });

  router.get('/v1/replicas/:namespace/:name', async (req, res) => {
    const id = replicaIdOf(req);
    const status = engine.status(id);
    const stats = await engine.stats(id).catch(() => undefined);
    sendJson(res, {
      namespace: req.params.namespace,
      name: req.params.name,
      id,
      status,
      stats: stats ? statsJson(stats) : null,
    });
  });

  router.get('/v1/replicas/:namespace/:name/stats', async (req, res) => {
    const id = replicaIdOf(req);
    sendJson(res, statsJson(await engine.stats(id)));
  });

  let streams = 0;
  /** Counts a stream until its response closes; a 503 when the cap is reached. */
  const openStream = (res: ServerResponse, what: string): void => {
    if (streams >= limits.maxStreams) {
      metrics.apiRejected.inc({ reason: 'streams' });
      throw new HttpError(
        503,
        `too many streams on the runtime API: ${streams} event streams and log follows open, the limit is ${limits.maxStreams}; ${what} refused`,
        { 'Retry-After': '1' },
      );
    }
    streams++;
    res.once('close', () => streams--);
  };

  router.get('/v1/replicas/:namespace/:name/logs', serveLogs(deps, replicaIdOf, openStream));
  router.get('/v1/events', serveEvents(deps, limits, openStream));

  return { handler: router.listener, limits };
}

/**
 * GET /v1/replicas/:namespace/:name/logs: a process's log (`process`, default the first), its
 * last `tail` lines, the run before the current one (`previous`), or followed (`follow`) until
 * the client goes or the replica stops.
 */
function serveLogs(
  deps: HttpApiDeps,
  replicaIdOf: (req: RouteRequest) => string,
  openStream: (res: ServerResponse, what: string) => void,
) {
  const { engine } = deps;
  return async (req: RouteRequest, res: ServerResponse): Promise<void> => {
    const id = replicaIdOf(req);
    const processes = engine.status(id).processes.map((p) => p.name);
    const process = single(req, 'process') ?? processes[0];
    if (process === undefined || !processes.includes(process)) {
      throw new BadParameter('process', `one of the replica's processes (${processes.join(', ')})`, process);
    }
    const tail = countParam(req, 'tail');
    const follow = boolParam(req, 'follow');
    const previous = boolParam(req, 'previous');
    const markers = boolParam(req, 'markers');
    if (follow && previous) {
      throw new BadParameter(
        'previous',
        'false when follow is true (a previous run no longer grows)',
        'true',
      );
    }
    if (follow) openStream(res, 'this log follow');
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.setHeader('Cache-Control', 'no-store');
    if (!follow) {
      const opts: { lines?: number; previous?: boolean } = { previous };
      if (tail !== undefined) opts.lines = tail;
      // Block by block, each written once the previous one left: a 1.5 GB run costs 64 KiB.
      let gone = false;
      res.once('close', () => {
        gone = true;
      });
      for await (const chunk of engine.logs.read(id, process, opts)) {
        if (gone) break;
        if (!res.write(chunk)) await drainedOrClosed(res);
      }
      res.end();
      return;
    }
    const abort = new AbortController();
    const onEvent = (e: EngineEvent) => {
      if (e.replica === id && e.type === 'stopped') abort.abort();
    };
    engine.on('event', onEvent);
    res.on('close', () => abort.abort());
    res.flushHeaders();
    try {
      const opts: Parameters<typeof engine.logs.follow>[2] = { signal: abort.signal };
      if (tail !== undefined) opts.lines = tail;
      if (markers) opts.onNewRun = () => newRunMarker(engine, id, process, abort.signal);
      for await (const chunk of engine.logs.follow(id, process, opts)) {
        if (!res.write(chunk)) await drainedOrClosed(res);
        if (abort.signal.aborted) break;
      }
    } catch (err) {
      if (!abort.signal.aborted)
        deps.log.warn({ replica: id, process, err: (err as Error).message }, 'log follow ended');
    } finally {
      engine.off('event', onEvent);
      res.end();
    }
  };
}

/** How long a run marker waits for the new run's pid before it goes without one. */
const MARKER_PID_WAIT_MS = 2_000;

/**
 * `--- restarted (pid N) ---`, the line `markers=true` puts between two runs of a followed
 * process: the log's file is switched just before the spawn, so the pid is waited for (the
 * process's `started` event) for MARKER_PID_WAIT_MS at most; an exec that failed says so.
 */
async function newRunMarker(
  engine: Engine,
  id: string,
  process: string,
  signal: AbortSignal,
): Promise<string> {
  const started = new Promise<EngineEvent | undefined>((resolve) => {
    const done = (e: EngineEvent | undefined) => {
      clearTimeout(timer);
      engine.off('event', onEvent);
      signal.removeEventListener('abort', onAbort);
      resolve(e);
    };
    const onEvent = (e: EngineEvent) => {
      if (e.replica !== id || !('process' in e) || e.process !== process) return;
      if (e.type === 'started' || (e.type === 'exited' && e.reason === 'ExecFailed')) done(e);
    };
    const onAbort = () => done(undefined);
    const timer = setTimeout(() => done(undefined), MARKER_PID_WAIT_MS);
    engine.on('event', onEvent);
    signal.addEventListener('abort', onAbort);
  });
  // Started already (the follower noticed the new file late): its pid is in the status.
  const now = engine.has(id) ? engine.status(id).processes.find((p) => p.name === process) : undefined;
  const e =
    now?.pid != null && now.startedAt !== null && Date.now() - Date.parse(now.startedAt) < MARKER_PID_WAIT_MS
      ? ({ type: 'started', pid: now.pid } as const)
      : await started;
  if (e?.type === 'started') return `--- restarted (pid ${e.pid}) ---`;
  if (e?.type === 'exited') return `--- restarted: exec failed: ${e.message ?? 'unknown'} ---`;
  return '--- restarted ---';
}

/**
 * GET /v1/events: server-sent events, a snapshot of the replicas and then each engine event (of
 * one replica with `replica=namespace/name`).
 */
function serveEvents(
  deps: HttpApiDeps,
  limits: ApiLimits,
  openStream: (res: ServerResponse, what: string) => void,
) {
  const { engine } = deps;
  return (req: RouteRequest, res: ServerResponse): void => {
    const only = single(req, 'replica');
    let filterId: string | undefined;
    if (only !== undefined) {
      const m = /^([a-z0-9-]+)\/([a-z0-9.-]+)$/.exec(only);
      if (!m) throw new BadParameter('replica', 'namespace/name', only);
      filterId = replicaId(m[1] as string, m[2] as string);
    }
    openStream(res, 'this event stream');
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    // https://html.spec.whatwg.org/multipage/server-sent-events.html: retry, event, data, blank line.
    res.write('retry: 1000\n\n');
    const snapshot = engine.list().filter((s) => filterId === undefined || s.id === filterId);
    res.write(`event: snapshot\ndata: ${JSON.stringify({ host: deps.hostName, replicas: snapshot })}\n\n`);
    // What the socket has not taken yet is queued in memory; a reader that lets it pass the bound
    // is cut off (it reconnects and gets a fresh snapshot) rather than making the agent hold
    // every event since it stopped reading.
    const send = (text: string) => {
      if (res.destroyed) return;
      if (res.writableLength + text.length > limits.eventBufferBytes) {
        deps.metrics.apiRejected.inc({ reason: 'slow-reader' });
        deps.log.warn(
          {
            remote: req.socket.remoteAddress,
            queuedBytes: res.writableLength,
            limit: limits.eventBufferBytes,
          },
          'event stream cut off: its reader fell too far behind',
        );
        res.destroy();
        return;
      }
      res.write(text);
    };
    const onEvent = (e: EngineEvent) => {
      if (filterId !== undefined && e.replica !== filterId) return;
      send(`event: ${e.type}\ndata: ${JSON.stringify(withNames(e))}\n\n`);
    };
    engine.on('event', onEvent);
    // A comment line every 15 s keeps idle proxies and clients from timing the stream out.
    const ping = setInterval(() => send(': ping\n\n'), 15_000);
    ping.unref();
    res.on('close', () => {
      clearInterval(ping);
      engine.off('event', onEvent);
    });
  };
}

function statsJson(s: Awaited<ReturnType<Engine['stats']>>) {
  return {
    cpuUsageNanos: Number(s.cpuUsageNanos),
    cpuUsageSeconds: Number(s.cpuUsageNanos) / 1e9,
    memoryCurrentBytes: s.memoryCurrent,
    memoryPeakBytes: s.memoryPeak,
    oomKills: s.oomKills,
    pids: s.pids,
  };
}

/** Resolves once `res` can take more, or is gone. */
function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.once('drain', done);
    res.once('close', done);
  });
}

/**
 * Listen and resolve with the server, over TLS when `tls` (PEM certificate and key) is given; SSE
 * and follow streams are cut on close. Connections beyond the app's `maxConnections` are marked,
 * and their requests answered 503 (createHttpApi).
 */
export function listen(
  api: HttpApi,
  host: string,
  port: number,
  tls?: { cert: string; key: string },
): Promise<Server> {
  const { maxConnections } = api.limits;
  // An https.Server is an http.Server with TLS below (closeAllConnections and all). A client that
  // opens a connection and never finishes its handshake is dropped after 10 s.
  const server: Server = tls
    ? (https.createServer({ ...tls, minVersion: 'TLSv1.3', handshakeTimeout: 10_000 }, api.handler) as Server)
    : http.createServer(api.handler);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
    let open = 0;
    // The socket a request sees: the TLS one (counted once its handshake is done) or the TCP one.
    server.on(tls ? 'secureConnection' : 'connection', (socket: CountedSocket) => {
      open++;
      socket.once('close', () => open--);
      if (open > maxConnections) socket[OVER_CONNECTION_CAP] = open - 1;
    });
  });
}
