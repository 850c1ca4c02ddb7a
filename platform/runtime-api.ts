/**
 * What a client of a host runtime's HTTP API (docs/DESIGN.md §5.8) needs, in the leaf layer so
 * that every client may import it (`orrery logs`, `orrery top`, the autoscaler, the TUI): where a
 * runtime on this machine keeps its state and token, how a client finds the token, and the reads
 * (a replica's log, every replica's cgroup counters). The server side, which writes the token and
 * checks it, is node-runtime/agent/token.ts.
 */
import { readFile } from 'node:fs/promises';
import type { Agent as HttpsAgent } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { LRUCache } from 'lru-cache';

const TOKEN_FILE = 'api-token';

/** `${XDG_STATE_HOME:-~/.local/state}/orrery/runtime/<host>`: per host, so two agents on one machine never share state. */
export function defaultStateDir(hostName: string, env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_STATE_HOME;
  const base = xdg?.startsWith('/') ? xdg : path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'orrery', 'runtime', hostName);
}

/** Where a runtime with this state dir keeps its API token. */
export function tokenPath(stateDir: string): string {
  return path.join(stateDir, TOKEN_FILE);
}

/** How a client was told to authenticate (flags); the environment is read when none is given. */
export interface RuntimeTokenSource {
  token?: string | undefined;
  tokenFile?: string | undefined;
  stateDir?: string | undefined;
}

/**
 * A runtime's bearer token, in order: `token` (a flag), `$ORRERY_RUNTIME_TOKEN`, `tokenFile`,
 * `<stateDir>/api-token`, the default state dir of that host on this machine (what a local
 * `orrery runtime` writes).
 */
export async function readRuntimeToken(
  hostName: string,
  source: RuntimeTokenSource,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  if (source.token) return source.token;
  if (env.ORRERY_RUNTIME_TOKEN) return env.ORRERY_RUNTIME_TOKEN;
  const file = source.tokenFile ?? tokenPath(source.stateDir ?? defaultStateDir(hostName, env));
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (err) {
    throw new Error(
      `no token for the runtime of host ${hostName}: pass --token or set ORRERY_RUNTIME_TOKEN (could not read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
}

/** A host's runtime, as its Host object publishes it. */
export interface HostTarget {
  name: string;
  /** Its runtime's API base URL (Host.status.apiEndpoint). */
  endpoint: string;
  /**
   * The PEM certificate its API serves when the endpoint is https (Host.status.apiCertificate):
   * the one certificate trusted for it, whatever names it carries (a pin).
   */
  certificate?: string | undefined;
}

/** What hostTarget() reads of a Host object. */
interface HostLike {
  metadata?: { name?: string | undefined };
  status?: { apiEndpoint?: string | undefined; apiCertificate?: string | undefined };
}

/** The runtime a Host publishes; undefined while it publishes none (no runtime registered yet). */
export function hostTarget(host: HostLike): HostTarget | undefined {
  const name = host.metadata?.name;
  const endpoint = host.status?.apiEndpoint;
  if (!name || !endpoint) return undefined;
  return { name, endpoint, certificate: host.status?.apiCertificate };
}

/** One keep-alive agent per pinned certificate (a runtime makes a new one at each start). */
let pinnedAgents: LRUCache<string, HttpsAgent> | undefined;

// node:https and the cache load with the first https request: the runtime imports this module for
// its paths before it re-adopts its replicas, and loads nothing of HTTP until then.
async function pinnedAgent(certificate: string): Promise<HttpsAgent> {
  const [https, { LRUCache }] = await Promise.all([import('node:https'), import('lru-cache')]);
  pinnedAgents ??= new LRUCache<string, HttpsAgent>({ max: 1024, dispose: (agent) => agent.destroy() });
  let agent = pinnedAgents.get(certificate);
  if (!agent) {
    agent = new https.Agent({
      keepAlive: true,
      // The only certificate trusted is the one published: it chains to itself and nothing else
      // does. The names in it are not checked (an address may be reached by another name).
      ca: certificate,
      checkServerIdentity: () => undefined,
      minVersion: 'TLSv1.3',
    });
    pinnedAgents.set(certificate, agent);
  }
  return agent;
}

/** GET over TLS, trusting `certificate` alone; the answer as a fetch Response (its body streamed). */
async function pinnedGet(
  url: URL,
  certificate: string,
  headers: Record<string, string>,
  signal?: AbortSignal,
): Promise<Response> {
  const agent = await pinnedAgent(certificate);
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers, signal }, (res) => {
      const h = new Headers();
      for (const [k, v] of Object.entries(res.headers)) {
        for (const one of Array.isArray(v) ? v : v === undefined ? [] : [v]) h.append(k, one);
      }
      const status = res.statusCode ?? 502;
      const body =
        status === 204 || status === 304 ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
      resolve(new Response(body, { status, statusText: res.statusMessage ?? '', headers: h }));
    });
    req.once('error', reject);
    req.end();
  });
}

/** The error text of a runtime's answer: its JSON `error`, else the body as it is. */
async function answerText(res: Response): Promise<string> {
  const body = (await res.text()).trim();
  try {
    return (JSON.parse(body) as { error?: string }).error ?? body;
  } catch {
    return body.slice(0, 200);
  }
}

/**
 * GET `pathAndQuery` from a host's runtime with its token; rejects with a message naming the host
 * on a connection failure or an answer other than 2xx.
 */
export async function runtimeGet(
  target: HostTarget,
  token: string,
  pathAndQuery: string,
  signal?: AbortSignal,
): Promise<Response> {
  const url = new URL(pathAndQuery, target.endpoint);
  const headers = { authorization: `Bearer ${token}` };
  if (url.protocol === 'https:' && !target.certificate) {
    // Never sent to a server that cannot be told apart from any other.
    throw new Error(
      `host ${target.name}: its runtime serves https, and its Host publishes no status.apiCertificate to trust`,
    );
  }
  let res: Response;
  try {
    res =
      url.protocol === 'https:'
        ? await pinnedGet(url, target.certificate as string, headers, signal)
        : await fetch(url, { headers, signal });
  } catch (err) {
    throw new Error(`host ${target.name}: ${url}: ${(err as Error).cause ?? (err as Error).message}`, {
      cause: err,
    });
  }
  if (!res.ok)
    throw new Error(`host ${target.name}: ${url} answered ${res.status}: ${await answerText(res)}`);
  return res;
}

export interface LogQuery {
  namespace: string;
  replica: string;
  /** Default: the replica's first process. */
  process?: string | undefined;
  tail?: number | undefined;
  follow?: boolean | undefined;
  previous?: boolean | undefined;
  /** While following: a line `--- restarted (pid N) ---` between two runs. */
  markers?: boolean | undefined;
}

/** `/v1/replicas/:ns/:name/logs` with its query. */
export function logsPath(q: LogQuery): string {
  const params = new URLSearchParams();
  if (q.process) params.set('process', q.process);
  if (q.tail !== undefined) params.set('tail', String(q.tail));
  if (q.follow) params.set('follow', 'true');
  if (q.previous) params.set('previous', 'true');
  if (q.markers) params.set('markers', 'true');
  const query = params.size > 0 ? `?${params}` : '';
  return `/v1/replicas/${encodeURIComponent(q.namespace)}/${encodeURIComponent(q.replica)}/logs${query}`;
}

/** A replica's log as it is sent: raw bytes, ending with the run (or with `signal`, when following). */
export async function readLogs(
  target: HostTarget,
  token: string,
  q: LogQuery,
  signal?: AbortSignal,
): Promise<AsyncIterable<Uint8Array>> {
  const res = await runtimeGet(target, token, logsPath(q), signal);
  return (res.body ?? []) as AsyncIterable<Uint8Array>;
}

/** One replica's counters in a host's answer. */
export interface ReplicaCounters {
  namespace: string;
  name: string;
  /** Cumulative CPU time, nanoseconds. */
  cpuUsageNanos: number;
  memoryCurrentBytes: number;
  pids: number | undefined;
}

/** A host's answer, with when it was taken (ms, monotonic). */
export interface HostSample {
  host: string;
  at: number;
  replicas: ReplicaCounters[];
}

const SCRAPE_TIMEOUT_MS = 5_000;

interface ReplicasAnswer {
  items?: { namespace?: string; name?: string; stats?: Record<string, unknown> | null }[];
}

/** Reads the cgroup counters of every replica of one host (`GET /v1/replicas?stats=true`). */
export async function scrapeHost(
  target: HostTarget,
  token: string,
  signal?: AbortSignal,
): Promise<HostSample> {
  const timeout = AbortSignal.timeout(SCRAPE_TIMEOUT_MS);
  const res = await runtimeGet(
    target,
    token,
    '/v1/replicas?stats=true',
    signal ? AbortSignal.any([signal, timeout]) : timeout,
  );
  const at = performance.now();
  const body = (await res.json()) as ReplicasAnswer;
  const replicas: ReplicaCounters[] = [];
  for (const item of body.items ?? []) {
    const s = item.stats;
    if (!item.namespace || !item.name || !s) continue;
    const cpu = Number(s.cpuUsageNanos);
    const memory = Number(s.memoryCurrentBytes);
    if (!Number.isFinite(cpu) || !Number.isFinite(memory)) continue;
    replicas.push({
      namespace: item.namespace,
      name: item.name,
      cpuUsageNanos: cpu,
      memoryCurrentBytes: memory,
      pids: typeof s.pids === 'number' ? s.pids : undefined,
    });
  }
  return { host: target.name, at, replicas };
}
