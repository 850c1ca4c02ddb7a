/**
 * docs/DESIGN.md §9, the mesh (issue 12, "Benchmarks"): the real `orrery proxy` against HAProxy
 * (`nbthread 1`), each with a direct-to-backend baseline, all in one run on one machine, on
 * loopback only. Peers from Debian's packages (hack/bench-deps.sh installs them when missing):
 * nginx as the backend (one worker, a 13-byte 200, keep-alive, no access log), HAProxy, and wrk
 * for closed-loop load; open-loop load from bench/loadgen (Go, built here into the cache).
 *
 * The proxy is `orrery proxy --namespace mesh-bench` as a process of its own on a private local
 * control plane; the bench writes the Services (their virtual IPs through the status subresource,
 * as the operator would) and the EndpointSlices pointing at the nginx backends, as
 * test/integration/mesh-proxy.test.ts does; no operator runs.
 *
 * 1. HTTP/1.1 keep-alive throughput, wrk -t1 -c32: direct, HAProxy `mode http`, the orrery http
 *    port (target ≥ 0.7× HAProxy).
 * 2. Added latency at 2,000 req/s, open loop (latency from each request's due time): p50, p90,
 *    p99, p99.9, max; added = through the proxy − direct (targets p50 ≤ 0.15 ms, p99 ≤ 1 ms);
 *    the proxy's CPU (/proc/<pid>/stat over the run) and RSS. The tcp paths too.
 * 3. TCP: wrk keep-alive through HAProxy `mode tcp` and the orrery tcp port, and new connections
 *    per second (wrk with `Connection: close`) (target ≥ 0.7× HAProxy).
 * 4. One of three nginx backends SIGKILLed (its whole process group) at 2,000 req/s through the
 *    orrery http port, and through HAProxy for reference: client-visible errors (target 0); three
 *    kills, each in a run of its own.
 * 5. EndpointSlice replaced → the proxy's ports() shows it, with the proxy in this process
 *    (startProxy) on a namespace of its own: p50/p99 over 50 changes (target p99 ≤ 100 ms).
 *
 * An http port the proxy does not serve (it listens on nothing within HTTP_PROBE_MS of its tcp
 * port listening, or does not answer 200) is reported as such, and its rows are left out.
 *
 * Every process started here gets its own process group and is killed by its pid in `finally`,
 * on a signal, and at exit (the proxy gets SIGTERM first). ORRERY_BENCH_CPUPROF=<dir>: the proxy
 * writes a V8 CPU profile there. Durations: ORRERY_BENCH_MESH_SECONDS (each wrk round, default 4),
 * ORRERY_BENCH_MESH_ROUNDS (3), ORRERY_BENCH_MESH_OPEN_SECONDS (each open-loop round, 2) and
 * ORRERY_BENCH_MESH_OPEN_ROUNDS (5); ORRERY_BENCH_MESH_ONLY=tcp runs only the tcp closed-loop
 * rows (keep-alive and new connections) and reports them alone, =http only the HTTP keep-alive rows. Rounds are interleaved over the
 * paths, so that a burst of other work on the machine does not land on one path only; open-loop
 * rounds are merged sample by sample.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { cpus, homedir, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type ControlPlane, startControlPlane } from '../controlplane/controlplane.ts';
import { installCrds } from '../crds/install.ts';
import { ENDPOINT_SLICE_MANAGER, MANAGED_BY_LABEL, SERVICE_NAME_LABEL } from '../crds/labels.ts';
import { ENDPOINT_SLICES, SERVICES } from '../crds/resources.ts';
import type { EndpointSlice, ServiceEndpoint } from '../crds/types.ts';
import { ensureNamespace, KubeApi, type KubeConfig, loadKubeConfig, resourceClient } from '../kube/index.ts';
import { type MeshProxy, startProxy } from '../mesh/proxy.ts';
import {
  BPFFS,
  fastPathUnavailable,
  loadSocketLb,
  SocketLb,
  unpinSocketLb,
} from '../node-runtime/bpf/index.ts';
import { detectCgroupLayout } from '../node-runtime/cgroups/index.ts';
import { freePort } from '../platform/net.ts';
import { cpuTimes, memoryOf, rssKiB } from './proc.ts';
import { quantile, summarize } from './stats.ts';

const repoRoot = join(import.meta.dirname, '..');
const orrery = join(repoRoot, 'bin', 'orrery.js');
const progress = (message: string) => console.error(`[mesh] ${message}`);

/** Each closed-loop (wrk) round, seconds. */
const WRK_SECONDS = Number(process.env.ORRERY_BENCH_MESH_SECONDS ?? 4);
/** Interleaved rounds of each closed-loop measurement. */
const ROUNDS = Number(process.env.ORRERY_BENCH_MESH_ROUNDS ?? 3);
/** Each open-loop round, seconds (after OPEN_WARMUP_S not recorded). */
const OPEN_SECONDS = Number(process.env.ORRERY_BENCH_MESH_OPEN_SECONDS ?? 2);
const OPEN_ROUNDS = Number(process.env.ORRERY_BENCH_MESH_OPEN_ROUNDS ?? 5);
/** ORRERY_BENCH_MESH_ONLY=tcp: only the tcp closed-loop rows (keep-alive, new connections). */
const TCP_ONLY = process.env.ORRERY_BENCH_MESH_ONLY === 'tcp';
/** ORRERY_BENCH_MESH_ONLY=http: only the HTTP keep-alive closed-loop rows. */
const HTTP_ONLY = process.env.ORRERY_BENCH_MESH_ONLY === 'http';
/**
 * The generator's own lateness (due → sent, p99) above which a run was disturbed by other work on
 * the machine: its tail latencies say more about that work than about the path measured.
 */
const DISTURBED_LAG_MS = 0.25;
const OPEN_WARMUP_S = 1;
const RATE = 2000;
const WRK_CONNS = 32;
const LOADGEN_CONNS = 16;
/**
 * Row 4: kills, each in a run of its own (a different backend each time, and for the orrery proxy
 * a Service of its own, so a fresh pool and outlier detector); the backend is killed this long
 * into the measured part of the run.
 */
const KILL_TRIALS = 3;
const KILL_AFTER_S = 2.5;
const KILL_RUN_SECONDS = 5;
/** Row 5: endpoint changes measured, after a few not recorded. */
const CHANGES = 50;
const CHANGES_WARMUP = 5;
/** An http port not listening this long after the tcp port listens is "not served". */
const HTTP_PROBE_MS = 5000;
const NAMESPACE = 'mesh-bench';
const CHANGES_NAMESPACE = 'mesh-bench-changes';
const FIELD_MANAGER = 'orrery-bench';
/** The backends' body: a small fixed 200. */
const BODY = 'hello, world\n';

// --- processes ---------------------------------------------------------------------------------

interface Proc {
  name: string;
  child: ChildProcess;
  pid: number;
  exited: Promise<void>;
  alive(): boolean;
  /** The last lines it printed (those captured). */
  tail(): string;
}

/** Every process this bench starts, each in a process group of its own, killed by its pid. */
class Processes {
  readonly #all = new Set<Proc>();
  /** Pids of the commands run to their end (wrk, loadgen, go build) while they run. */
  readonly #commands = new Set<number>();

  /** Runs a command to its end (own process group, SIGKILLed after timeoutMs); its output. */
  async run(
    command: string,
    args: string[],
    timeoutMs: number,
    env?: NodeJS.ProcessEnv,
  ): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: env ?? process.env,
    });
    const pid = child.pid ?? -1;
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    if (pid > 0) this.#commands.add(pid);
    try {
      const code = await new Promise<number | null>((resolve, reject) => {
        const timer = setTimeout(() => signalGroup(pid, 'SIGKILL'), timeoutMs);
        child.once('error', (err) => {
          clearTimeout(timer);
          reject(new Error(`cannot run ${command}: ${err.message}`));
        });
        child.once('close', (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      return { code, stdout, stderr };
    } finally {
      this.#commands.delete(pid);
    }
  }

  start(
    name: string,
    command: string,
    args: string[],
    opts: { env?: NodeJS.ProcessEnv; onLine?: (line: string) => void } = {},
  ): Proc {
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group (setsid): killed as a group, untouched by a terminal's Ctrl-C
      env: opts.env ?? process.env,
    });
    const lines: string[] = [];
    const keep = (line: string) => {
      lines.push(line);
      if (lines.length > 40) lines.shift();
      opts.onLine?.(line);
    };
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', keep);
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', keep);
    let done = false;
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        done = true;
        resolve();
      });
      child.once('error', (err) => {
        done = true;
        keep(`cannot run ${command}: ${err.message}`);
        resolve();
      });
    });
    const proc: Proc = {
      name,
      child,
      pid: child.pid ?? -1,
      exited,
      alive: () => !done,
      tail: () => lines.join('\n'),
    };
    this.#all.add(proc);
    void exited.then(() => this.#all.delete(proc));
    return proc;
  }

  /** SIGKILL to the process group of `proc` (its pid); resolves once the leader exited. */
  async kill(proc: Proc): Promise<void> {
    if (!proc.alive() || proc.pid <= 0) return;
    signalGroup(proc.pid, 'SIGKILL');
    await proc.exited;
  }

  /** SIGKILL to every group still running; for an exit hook, so synchronous. */
  killAllNow(): void {
    for (const p of this.#all) if (p.pid > 0) signalGroup(p.pid, 'SIGKILL');
    for (const pid of this.#commands) signalGroup(pid, 'SIGKILL');
  }

  async stopAll(): Promise<void> {
    for (const pid of this.#commands) signalGroup(pid, 'SIGKILL');
    await Promise.all([...this.#all].map((p) => this.kill(p)));
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

// --- network helpers ---------------------------------------------------------------------------

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

async function waitListening(host: string, port: number, timeoutMs: number, what: string): Promise<number> {
  const t0 = performance.now();
  while (!(await canConnect(host, port))) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`${what}: nothing listens on ${host}:${port}`);
    await sleep(50);
  }
  return performance.now() - t0;
}

/** One GET on a fresh connection: its status and body, or the error. */
function get(host: string, port: number, timeoutMs = 2000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: '/', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

type Served = { served: true } | { served: false; reason: string };

/** Whether host:port answers a GET with the backend's 200 within `timeoutMs`. */
async function probeHttp(host: string, port: number, timeoutMs: number): Promise<Served> {
  const t0 = performance.now();
  let reason = 'nothing listening';
  while (performance.now() - t0 < timeoutMs) {
    try {
      const r = await get(host, port, 1000);
      if (r.status === 200 && r.body === BODY) return { served: true };
      reason = `answers ${r.status} ${JSON.stringify(r.body.slice(0, 80))}`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      reason = code === 'ECONNREFUSED' ? 'nothing listening (connection refused)' : (err as Error).message;
    }
    await sleep(200);
  }
  return { served: false, reason: `${reason} for ${(timeoutMs / 1000).toFixed(0)} s` };
}

// --- peers -------------------------------------------------------------------------------------

function installDeps(): void {
  const script = join(repoRoot, 'hack', 'bench-deps.sh');
  const r = spawnSync('sh', [script], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0)
    throw new Error(`${script} failed (${r.status ?? r.signal}): haproxy, nginx and wrk are needed`);
}

function versionOf(command: string, args: string[], pattern: RegExp): string {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  return pattern.exec(`${r.stdout}${r.stderr}`)?.[1] ?? 'unknown version';
}

/** bench/loadgen built into the cache (keyed by its sources and the Go version); its path. */
async function buildLoadgen(procs: Processes): Promise<string> {
  const dir = join(repoRoot, 'bench', 'loadgen');
  const env = { ...process.env, GOTOOLCHAIN: 'local', CGO_ENABLED: '0' };
  const goVersion = spawnSync('go', ['env', 'GOVERSION'], { encoding: 'utf8', env });
  if (goVersion.status !== 0) throw new Error('the Go toolchain (`go` on PATH) builds bench/loadgen');
  const hash = createHash('sha256');
  for (const file of ['go.mod', 'main.go']) hash.update(readFileSync(join(dir, file)));
  hash.update(goVersion.stdout.trim());
  const xdg = process.env.XDG_CACHE_HOME;
  const cache = join(xdg?.startsWith('/') ? xdg : join(homedir(), '.cache'), 'orrery', 'bench');
  const binary = join(cache, `loadgen-${hash.digest('hex').slice(0, 16)}`);
  if (existsSync(binary)) return binary;
  mkdirSync(cache, { recursive: true });
  progress(`building bench/loadgen into ${binary}`);
  const tmp = `${binary}.tmp-${process.pid}`;
  const r = await procs.run('go', ['build', '-C', dir, '-o', tmp, '.'], 300_000, env);
  if (r.code !== 0) throw new Error(`go build of bench/loadgen failed: ${r.stderr}`);
  spawnSync('mv', ['-f', tmp, binary]);
  return binary;
}

function nginxConf(dir: string, port: number): string {
  return `# bench/mesh.bench.ts: one backend on loopback
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type text/plain;
  keepalive_timeout 65s;
  keepalive_requests 10000000;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / { return 200 ${JSON.stringify(BODY)}; }
  }
}
`;
}

interface Backend {
  name: string;
  port: number;
  dir: string;
  proc: Proc;
}

async function startNginx(procs: Processes, root: string, name: string, port?: number): Promise<Backend> {
  const dir = join(root, `nginx-${name}`);
  mkdirSync(dir, { recursive: true });
  const p = port ?? (await freePort('127.0.0.1'));
  writeFileSync(join(dir, 'nginx.conf'), nginxConf(dir, p));
  const proc = procs.start(`nginx ${name}`, 'nginx', [
    '-e',
    join(dir, 'error.log'),
    '-p',
    dir,
    '-c',
    join(dir, 'nginx.conf'),
  ]);
  await waitListening('127.0.0.1', p, 10_000, `nginx ${name}`).catch((err: Error) => {
    throw new Error(`${err.message}\n${proc.tail()}\n${readIfThere(join(dir, 'error.log'))}`);
  });
  const r = await get('127.0.0.1', p);
  if (r.status !== 200 || r.body !== BODY) throw new Error(`nginx ${name} answers ${r.status} ${r.body}`);
  return { name, port: p, dir, proc };
}

function readIfThere(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

interface HaproxyPorts {
  http: number;
  tcp: number;
  three: number;
}

const HAPROXY_ADDRESS = '127.0.0.2';

function haproxyConf(dir: string, ports: HaproxyPorts, main: Backend, three: Backend[]): string {
  const servers = three
    .map((b) => `  server ${b.name} 127.0.0.1:${b.port} check inter 1s fall 2 rise 2`)
    .join('\n');
  return `# bench/mesh.bench.ts: the peer, one thread, loopback only
global
  nbthread 1
  pidfile ${dir}/haproxy.pid
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend http_in
  mode http
  bind ${HAPROXY_ADDRESS}:${ports.http}
  default_backend http_main
backend http_main
  mode http
  server main 127.0.0.1:${main.port}
frontend tcp_in
  mode tcp
  bind ${HAPROXY_ADDRESS}:${ports.tcp}
  default_backend tcp_main
backend tcp_main
  mode tcp
  server main 127.0.0.1:${main.port}
frontend three_in
  mode http
  bind ${HAPROXY_ADDRESS}:${ports.three}
  default_backend three
backend three
  mode http
  balance roundrobin
  retries 2
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
${servers}
`;
}

// --- load --------------------------------------------------------------------------------------

interface WrkResult {
  rps: number;
  requests: number;
  errors: number;
  errorText: string;
  /** CPU of the watched process over the run, in % of one core. */
  cpuPercent: number | undefined;
  /** The same CPU per request (or connection), µs. */
  cpuUsPerRequest: number | undefined;
}

async function wrk(
  procs: Processes,
  url: string,
  seconds: number,
  opts: { close?: boolean; watch?: number | undefined; cgroupProcs?: string | undefined } = {},
): Promise<WrkResult> {
  const args = ['-t1', `-c${WRK_CONNS}`, `-d${seconds}s`, '--timeout', '2s'];
  if (opts.close) args.push('-H', 'Connection: close');
  args.push(url);
  const cpu0 = opts.watch ? cpuSecondsOf(opts.watch) : 0;
  const t0 = performance.now();
  // In a cgroup (the kernel path): the shell joins it, then becomes wrk, before any socket exists.
  const r = opts.cgroupProcs
    ? await procs.run(
        '/bin/sh',
        ['-c', 'echo $$ > "$1" && shift && exec "$@"', 'sh', opts.cgroupProcs, 'wrk', ...args],
        (seconds + 30) * 1000,
      )
    : await procs.run('wrk', args, (seconds + 30) * 1000);
  const wallS = (performance.now() - t0) / 1000;
  const cpuS = opts.watch ? cpuSecondsOf(opts.watch) - cpu0 : undefined;
  const cpuPercent = cpuS === undefined ? undefined : (cpuS / wallS) * 100;
  if (r.code !== 0) throw new Error(`wrk ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1] ?? Number.NaN);
  const requests = Number(/(\d+) requests in/.exec(r.stdout)?.[1] ?? Number.NaN);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(r.stdout);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(r.stdout)?.[1] ?? 0);
  const errorParts: string[] = [];
  let errors = non2xx;
  if (non2xx > 0) errorParts.push(`${non2xx} non-2xx`);
  if (socket) {
    for (const [i, kind] of ['connect', 'read', 'write', 'timeout'].entries()) {
      const n = Number(socket[i + 1]);
      errors += n;
      if (n > 0) errorParts.push(`${n} ${kind}`);
    }
  }
  const cpuUsPerRequest = cpuS === undefined ? undefined : (cpuS * 1e6) / requests;
  return { rps, requests, errors, errorText: errorParts.join(', '), cpuPercent, cpuUsPerRequest };
}

interface Quantiles {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

interface LoadgenResult {
  scheduled: number;
  ok: number;
  errorCount: number;
  errors: Record<string, number>;
  latencyMs: Quantiles;
  schedLagMs: Quantiles;
  firstErrors: { atMs: number; kind: string; message: string }[];
  connects: number;
  samplesNs?: number[];
  /** Added here: the watched process's CPU over the run (seconds), the run's wall time, its RSS at the end. */
  cpuS?: number | undefined;
  wallS?: number | undefined;
  rssMiB?: number | undefined;
}

const cpuPercentOf = (r: LoadgenResult) =>
  r.cpuS === undefined || r.wallS === undefined ? undefined : (r.cpuS / r.wallS) * 100;

/**
 * Runs of one path merged: the latency samples of the quiet ones (the generator itself on time:
 * its lateness p99 at most DISTURBED_LAG_MS), or of all when none was quiet; every error of every
 * run; CPU over their summed wall time.
 */
function mergeRuns(runs: LoadgenResult[]): LoadgenResult & { quiet: number } {
  const quiet = runs.filter((r) => r.schedLagMs.p99 <= DISTURBED_LAG_MS);
  const kept = quiet.length > 0 ? quiet : runs;
  const ms = kept.flatMap((r) => r.samplesNs ?? []).map((ns) => ns / 1e6);
  const q = (x: number) => quantile(ms, x);
  const errors: Record<string, number> = {};
  for (const r of runs) for (const [k, n] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + n;
  const sum = (f: (r: LoadgenResult) => number) => runs.reduce((a, r) => a + f(r), 0);
  const watched = runs.every((r) => r.cpuS !== undefined);
  return {
    scheduled: sum((r) => r.scheduled),
    ok: sum((r) => r.ok),
    errorCount: sum((r) => r.errorCount),
    errors,
    latencyMs: {
      p50: q(0.5),
      p90: q(0.9),
      p99: q(0.99),
      p999: q(0.999),
      max: q(1),
      mean: ms.reduce((a, b) => a + b, 0) / ms.length,
    },
    // The generator's lateness: the worst kept round's.
    schedLagMs: kept.map((r) => r.schedLagMs).reduce((a, b) => (b.p99 > a.p99 ? b : a)),
    quiet: quiet.length,
    firstErrors: runs.flatMap((r) => r.firstErrors),
    connects: sum((r) => r.connects),
    cpuS: watched ? sum((r) => r.cpuS ?? 0) : undefined,
    wallS: sum((r) => r.wallS ?? 0),
    rssMiB: runs.at(-1)?.rssMiB,
  };
}

async function loadgen(
  procs: Processes,
  binary: string,
  url: string,
  opts: {
    seconds: number;
    watch?: number | undefined;
    samples?: boolean;
    during?: () => void;
    duringAtMs?: number;
  },
): Promise<LoadgenResult> {
  const args = [
    '-url',
    url,
    '-rate',
    String(RATE),
    '-duration',
    `${opts.seconds}s`,
    '-warmup',
    `${OPEN_WARMUP_S}s`,
    '-conns',
    String(LOADGEN_CONNS),
    '-timeout',
    '2s',
    ...(opts.samples ? ['-samples'] : []),
  ];
  const cpu0 = opts.watch ? cpuSecondsOf(opts.watch) : 0;
  const t0 = performance.now();
  const timer = opts.during ? setTimeout(opts.during, opts.duringAtMs ?? 0) : undefined;
  const r = await procs
    .run(binary, args, (opts.seconds + OPEN_WARMUP_S + 30) * 1000, {
      ...process.env,
      GOMAXPROCS: '2',
    })
    .finally(() => clearTimeout(timer));
  const wallS = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`loadgen ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  const result = JSON.parse(r.stdout) as LoadgenResult;
  result.wallS = wallS;
  if (opts.watch) {
    result.cpuS = cpuSecondsOf(opts.watch) - cpu0;
    result.rssMiB = rssKiB(opts.watch) / 1024;
  }
  return result;
}

function cpuSecondsOf(pid: number): number {
  const t = cpuTimes(pid);
  return t.user + t.system;
}

// --- the orrery side ---------------------------------------------------------------------------

interface ServiceSetup {
  name: string;
  vip: string;
  port: number;
  protocol: 'tcp' | 'http';
}

function endpointOf(b: Backend, portName: string, ready = true): ServiceEndpoint {
  return {
    replica: `nginx-${b.name}`,
    host: 'bench',
    address: '127.0.0.1',
    ports: [{ name: portName, port: b.port }],
    ready,
    serving: ready,
    terminating: false,
  };
}

async function writeService(
  api: KubeApi,
  namespace: string,
  s: ServiceSetup,
  endpoints: ServiceEndpoint[],
): Promise<EndpointSlice> {
  const services = resourceClient(api, SERVICES, FIELD_MANAGER);
  const slices = resourceClient(api, ENDPOINT_SLICES, FIELD_MANAGER);
  const created = await services.create(
    {
      metadata: { name: s.name, namespace },
      spec: {
        selector: { app: s.name },
        ports: [{ name: 'web', port: s.port, targetPort: 'web', protocol: s.protocol }],
      },
    },
    { namespace },
  );
  await services.patchStatus(s.name, { virtualIP: s.vip }, { namespace });
  return slices.create(
    {
      metadata: {
        name: `${s.name}-0`,
        namespace,
        labels: { [SERVICE_NAME_LABEL]: s.name, [MANAGED_BY_LABEL]: ENDPOINT_SLICE_MANAGER },
        ownerReferences: [
          {
            apiVersion: 'orrery.dev/v1alpha1',
            kind: 'Service',
            name: s.name,
            uid: created.metadata.uid as string,
            controller: true,
          },
        ],
      },
      service: s.name,
      count: endpoints.length,
      ready: endpoints.filter((e) => e.ready).length,
      endpoints,
    },
    { namespace },
  );
}

/** Row 5: EndpointSlice replaced → the in-process proxy's ports() shows it; ms samples. */
async function endpointChanges(
  kubeConfig: KubeConfig,
  api: KubeApi,
  backends: Backend[],
  vip: string,
  port: number,
  stash: { proxy?: MeshProxy },
): Promise<{ propagation: number[]; write: number[] }> {
  await ensureNamespace(api, CHANGES_NAMESPACE, FIELD_MANAGER);
  const base = backends.map((b) => endpointOf(b, 'web'));
  let slice = await writeService(api, CHANGES_NAMESPACE, { name: 'flip', vip, port, protocol: 'tcp' }, base);
  const proxy = await startProxy({ kubeConfig, namespace: CHANGES_NAMESPACE, name: 'mesh-bench-changes' });
  stash.proxy = proxy;
  await proxy.ready;
  const readyNow = () => proxy.ports().find((p) => p.service === 'flip')?.ready;
  const until = (want: number, timeoutMs: number) =>
    new Promise<number>((resolve, reject) => {
      const t0 = performance.now();
      const check = () => {
        if (readyNow() === want) resolve(performance.now());
        else if (performance.now() - t0 > timeoutMs)
          reject(new Error(`the proxy never showed ${want} ready`));
        else setImmediate(check);
      };
      check();
    });
  await until(base.length, 10_000);
  const slices = resourceClient(api, ENDPOINT_SLICES, FIELD_MANAGER);
  const propagation: number[] = [];
  const write: number[] = [];
  for (let i = 0; i < CHANGES + CHANGES_WARMUP; i++) {
    // Odd changes take the last endpoint out (not ready), even ones put it back.
    const ready = i % 2 === 0 ? base.length - 1 : base.length;
    const endpoints = base.map((e, k) =>
      k === base.length - 1 && ready < base.length ? endpointOf(backends[k] as Backend, 'web', false) : e,
    );
    const t0 = performance.now();
    const writing = slices
      .replace({ ...slice, count: endpoints.length, ready, endpoints })
      .then((s) => ({ s, at: performance.now() }));
    const seen = await until(ready, 5000);
    const written = await writing;
    slice = written.s;
    if (i >= CHANGES_WARMUP) {
      propagation.push(seen - t0);
      write.push(written.at - t0);
    }
    await sleep(20 + Math.random() * 20);
  }
  return { propagation, write };
}

/**
 * The proxy's failure counters of one Service (/metrics): retries, connect failures, request
 * errors, local responses, overflows, ejections, no-endpoint closes; the non-zero ones, each as
 * `name{labels other than namespace, service, port} value`.
 */
async function proxyCounters(metricsUrl: string, service: string): Promise<string[]> {
  const text = await (await fetch(`${metricsUrl}/metrics`)).text();
  const wanted =
    /^orrery_proxy_(retries_total|upstream_connect_failures_total|upstream_request_errors_total|local_responses_total|overflows_total|ejections_total|no_endpoint_closes_total)\{(.*)\} (\S+)$/;
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = wanted.exec(line);
    if (!m || Number(m[3]) === 0) continue;
    const labels = [...(m[2] as string).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)];
    if (!labels.some((l) => l[1] === 'service' && l[2] === service)) continue;
    const rest = labels
      .filter((l) => !['namespace', 'service', 'port'].includes(l[1] as string))
      .map((l) => `${l[1]}=${l[2]}`)
      .join(',');
    out.push(`${m[1]}${rest ? `{${rest}}` : ''} ${m[3]}`);
  }
  return out;
}

// --- formatting --------------------------------------------------------------------------------

const f2 = (v: number) => v.toFixed(2);
const f3 = (v: number) => v.toFixed(3);
const signed = (v: number) => `${v < 0 ? '−' : '+'}${f3(Math.abs(v))}`;
const kRps = (v: number) => (v >= 1000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0));
const pct = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '' : `${v.toFixed(0)} %`);
/** Text for a table cell: no pipes, no backticks, no newlines, at most `max` characters. */
const mdText = (text: string, max: number) =>
  text.replaceAll(/[|`\n\r]/g, ' ').slice(0, max) + (text.length > max ? '…' : '');
const verdict = (ok: boolean) => (ok ? 'met' : 'not met');
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
/** Errors of several runs by kind: `kind n, ...`; empty when there are none. */
const mergeErrors = (runs: LoadgenResult[]) => {
  const by: Record<string, number> = {};
  for (const r of runs) for (const [k, n] of Object.entries(r.errors)) by[k] = (by[k] ?? 0) + n;
  return Object.entries(by)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
};
const errorsText = (r: LoadgenResult) =>
  r.errorCount === 0
    ? '0'
    : `${r.errorCount} (${Object.entries(r.errors)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ')})`;

function gitState(): string {
  const head = spawnSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  if (head.status !== 0) return 'not a git checkout';
  const dirty = spawnSync('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'mesh', 'cli'], {
    encoding: 'utf8',
  });
  const changed = dirty.stdout.split('\n').filter(Boolean).length;
  return changed === 0
    ? `commit ${head.stdout.trim()}`
    : `commit ${head.stdout.trim()} with ${changed} uncommitted change(s) in mesh/ and cli/`;
}

// --- the bench ---------------------------------------------------------------------------------

type KernelPath = { cgroupProcs: string; parent: string; stop: () => void } | { reason: string };

/**
 * The kernel fast path as the host agent runs it (node-runtime/bpf/): the programs loaded and
 * pinned, attached to a cgroup v2 directory of the bench's own, and `vip:port` sent to
 * 127.0.0.1:`backendPort`; the load generator runs in a cgroup below it. Or why it cannot run.
 */
function startKernelPath(vip: string, port: number, backendPort: number): KernelPath {
  const v2Root = detectCgroupLayout().v2Root;
  if (v2Root === undefined) return { reason: 'no cgroup v2 tree' };
  const name = `orrery-bench-mesh-${process.pid}`;
  const parent = join(v2Root, name);
  const client = join(parent, 'client');
  const pinDir = join(BPFFS, name);
  mkdirSync(client, { recursive: true });
  const removeCgroups = () => {
    for (const dir of [client, parent]) {
      try {
        rmdirSync(dir);
      } catch {}
    }
  };
  const reason = fastPathUnavailable(parent);
  if (reason !== undefined) {
    removeCgroups();
    return { reason };
  }
  loadSocketLb(pinDir);
  const lb = new SocketLb(pinDir);
  lb.attach(parent);
  lb.setService(vip, port, [{ address: '127.0.0.1', port: backendPort, weight: 1 }]);
  return {
    cgroupProcs: join(client, 'cgroup.procs'),
    parent,
    stop: () => {
      lb.detach(parent);
      lb.close();
      unpinSocketLb(pinDir);
      removeCgroups();
    },
  };
}

interface Target {
  name: string;
  host: string;
  port: number;
  /** The proxy's pid, for its CPU and RSS. */
  watch?: number | undefined;
  served: Served;
  /** A cgroup's `cgroup.procs` the load generator joins before exec (the kernel path's client). */
  cgroupProcs?: string;
}

export default async function meshBench(): Promise<{ title: string; markdown: string }> {
  installDeps();
  const procs = new Processes();
  const root = mkdtempSync(join(tmpdir(), 'orrery-bench-mesh-'));
  const killEverything = () => procs.killAllNow();
  const onSignal = (signal: NodeJS.Signals) => {
    killEverything();
    rmSync(root, { recursive: true, force: true });
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('exit', killEverything);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let plane: ControlPlane | undefined;
  let kernel: KernelPath | undefined;
  let proxyProc: Proc | undefined;
  let api: KubeApi | undefined;
  const inProcess: { proxy?: MeshProxy } = {};
  try {
    const loadgenBinary = await buildLoadgen(procs);
    const versions = {
      haproxy: versionOf('haproxy', ['-v'], /HAProxy version (\S+)/),
      nginx: versionOf('nginx', ['-v'], /nginx\/(\S+)/),
      wrk: versionOf('wrk', ['-v'], /wrk (\S+)/),
    };
    const loadBefore = loadavg();

    progress('starting nginx backends');
    const main = await startNginx(procs, root, 'main');
    const three = [
      await startNginx(procs, root, 'a'),
      await startNginx(procs, root, 'b'),
      await startNginx(procs, root, 'c'),
    ];

    progress('starting HAProxy');
    const hp: HaproxyPorts = {
      http: await freePort(HAPROXY_ADDRESS),
      tcp: await freePort(HAPROXY_ADDRESS),
      three: await freePort(HAPROXY_ADDRESS),
    };
    const hdir = join(root, 'haproxy');
    mkdirSync(hdir);
    writeFileSync(join(hdir, 'haproxy.cfg'), haproxyConf(hdir, hp, main, three));
    const haproxy = procs.start('haproxy', 'haproxy', ['-db', '-f', join(hdir, 'haproxy.cfg')]);
    for (const port of [hp.http, hp.tcp, hp.three]) {
      await waitListening(HAPROXY_ADDRESS, port, 10_000, 'haproxy').catch((err: Error) => {
        throw new Error(`${err.message}\n${haproxy.tail()}`);
      });
    }

    progress('starting a private control plane');
    plane = await startControlPlane({ dataDir: join(root, 'cp') });
    const kubeConfig = loadKubeConfig({ kubeconfig: plane.kubeconfig });
    await installCrds(kubeConfig);
    api = await KubeApi.fromKubeConfig(kubeConfig);
    await ensureNamespace(api, NAMESPACE, FIELD_MANAGER);
    // Virtual IPs from a random /24 of the operator's 127.77.0.0/16 that it is unlikely to use.
    const vipBase = `127.77.${240 + Math.floor(Math.random() * 15)}`;
    const vipHost = 10 + Math.floor(Math.random() * 200);
    const vip = (i: number) => `${vipBase}.${vipHost + i}`;
    const services = {
      tcp: { name: 'web-tcp', vip: vip(0), port: await freePort(vip(0)), protocol: 'tcp' },
      http: { name: 'web-http', vip: vip(1), port: await freePort(vip(1)), protocol: 'http' },
    } satisfies Record<string, ServiceSetup>;
    /** Row 4: one Service per kill, each over the three backends. */
    const killServices: ServiceSetup[] = [];
    for (let i = 0; i < KILL_TRIALS; i++) {
      const address = vip(2 + i);
      killServices.push({
        name: `web-three-${i}`,
        vip: address,
        port: await freePort(address),
        protocol: 'http',
      });
    }
    await writeService(api, NAMESPACE, services.tcp, [endpointOf(main, 'web')]);
    await writeService(api, NAMESPACE, services.http, [endpointOf(main, 'web')]);
    for (const s of killServices) {
      await writeService(
        api,
        NAMESPACE,
        s,
        three.map((b) => endpointOf(b, 'web')),
      );
    }

    progress('starting orrery proxy');
    /** What the proxy logged at warn or above: count by level and message, and the first error record. */
    const proxyLog = new Map<string, number>();
    let firstProxyError: string | undefined;
    let metricsUrl: string | undefined;
    const proxy = procs.start(
      'orrery proxy',
      process.execPath,
      [
        // ORRERY_BENCH_CPUPROF=<dir>: the proxy writes a V8 CPU profile there when it stops.
        ...(process.env.ORRERY_BENCH_CPUPROF
          ? ['--cpu-prof', `--cpu-prof-dir=${process.env.ORRERY_BENCH_CPUPROF}`]
          : []),
        orrery,
        'proxy',
        '--kubeconfig',
        plane.kubeconfig,
        '--namespace',
        NAMESPACE,
        '--name',
        'mesh-bench',
        '--metrics-listen',
        '127.0.0.1:0',
        '--drain-timeout',
        '1s',
      ],
      {
        env: { ...process.env, ORRERY_LOG_LEVEL: 'info' },
        onLine: (line) => {
          let rec: { level?: number; msg?: string; url?: unknown } = {};
          try {
            rec = JSON.parse(line) as typeof rec;
          } catch {
            // not a log record
          }
          if (rec.msg === 'serving /metrics and /healthz' && typeof rec.url === 'string')
            metricsUrl = rec.url;
          const level = rec.level ?? 30;
          if (level < 40) return;
          const key = `${level >= 50 ? 'error' : 'warn'} "${rec.msg ?? line.slice(0, 120)}"`;
          proxyLog.set(key, (proxyLog.get(key) ?? 0) + 1);
          if (level >= 50) firstProxyError ??= line.slice(0, 400);
        },
      },
    );
    proxyProc = proxy;
    const proxyStart = await waitListening(
      services.tcp.vip,
      services.tcp.port,
      60_000,
      'orrery proxy tcp port',
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${proxy.tail()}`);
    });
    const tcpAnswer = await get(services.tcp.vip, services.tcp.port);
    if (tcpAnswer.status !== 200) throw new Error(`the orrery tcp port answers ${tcpAnswer.status}`);
    const [httpServed, ...killServed] = await Promise.all([
      probeHttp(services.http.vip, services.http.port, HTTP_PROBE_MS),
      ...killServices.map((s) => probeHttp(s.vip, s.port, HTTP_PROBE_MS)),
    ]);
    progress(
      `orrery proxy: tcp port listening after ${(proxyStart / 1000).toFixed(1)} s; http port ${httpServed.served ? 'served' : `not served: ${httpServed.reason}`}`,
    );
    const uptime = spawnSync('uptime', { encoding: 'utf8' }).stdout.trim();
    progress(`uptime: ${uptime}`);

    const direct: Target = {
      name: 'direct to nginx',
      host: '127.0.0.1',
      port: main.port,
      served: { served: true },
    };
    const haHttp: Target = {
      name: 'HAProxy `mode http`',
      host: HAPROXY_ADDRESS,
      port: hp.http,
      watch: haproxy.pid,
      served: { served: true },
    };
    const orHttp: Target = {
      name: 'orrery proxy, http port',
      host: services.http.vip,
      port: services.http.port,
      watch: proxy.pid,
      served: httpServed,
    };
    const haTcp: Target = {
      name: 'HAProxy `mode tcp`',
      host: HAPROXY_ADDRESS,
      port: hp.tcp,
      watch: haproxy.pid,
      served: { served: true },
    };
    const orTcp: Target = {
      name: 'orrery proxy, tcp port',
      host: services.tcp.vip,
      port: services.tcp.port,
      watch: proxy.pid,
      served: { served: true },
    };
    // The kernel fast path (issue 13): wrk in a cgroup below one the BPF programs are attached to,
    // connecting to the tcp Service's VIP:port, which connect4 rewrites to nginx: nothing between.
    kernel = startKernelPath(services.tcp.vip, services.tcp.port, main.port);
    const kernelTcp: Target = {
      name: 'kernel path (BPF connect4), tcp port',
      host: services.tcp.vip,
      port: services.tcp.port,
      served: 'reason' in kernel ? { served: false, reason: kernel.reason } : { served: true },
      ...('reason' in kernel ? {} : { cgroupProcs: kernel.cgroupProcs }),
    };
    progress(
      'reason' in kernel
        ? `kernel path not measured: ${kernel.reason}`
        : `kernel path: attached to ${kernel.parent}`,
    );
    const urlOf = (t: Target) => `http://${t.host}:${t.port}/`;

    // 1 and 3: closed loop, interleaved rounds.
    const closedLoop = async (targets: Target[], close: boolean) => {
      const live = targets.filter((t) => t.served.served);
      for (const t of live) await wrk(procs, urlOf(t), 1, { close, cgroupProcs: t.cgroupProcs }); // warm-up
      const out = new Map<Target, WrkResult[]>(live.map((t) => [t, []]));
      for (let round = 0; round < ROUNDS; round++) {
        for (const t of live) {
          const r = await wrk(procs, urlOf(t), WRK_SECONDS, {
            close,
            watch: t.watch,
            cgroupProcs: t.cgroupProcs,
          });
          progress(
            `wrk${close ? ' (Connection: close)' : ''} ${t.name}: ${r.rps.toFixed(0)} req/s${r.errors ? `, errors ${r.errorText}` : ''}`,
          );
          out.get(t)?.push(r);
        }
      }
      return out;
    };
    progress(`HTTP keep-alive throughput: wrk -t1 -c${WRK_CONNS}, ${ROUNDS} × ${WRK_SECONDS} s each`);
    const memBefore = memoryOf(proxy.pid);
    const httpThroughput = TCP_ONLY
      ? new Map<Target, WrkResult[]>()
      : await closedLoop([direct, haHttp, orHttp], false);

    if (HTTP_ONLY) {
      // ORRERY_BENCH_MESH_ONLY=http: the HTTP keep-alive table alone, for working on the http path.
      const loadEnd = loadavg();
      const rows = [direct, haHttp, orHttp].map((t) => {
        const rs = httpThroughput.get(t) ?? [];
        const rps = rs.length > 0 ? mean(rs.map((r) => r.rps)) : Number.NaN;
        const ha = httpThroughput.get(haHttp) ?? [];
        const haRps = ha.length > 0 ? mean(ha.map((r) => r.rps)) : Number.NaN;
        const us = t.watch ? mean(rs.map((r) => r.cpuUsPerRequest ?? Number.NaN)) : undefined;
        const cpu = t.watch ? mean(rs.map((r) => r.cpuPercent ?? Number.NaN)) : undefined;
        return `| ${t.name} | ${kRps(rps)} | ${rs.map((r) => kRps(r.rps)).join(', ')} | ${pct(cpu)} | ${us === undefined ? '' : `${us.toFixed(1)} µs`} | ${t === direct ? '' : `${f2(rps / haRps)}×`} | ${
          rs
            .map((r) => r.errorText)
            .filter(Boolean)
            .join('; ') || '0'
        } |`;
      });
      const memAfter = memoryOf(proxy.pid);
      const mib = (m: { rss: number; private: number }) =>
        `RSS ${(m.rss / 2 ** 20).toFixed(0)} MiB (private ${(m.private / 2 ** 20).toFixed(0)} MiB)`;
      const markdown = [
        `http only (ORRERY_BENCH_MESH_ONLY=http): the real \`orrery proxy\` (${gitState()}); load average before ${loadBefore.map((v) => v.toFixed(2)).join(', ')}, at the end ${loadEnd.map((v) => v.toFixed(2)).join(', ')}; wrk -t1 -c${WRK_CONNS}, ${ROUNDS} × ${WRK_SECONDS} s. The proxy before the rounds: ${mib(memBefore)}; after: ${mib(memAfter)}.`,
        '',
        '| path | req/s | rounds | proxy CPU | proxy CPU per request | vs HAProxy | errors |',
        '|---|---:|---:|---:|---:|---:|---|',
        ...rows,
      ].join('\n');
      return { title: 'Mesh proxy against HAProxy (http only)', markdown };
    }

    progress(`open loop at ${RATE} req/s, ${OPEN_ROUNDS} × ${OPEN_SECONDS} s each`);
    const openTargets = [direct, haHttp, orHttp, haTcp, orTcp].filter((t) => t.served.served);
    const openRuns = new Map<Target, LoadgenResult[]>(openTargets.map((t) => [t, []]));
    for (let round = 0; round < (TCP_ONLY ? 0 : OPEN_ROUNDS); round++) {
      for (const t of openTargets) {
        const r = await loadgen(procs, loadgenBinary, urlOf(t), {
          seconds: OPEN_SECONDS,
          watch: t.watch,
          samples: true,
        });
        progress(
          `${t.name}: p50 ${f3(r.latencyMs.p50)} p99 ${f3(r.latencyMs.p99)} p99.9 ${f3(r.latencyMs.p999)} max ${f3(r.latencyMs.max)} ms, errors ${errorsText(r)}`,
        );
        openRuns.get(t)?.push(r);
      }
    }
    const latency = new Map<Target, LoadgenResult & { quiet: number }>(
      [...openRuns].filter(([, runs]) => runs.length > 0).map(([t, runs]) => [t, mergeRuns(runs)] as const),
    );

    // --- report helpers ---
    const tput = (m: Map<Target, WrkResult[]>, t: Target) => {
      const rs = m.get(t);
      return rs && rs.length > 0 ? mean(rs.map((r) => r.rps)) : Number.NaN;
    };
    const cpuOf = (m: Map<Target, WrkResult[]>, t: Target, f: (r: WrkResult) => number | undefined) => {
      const rs = m.get(t);
      return rs && rs.length > 0 && t.watch ? mean(rs.map((r) => f(r) ?? Number.NaN)) : undefined;
    };
    const errsOf = (m: Map<Target, WrkResult[]>, t: Target) =>
      (m.get(t) ?? [])
        .map((r) => r.errorText)
        .filter(Boolean)
        .join('; ') || '0';
    const notServed = (t: Target) => (t.served.served ? '' : `not served by this build (${t.served.reason})`);
    const ratio = (a: number, b: number) => a / b;

    const throughputRows = (m: Map<Target, WrkResult[]>, targets: Target[], peer: Target) =>
      targets.map((t) => {
        if (!t.served.served) return `| ${t.name} | ${notServed(t)} | | | | | |`;
        const rps = tput(m, t);
        const rounds = (m.get(t) ?? []).map((r) => kRps(r.rps)).join(', ');
        const vs = t === direct ? '' : `${f2(ratio(rps, tput(m, peer)))}×`;
        const perRequest = cpuOf(m, t, (r) => r.cpuUsPerRequest);
        const us = perRequest === undefined ? '' : `${perRequest.toFixed(1)} µs`;
        return `| ${t.name} | ${kRps(rps)} | ${rounds} | ${pct(cpuOf(m, t, (r) => r.cpuPercent))} | ${us} | ${vs} | ${errsOf(m, t)} |`;
      });

    progress('TCP: keep-alive and new connections');
    const tcpPaths = [direct, haTcp, orTcp, kernelTcp];
    const tcpThroughput = await closedLoop(tcpPaths, false);
    const tcpConnects = await closedLoop(tcpPaths, true);
    // The two tcp tables: keep-alive, then a connection per request.
    const tcpTables = [
      '| path | keep-alive req/s | rounds | proxy CPU | proxy CPU per request | vs HAProxy | errors |',
      '|---|---:|---:|---:|---:|---:|---|',
      ...throughputRows(tcpThroughput, tcpPaths, haTcp),
      '',
      '| path | new connections/s | rounds | proxy CPU | proxy CPU per connection | vs HAProxy | errors |',
      '|---|---:|---:|---:|---:|---:|---|',
      ...throughputRows(tcpConnects, tcpPaths, haTcp),
    ];
    if (TCP_ONLY) {
      // ORRERY_BENCH_MESH_ONLY=tcp: the tcp tables alone, for working on the tcp path.
      const loadEnd = loadavg();
      const markdown = [
        `tcp only (ORRERY_BENCH_MESH_ONLY=tcp): the real \`orrery proxy\` (${gitState()}); load average before ${loadBefore.map((v) => v.toFixed(2)).join(', ')}, at the end ${loadEnd.map((v) => v.toFixed(2)).join(', ')}; wrk -t1 -c${WRK_CONNS}, ${ROUNDS} × ${WRK_SECONDS} s.`,
        '',
        ...tcpTables,
      ].join('\n');
      return { title: 'Mesh proxy against HAProxy (tcp only)', markdown };
    }

    progress(`one of three backends SIGKILLed under load, ${KILL_TRIALS} times`);
    const haThree: Target = {
      name: 'HAProxy `mode http` (retries 2, redispatch, health checks every 1 s)',
      host: HAPROXY_ADDRESS,
      port: hp.three,
      watch: haproxy.pid,
      served: { served: true },
    };
    const orName = 'orrery proxy, http port';
    const killRuns = new Map<string, { results: LoadgenResult[]; served: Served }>([
      [orName, { results: [], served: killServed[0] ?? { served: false, reason: 'no Service' } }],
      [haThree.name, { results: [], served: haThree.served }],
    ]);
    const killCounters: string[][] = [];
    for (let i = 0; i < KILL_TRIALS; i++) {
      const victim = three[i % three.length] as Backend;
      const s = killServices[i] as ServiceSetup;
      const orThree: Target = {
        name: orName,
        host: s.vip,
        port: s.port,
        watch: proxy.pid,
        served: killServed[i] ?? { served: false, reason: 'no Service' },
      };
      for (const t of [orThree, haThree]) {
        if (!t.served.served) continue;
        const result = await loadgen(procs, loadgenBinary, urlOf(t), {
          seconds: KILL_RUN_SECONDS,
          watch: t.watch,
          duringAtMs: (OPEN_WARMUP_S + KILL_AFTER_S) * 1000,
          during: () => signalGroup(victim.proc.pid, 'SIGKILL'),
        });
        progress(
          `${t.name}, nginx ${victim.name} killed: ${errorsText(result)} errors of ${result.scheduled}`,
        );
        killRuns.get(t.name)?.results.push(result);
        if (t === orThree && metricsUrl) killCounters.push(await proxyCounters(metricsUrl, s.name));
        // The victim back on its port for the next run.
        await victim.proc.exited;
        const again = await startNginx(procs, root, victim.name, victim.port);
        victim.proc = again.proc;
        if (t === haThree) await sleep(2500); // HAProxy's checks (rise 2, every 1 s) see it up again
      }
    }

    progress(`endpoint changes: ${CHANGES} EndpointSlice writes, in-process proxy`);
    const changeVip = vip(2 + KILL_TRIALS);
    const changes = await endpointChanges(
      kubeConfig,
      api,
      three,
      changeVip,
      await freePort(changeVip),
      inProcess,
    );
    const loadAfter = loadavg();

    const d = latency.get(direct);
    const latencyRows = [direct, haHttp, orHttp, haTcp, orTcp].map((t) => {
      const r = latency.get(t);
      if (!r) return `| ${t.name} | ${notServed(t)} | | | | | | | | | | |`;
      const l = r.latencyMs;
      const added =
        d && t !== direct ? `${signed(l.p50 - d.latencyMs.p50)} / ${signed(l.p99 - d.latencyMs.p99)}` : '';
      return `| ${t.name} | ${f3(l.p50)} | ${f3(l.p90)} | ${f3(l.p99)} | ${f3(l.p999)} | ${f3(l.max)} | ${added} | ${errorsText(r)} | ${pct(cpuPercentOf(r))} | ${r.rssMiB === undefined ? '' : `${r.rssMiB.toFixed(0)} MiB`} | ${r.quiet} of ${OPEN_ROUNDS}${r.quiet === 0 ? ' (all kept)' : ''} | ${f3(r.schedLagMs.p99)} |`;
    });

    const orHttpRps = tput(httpThroughput, orHttp);
    const haHttpRps = tput(httpThroughput, haHttp);
    const orTcpRps = tput(tcpThroughput, orTcp);
    const haTcpRps = tput(tcpThroughput, haTcp);
    const orConnRps = tput(tcpConnects, orTcp);
    const haConnRps = tput(tcpConnects, haTcp);
    const oLat = latency.get(orHttp);
    const orKill = killRuns.get(orName);
    const haKill = killRuns.get(haThree.name);
    const killErrors = (k: { results: LoadgenResult[] } | undefined) =>
      k ? k.results.reduce((a, r) => a + r.errorCount, 0) : Number.NaN;
    const killText = (k: { results: LoadgenResult[] } | undefined) =>
      k && k.results.length > 0
        ? `${killErrors(k)} errors in ${k.results.length} kills (${k.results.map((r) => r.errorCount).join(', ')}) of ${k.results
            .reduce((a, r) => a + r.scheduled, 0)
            .toLocaleString('en')} requests`
        : '?';
    const prop = summarize(changes.propagation);
    const wr = summarize(changes.write);

    const summary = [
      '| what | measured | baseline (same run) | target | verdict |',
      '|---|---:|---:|---:|---|',
      orHttp.served.served
        ? `| HTTP/1.1 keep-alive throughput, wrk -t1 -c${WRK_CONNS} | ${kRps(orHttpRps)} req/s, ${f2(ratio(orHttpRps, haHttpRps))}× HAProxy | HAProxy ${kRps(haHttpRps)}, direct ${kRps(tput(httpThroughput, direct))} | ≥ 0.7× HAProxy | ${verdict(orHttpRps / haHttpRps >= 0.7)} |`
        : `| HTTP/1.1 keep-alive throughput, wrk -t1 -c${WRK_CONNS} | not served by this build | HAProxy ${kRps(haHttpRps)}, direct ${kRps(tput(httpThroughput, direct))} | ≥ 0.7× HAProxy | not measured |`,
      oLat && d
        ? `| added latency at ${RATE.toLocaleString('en')} req/s, open loop (http port) | ${signed(oLat.latencyMs.p50 - d.latencyMs.p50)} ms p50, ${signed(oLat.latencyMs.p99 - d.latencyMs.p99)} ms p99 | direct ${f3(d.latencyMs.p50)} / ${f3(d.latencyMs.p99)} ms | p50 ≤ 0.15 ms, p99 ≤ 1 ms over direct | ${verdict(oLat.latencyMs.p50 - d.latencyMs.p50 <= 0.15 && oLat.latencyMs.p99 - d.latencyMs.p99 <= 1)}${oLat.quiet === 0 || d.quiet === 0 ? ' (p99: no quiet round, the machine was busy; see below)' : ''} |`
        : `| added latency at ${RATE.toLocaleString('en')} req/s, open loop (http port) | not served by this build | ${d ? `direct ${f3(d.latencyMs.p50)} / ${f3(d.latencyMs.p99)} ms` : ''} | p50 ≤ 0.15 ms, p99 ≤ 1 ms over direct | not measured |`,
      `| TCP throughput, keep-alive through the tcp port | ${kRps(orTcpRps)} req/s, ${f2(ratio(orTcpRps, haTcpRps))}× HAProxy | HAProxy \`mode tcp\` ${kRps(haTcpRps)}, direct ${kRps(tput(tcpThroughput, direct))} | ≥ 0.7× HAProxy | ${verdict(orTcpRps / haTcpRps >= 0.7)} |`,
      `| TCP new connections per second (Connection: close) | ${kRps(orConnRps)}/s, ${f2(ratio(orConnRps, haConnRps))}× HAProxy | HAProxy \`mode tcp\` ${kRps(haConnRps)}, direct ${kRps(tput(tcpConnects, direct))} | ≥ 0.7× HAProxy | ${verdict(orConnRps / haConnRps >= 0.7)} |`,
      ...[
        ['TCP throughput, keep-alive through the kernel path', tcpThroughput, 'req/s'],
        ['TCP new connections per second through the kernel path (Connection: close)', tcpConnects, '/s'],
      ].map(([what, m, unit]) => {
        const map = m as Map<Target, WrkResult[]>;
        if (!kernelTcp.served.served)
          return `| ${what} | ${notServed(kernelTcp)} | | ≥ 0.97× direct | not measured |`;
        const k = tput(map, kernelTcp);
        const dd = tput(map, direct);
        // Paired: each round's kernel run against the direct run of the same round (minutes
        // apart at most), the median of those ratios; the machine's load swings more between
        // rounds than the path differs.
        const directRounds = map.get(direct) ?? [];
        const paired = (map.get(kernelTcp) ?? []).map((r, i) => r.rps / (directRounds[i]?.rps ?? Number.NaN));
        const medianRatio = quantile(
          paired.sort((x, y) => x - y),
          0.5,
        );
        return `| ${what} | ${kRps(k)} ${unit}; per round ${paired.map(f2).join(', ')}× direct, median ${f2(medianRatio)}× | direct ${kRps(dd)} | ≥ 0.97× direct | ${verdict(medianRatio >= 0.97)} |`;
      }),
      orKill && orKill.results.length > 0
        ? `| one of three backends SIGKILLed at ${RATE.toLocaleString('en')} req/s (http port) | ${killText(orKill)} | HAProxy ${killText(haKill)} | 0 | ${verdict(killErrors(orKill) === 0)} |`
        : `| one of three backends SIGKILLed at ${RATE.toLocaleString('en')} req/s (http port) | not served by this build | HAProxy ${killText(haKill)} | 0 | not measured |`,
      `| EndpointSlice written → proxy updated (${changes.propagation.length} changes) | p50 ${prop.p50.toFixed(1)} ms, p99 ${prop.p99.toFixed(1)} ms | the API write alone: p50 ${wr.p50.toFixed(1)} ms, p99 ${wr.p99.toFixed(1)} ms | p99 ≤ 100 ms | ${verdict(prop.p99 <= 100)} |`,
    ];

    const killRows = [...killRuns].map(([name, k]) => {
      if (k.results.length === 0)
        return `| ${name} | ${k.served.served ? '' : `not served by this build (${k.served.reason})`} | | | |`;
      const events = k.results.flatMap((r, i) =>
        r.firstErrors.map((e) => ({
          ...e,
          text: `kill ${i + 1}: ${(e.atMs / 1000).toFixed(3)} s ${e.kind}`,
        })),
      );
      const first = events[0];
      const when = first
        ? `${events
            .slice(0, 5)
            .map((e) => e.text)
            .join('; ')}${events.length > 5 ? '; …' : ''}; the first: ${mdText(first.message, 160)}`
        : '';
      const worst = (f: (r: LoadgenResult) => number) => Math.max(...k.results.map(f));
      const errorKinds = mergeErrors(k.results);
      return `| ${name} | ${k.results
        .reduce((a, r) => a + r.scheduled, 0)
        .toLocaleString(
          'en',
        )} | ${killErrors(k)} (${k.results.map((r) => r.errorCount).join(', ')})${errorKinds ? `: ${errorKinds}` : ''} | ${f3(worst((r) => r.latencyMs.p99))} / ${f3(worst((r) => r.latencyMs.max))} | ${when} |`;
    });

    const markdown = [
      `The real \`orrery proxy\` (${gitState()}) as its own process on a private local control plane, serving one namespace whose Services (virtual IPs in 127.77.0.0/16) and EndpointSlices this bench writes; HAProxy ${versions.haproxy} (\`nbthread 1\`) and nginx ${versions.nginx} (one worker, a ${BODY.length}-byte 200, keep-alive, no access log) from Debian's packages; wrk ${versions.wrk} with one thread; open-loop load from bench/loadgen (Go: latency from each request's due time, coordinated omission corrected, ${LOADGEN_CONNS} keep-alive connections). All on loopback, in one run. ${cpus().length} CPUs: through a proxy, wrk, the proxy and nginx share them (direct: wrk and nginx only). Load average (1/5/15 min) before: ${loadBefore.map((v) => v.toFixed(2)).join(', ')}; at the end: ${loadAfter.map((v) => v.toFixed(2)).join(', ')}.`,
      '',
      ...summary,
      '',
      `HTTP/1.1 keep-alive throughput, wrk -t1 -c${WRK_CONNS}, ${ROUNDS} interleaved rounds of ${WRK_SECONDS} s (mean; each round listed); CPU of the proxy process (user + system, /proc/<pid>/stat) over the run, in % of one core, and per request:`,
      '',
      '| path | req/s | rounds | proxy CPU | proxy CPU per request | vs HAProxy | errors |',
      '|---|---:|---:|---:|---:|---:|---|',
      ...throughputRows(httpThroughput, [direct, haHttp, orHttp], haHttp),
      '',
      `Open loop at ${RATE.toLocaleString('en')} req/s, ${OPEN_ROUNDS} interleaved rounds of ${OPEN_SECONDS} s per path (each after ${OPEN_WARMUP_S} s not recorded; quantiles over the merged samples), ${LOADGEN_CONNS} connections, milliseconds; added = this path − direct (p50 / p99); CPU of the proxy over the runs in % of one core, RSS at their end; a round is quiet when the generator itself sent on time (due → sent p99 at most ${DISTURBED_LAG_MS} ms; a quiet machine keeps it near 0.05 ms): in the others, other work stalled the machine and their tails say more about that work than about the path, so the quantiles are those of the quiet rounds (of all, when none was); errors count in every round; generator late p99: the worst kept round's:`,
      '',
      '| path | p50 | p90 | p99 | p99.9 | max | added p50 / p99 | errors | proxy CPU | proxy RSS | quiet rounds | generator late p99 |',
      '|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|',
      ...latencyRows,
      '',
      `TCP, wrk -t1 -c${WRK_CONNS} speaking HTTP/1.1 through the tcp proxies to the same nginx, ${ROUNDS} × ${WRK_SECONDS} s: keep-alive, then \`Connection: close\` (one connection per request: new connections per second):`,
      '',
      ...tcpTables,
      '',
      `One of three nginx backends SIGKILLed (its process group) ${KILL_AFTER_S} s into a ${KILL_RUN_SECONDS} s open-loop run at ${RATE.toLocaleString('en')} req/s, ${KILL_TRIALS} times: each kill in a run of its own, a different backend each time (started again after the run), and for the orrery proxy a Service of its own each time (a fresh pool and outlier detector), with the spec's defaults (retries: 2 on connect-failure and reset; outlier detection: 5 consecutive errors, 10 s sweep). Errors per kill in brackets; p99 / max of the worst run; error times from the start of the measured part:`,
      '',
      '| path | requests | client-visible errors | p99 / max ms | first errors |',
      '|---|---:|---|---:|---|',
      ...killRows,
      ...(killCounters.length > 0
        ? [
            '',
            `The orrery proxy's counters for each kill's Service after its run (/metrics, non-zero): ${killCounters
              .map((c, i) => `kill ${i + 1}: ${c.join(', ') || 'none'}`)
              .join('; ')}.`,
          ]
        : []),
      '',
      `Endpoint change: the EndpointSlice of a tcp Service replaced (one of three endpoints alternately not ready and ready), timed from the write until the proxy's \`ports()\` shows the new ready count; the proxy in this process (\`startProxy\`), on a namespace of its own; ${changes.propagation.length} changes after ${CHANGES_WARMUP} not recorded (the p99 of 50 is their largest): p50 ${prop.p50.toFixed(1)} ms, p99 ${prop.p99.toFixed(1)} ms, mean ${prop.mean.toFixed(1)} ms; of it the PUT round trip p50 ${wr.p50.toFixed(1)} ms, p99 ${wr.p99.toFixed(1)} ms. The same-host fast path (process exit → out of the pool ≤ 5 ms) is measured by test/integration/mesh-fastpath.test.ts (mesh/README.md).`,
      '',
      proxyLog.size === 0
        ? 'The proxy logged no warning or error.'
        : `The proxy logged (warn and above, by message): ${[...proxyLog].map(([k, n]) => `${k} × ${n}`).join(', ')}${firstProxyError ? `; the first error: \`${firstProxyError.replaceAll('`', "'")}\`` : ''}.`,
    ].join('\n');
    return { title: 'Mesh proxy against HAProxy', markdown };
  } finally {
    await inProcess.proxy?.stop({ drainTimeoutMs: 0 }).catch(() => {});
    if (proxyProc?.alive()) {
      // SIGTERM first: it stops as it would in production (and writes its profile, if asked to).
      signalGroup(proxyProc.pid, 'SIGTERM');
      await Promise.race([proxyProc.exited, sleep(10_000)]);
    }
    await procs.stopAll();
    if (kernel && !('reason' in kernel)) kernel.stop();
    api?.close();
    await plane?.stop();
    rmSync(root, { recursive: true, force: true });
    process.off('exit', killEverything);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const result = await meshBench();
  console.log(`## ${result.title}\n\n${result.markdown}`);
  process.exit(0);
}
