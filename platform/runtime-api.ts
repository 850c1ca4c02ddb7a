/**
 * What a client of a host runtime's HTTP API (docs/DESIGN.md §5.8) needs, in the leaf layer so
 * that every client may import it (`orrery logs`, `orrery top`, the autoscaler, the TUI): where a
 * runtime on this machine keeps its state and token, how a client finds the token, and the reads
 * (a replica's log, every replica's cgroup counters). The server side, which writes the token and
 * checks it, is node-runtime/agent/token.ts.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

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
  let res: Response;
  try {
    res = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal });
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
}

/** `/v1/replicas/:ns/:name/logs` with its query. */
export function logsPath(q: LogQuery): string {
  const params = new URLSearchParams();
  if (q.process) params.set('process', q.process);
  if (q.tail !== undefined) params.set('tail', String(q.tail));
  if (q.follow) params.set('follow', 'true');
  if (q.previous) params.set('previous', 'true');
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
