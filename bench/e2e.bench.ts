/**
 * docs/DESIGN.md §9, end to end on a private local control plane, with the real operator (child process)
 * and real host agents (child processes):
 * - Instance created -> its Replica Running (1 replica), p50/p99; baseline in the same run: the
 *   API server's own create -> watch-event latency for a ConfigMap (the floor any controller pays).
 * - 1,000 replicas applied -> all Running.
 * - API writes per replica start (from kube-apiserver's apiserver_request_total).
 * - operator and agent memory (RSS) before the 1,000, right after, and once idle.
 * - host lost (agent SIGKILLed) -> its replicas Running elsewhere; floor: lease duration.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { untilRuntimeReady } from '../cli/runtime.ts';
import { type ControlPlane, startControlPlane } from '../controlplane/controlplane.ts';
import { installCrds } from '../crds/install.ts';
import { INSTANCES, REPLICAS } from '../crds/resources.ts';
import type { Instance, Replica } from '../crds/types.ts';
import {
  type Applied,
  CONFIGMAPS,
  Informer,
  KubeApi,
  loadKubeConfig,
  type ResourceClient,
  resourceClient,
  typed,
} from '../kube/index.ts';
import { CgroupManager, detectCgroupLayout } from '../node-runtime/cgroups/index.ts';
import { isTmpfs } from '../platform/fs.ts';
import { freePort } from '../platform/net.ts';
import { cpuTimes, machineCpuSeconds, rssKiB } from './proc.ts';
import { quantile } from './stats.ts';

const repoRoot = join(import.meta.dirname, '..');
// Overridable for a quick look at one phase: ORRERY_BENCH_MANY=10 node bench/e2e.bench.ts
const SINGLE_ROUNDS = Number(process.env.ORRERY_BENCH_ROUNDS ?? 40);
const MANY = Number(process.env.ORRERY_BENCH_MANY ?? 1000);
/** How long after the 1,000 the daemons' steady-state RSS is read (ORRERY_BENCH_IDLE_MS for quick looks). */
const IDLE_MS = Number(process.env.ORRERY_BENCH_IDLE_MS ?? 30_000);

/** CPU of a process and of its reaped children, seconds; `system`: kernel time only. */
function cpuSeconds(pid: number, which: 'system' | 'both' = 'both'): number {
  const t = cpuTimes(pid);
  return t.system + t.childrenSystem + (which === 'both' ? t.user + t.childrenUser : 0);
}

interface Daemon {
  child: ChildProcess;
  stop(): Promise<void>;
}

async function daemon(args: string[], waitForLine: boolean): Promise<Daemon> {
  const nodeFlags: string[] = [];
  // ORRERY_BENCH_NODE_FLAGS="runtime=--flag,--flag operator=--flag": extra V8/Node flags per daemon.
  for (const entry of (process.env.ORRERY_BENCH_NODE_FLAGS ?? '').split(' ')) {
    const at = entry.indexOf('=');
    if (at > 0 && entry.slice(0, at) === args[0]) nodeFlags.push(...entry.slice(at + 1).split(','));
  }
  // ORRERY_BENCH_CPUPROF=DIR: V8 CPU profiles of the daemons, written when they exit.
  if (process.env.ORRERY_BENCH_CPUPROF)
    nodeFlags.push('--cpu-prof', `--cpu-prof-dir=${process.env.ORRERY_BENCH_CPUPROF}`);
  const child = spawn(process.execPath, [...nodeFlags, join(repoRoot, 'bin', 'orrery.js'), ...args], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', process.env.ORRERY_BENCH_DEBUG ? 'inherit' : 'ignore'],
    env: {
      ...process.env,
      ORRERY_LOG_LEVEL:
        process.env.ORRERY_BENCH_LOG_LEVEL ?? (process.env.ORRERY_BENCH_DEBUG ? 'info' : 'warn'),
    },
  });
  // The daemons log to stdout (pino's default): it is always drained, or a full pipe would block
  // their event loop mid-benchmark; with ORRERY_BENCH_DEBUG it is shown on stderr.
  const stdout = child.stdout as NodeJS.ReadableStream;
  if (process.env.ORRERY_BENCH_DEBUG) stdout.pipe(process.stderr);
  else stdout.resume();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  if (!waitForLine) return { child, stop };
  // `orrery runtime` prints its ready line once registered and serving.
  await untilRuntimeReady(child);
  return { child, stop };
}

function instance(name: string, replicas: number): Applied<Instance> {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name, namespace: 'default' },
    spec: {
      replicas,
      template: {
        metadata: { labels: { bench: name } },
        processes: [{ name: 'main', command: ['/bin/sleep', '100000'] }],
      },
    },
  };
}

/**
 * Writes the API server has served for Orrery's objects, Leases and Events (its own counter), in
 * all and by verb/resource/subresource (printed with ORRERY_BENCH_DEBUG).
 */
function writeCounts(kubeconfig: string): { total: number; by: Map<string, number> } {
  const text = execFileSync('kubectl', ['--kubeconfig', kubeconfig, 'get', '--raw', '/metrics'], {
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  let total = 0;
  const by = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const verb = /verb="(POST|PUT|PATCH|DELETE|APPLY)"/.exec(line)?.[1];
    if (!verb) continue;
    if (!/group="orrery\.dev"|resource="leases"|resource="events"/.test(line)) continue;
    const n = Number(line.slice(line.lastIndexOf(' ') + 1));
    const key = `${verb} ${/resource="([^"]*)"/.exec(line)?.[1]}/${/subresource="([^"]*)"/.exec(line)?.[1] ?? ''}`;
    by.set(key, (by.get(key) ?? 0) + n);
    total += n;
  }
  return { total, by };
}

function debugWrites(what: string, before: Map<string, number>, after: Map<string, number>, per: number) {
  if (!process.env.ORRERY_BENCH_DEBUG) return;
  const lines = [...after]
    .map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / per] as const)
    .filter(([, v]) => v > 0)
    .map(([k, v]) => `  ${k}: ${v.toFixed(2)}`);
  console.error(`writes per replica, ${what}:\n${lines.join('\n')}`);
}

type WaitFor = (what: string, done: () => boolean, timeoutMs: number) => Promise<void>;

/**
 * Waits re-checked on each watch event (`poke`), never polled: the observer takes CPU from what it
 * measures, so it does little.
 */
function eventWaits(): { poke: () => void; waitFor: WaitFor } {
  const waiters = new Set<() => void>();
  const poke = () => {
    for (const check of waiters) check();
  };
  const waitFor: WaitFor = (what, done, timeoutMs) =>
    new Promise<void>((resolve, reject) => {
      if (done()) return resolve();
      const check = () => {
        if (!done()) return;
        stop();
        resolve();
      };
      const timer = setTimeout(() => {
        stop();
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      const stop = () => {
        waiters.delete(check);
        clearTimeout(timer);
      };
      waiters.add(check);
    });
  return { poke, waitFor };
}

/** What the bench sees of the Replicas: when each first reported Running, and counts per Instance. */
interface ReplicaTimes {
  informer: Informer<Replica>;
  runningAt: Map<string, number>;
  /** With ORRERY_BENCH_STAGES only: when each Replica was first seen, and first seen bound. */
  createdAt: Map<string, number>;
  boundAt: Map<string, number>;
  /** Replicas of the Instance seen Running. */
  runningOf(instanceName: string): number;
  /** Forget that the Instance's Replicas ran (they are to be seen Running again elsewhere). */
  forgetRunning(instanceName: string): void;
}

/**
 * Watches Replicas and remembers when each first reports Running. The API server filters the
 * watch to Running replicas (a selectable field of the CRD), so the observer gets one event per
 * replica instead of one per write. With `stages` (ORRERY_BENCH_STAGES=1) it watches every event
 * instead, for a timeline of when Replicas were created, bound and Running (it costs the system
 * under test CPU, so its totals are not comparable with a plain run's).
 */
async function observeReplicas(
  replicas: ResourceClient<Replica>,
  stages: boolean,
  poke: () => void,
): Promise<ReplicaTimes> {
  const runningAt = new Map<string, number>();
  const running = new Map<string, number>();
  const runningOf = (instanceName: string) => running.get(instanceName) ?? 0;
  const createdAt = new Map<string, number>();
  const boundAt = new Map<string, number>();
  const informer = new Informer(replicas, {
    resyncPeriodMs: 0,
    ...(stages ? {} : { fieldSelector: 'status.phase=Running' }),
  });
  const note = (r: Replica) => {
    const name = r.metadata.name as string;
    if (stages) {
      if (!createdAt.has(name)) createdAt.set(name, performance.now());
      if (r.spec.host && !boundAt.has(name)) boundAt.set(name, performance.now());
    }
    if (r.status?.phase === 'Running' && !runningAt.has(name)) {
      runningAt.set(name, performance.now());
      running.set(r.spec.instance, runningOf(r.spec.instance) + 1);
      poke();
    }
  };
  const forget = (r: Replica) => {
    if (runningAt.delete(r.metadata.name as string))
      running.set(r.spec.instance, runningOf(r.spec.instance) - 1);
    poke();
  };
  informer.addHandlers({ add: note, update: (_, r) => note(r), delete: forget });
  informer.start();
  await informer.waitForSync();
  return {
    informer,
    runningAt,
    createdAt,
    boundAt,
    runningOf,
    forgetRunning(instanceName) {
      for (const key of [...runningAt.keys()].filter((k) => k.startsWith(`${instanceName}-`))) {
        runningAt.delete(key);
      }
      running.delete(instanceName);
    },
  };
}

/** The floor any controller pays: create -> watch event of a plain object, through the same API server. */
async function apiBaseline(api: KubeApi, waits: ReturnType<typeof eventWaits>): Promise<number[]> {
  const configMaps = resourceClient(api, CONFIGMAPS, 'bench');
  const seen = new Map<string, number>();
  const cmInformer = new Informer(configMaps, { namespace: 'default', resyncPeriodMs: 0 });
  cmInformer.addHandlers({
    add: (o) => {
      seen.set(o.metadata?.name as string, performance.now());
      waits.poke();
    },
  });
  cmInformer.start();
  await cmInformer.waitForSync();
  const baseline: number[] = [];
  for (let i = 0; i < SINGLE_ROUNDS; i++) {
    const name = `bench-cm-${i}`;
    const t0 = performance.now();
    await configMaps.create({ metadata: { name, namespace: 'default' } } as never, {
      namespace: 'default',
    });
    await waits.waitFor(name, () => seen.has(name), 10_000);
    baseline.push((seen.get(name) as number) - t0);
  }
  await cmInformer.stop();
  return baseline;
}

/** What every phase works with. */
interface Run {
  api: KubeApi;
  plane: ControlPlane;
  instances: ResourceClient<Instance>;
  replicas: ReplicaTimes;
  waitFor: WaitFor;
  stages: boolean;
}

/** One single-replica Instance at a time: create -> Running, and the API writes per start. */
async function singleStarts(run: Run): Promise<{ single: number[]; writesPerStart: number }> {
  const { instances, replicas, waitFor, stages, plane } = run;
  // Wait until the operator leads and the host is schedulable: one warm-up Instance.
  await instances.create(instance('warmup', 1), { namespace: 'default' });
  await waitFor('warm-up replica', () => replicas.runningAt.has('warmup-0'), 60_000);

  const single: number[] = [];
  const singleCreated: number[] = [];
  const writesBefore = writeCounts(plane.kubeconfig);
  for (let i = 0; i < SINGLE_ROUNDS; i++) {
    const name = `one-${i}`;
    const t0 = performance.now();
    await instances.create(instance(name, 1), { namespace: 'default' });
    await waitFor(`${name}-0 Running`, () => replicas.runningAt.has(`${name}-0`), 30_000);
    single.push((replicas.runningAt.get(`${name}-0`) as number) - t0);
    if (stages) singleCreated.push((replicas.createdAt.get(`${name}-0`) as number) - t0);
  }
  if (stages) {
    const p50 = (v: number[]) => quantile(v, 0.5).toFixed(1);
    console.error(`single: Replica seen p50 ${p50(singleCreated)} ms, Running seen p50 ${p50(single)} ms`);
  }
  const writesAfter = writeCounts(plane.kubeconfig);
  debugWrites('single', writesBefore.by, writesAfter.by, SINGLE_ROUNDS);
  // The replicas of these rounds go, or they would move in the failover too.
  const earlier = ['warmup', ...Array.from({ length: SINGLE_ROUNDS }, (_, i) => `one-${i}`)];
  await Promise.all(earlier.map((name) => instances.delete(name, { namespace: 'default' })));
  await waitFor('the earlier replicas gone', () => replicas.informer.list().length === 0, 60_000);
  return { single, writesPerStart: (writesAfter.total - writesBefore.total) / SINGLE_ROUNDS };
}

/**
 * On a quiet system: 10 replicas on host a (host b cordoned meanwhile), then host a's agent
 * SIGKILLed; how long until the 10 run on host b.
 */
async function failover(run: Run, hostA: Daemon, hostB: string): Promise<number> {
  const { api, instances, replicas, waitFor } = run;
  const cordon = (unschedulable: boolean) =>
    api.request({
      method: 'PATCH',
      path: `/apis/orrery.dev/v1alpha1/hosts/${hostB}`,
      contentType: 'application/merge-patch+json',
      body: { spec: { unschedulable } },
    });
  await cordon(true);
  await instances.create(instance('fail', 10), { namespace: 'default' });
  await waitFor('10 replicas Running on host a', () => replicas.runningOf('fail') >= 10, 60_000);
  await cordon(false);
  const killedAt = performance.now();
  if (process.env.ORRERY_BENCH_DEBUG) console.error(`killed host a at ${Date.now()}`);
  replicas.forgetRunning('fail');
  hostA.child.kill('SIGKILL');
  await waitFor(
    `10 replicas Running on host ${hostB}`,
    () =>
      replicas.informer.list(
        (r) => r.spec.instance === 'fail' && r.spec.host === hostB && r.status?.phase === 'Running',
      ).length >= 10,
    60_000,
  );
  return performance.now() - killedAt;
}

interface ManyResult {
  manyMs: number;
  /** CPU used by each part during the ramp, as text. */
  manyCpu: string;
  rss: Record<'before' | 'loaded' | 'idle', { agent: number; operator: number }>;
}

let operatorMetricsPort: number | undefined;

/** The operator's reconciles so far, by controller (ORRERY_BENCH_DEBUG only). */
async function operatorReconciles(): Promise<Map<string, number>> {
  const by = new Map<string, number>();
  if (!operatorMetricsPort) return by;
  const text = await fetch(`http://127.0.0.1:${operatorMetricsPort}/metrics`).then((r) => r.text());
  for (const line of text.split('\n')) {
    if (!line.startsWith('orrery_operator_reconcile_total{')) continue;
    const controller = /controller="([^"]*)"/.exec(line)?.[1] ?? '?';
    by.set(controller, (by.get(controller) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return by;
}

/** MANY replicas in one Instance: until all are Running, the CPU that took, and the daemons' RSS. */
async function manyAtOnce(run: Run, operator: Daemon, host: Daemon): Promise<ManyResult> {
  const { instances, replicas, waitFor, stages, plane } = run;
  const manyBefore = writeCounts(plane.kubeconfig).by;
  const reconcilesBefore = await operatorReconciles();
  const cpuOf = () => ({
    'control plane': cpuSeconds(plane.pid),
    operator: cpuSeconds(operator.child.pid as number),
    agent: cpuSeconds(host.child.pid as number),
    bench: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6,
    'whole machine': machineCpuSeconds(),
  });
  const cpuDetailOf = () => ({
    'control plane system': cpuSeconds(plane.pid, 'system'),
    'operator system': cpuSeconds(operator.child.pid as number, 'system'),
    'agent system': cpuSeconds(host.child.pid as number, 'system'),
  });
  const rssOfDaemons = () => ({
    agent: rssKiB(host.child.pid as number),
    operator: rssKiB(operator.child.pid as number),
  });
  const rssBefore = rssOfDaemons();
  const cpuBefore = cpuOf();
  const cpuDetailBefore = cpuDetailOf();
  profileDuringTheRamp(plane.kubeconfig);
  const t0 = performance.now();
  await instances.create(instance('many', MANY), { namespace: 'default' });
  await waitFor(`${MANY} replicas Running`, () => replicas.runningOf('many') >= MANY, 300_000);
  const manyMs = performance.now() - t0;
  debugWrites(`${MANY} at once`, manyBefore, writeCounts(plane.kubeconfig).by, MANY);
  if (process.env.ORRERY_BENCH_DEBUG) {
    const after = await operatorReconciles();
    const lines = [...after].map(([k, v]) => `  ${k}: ${v - (reconcilesBefore.get(k) ?? 0)}`);
    console.error(`operator reconciles during the ${MANY}:\n${lines.join('\n')}`);
  }
  if (stages) {
    const stage = (what: string, at: Map<string, number>) => {
      const times = [...at].filter(([k]) => k.startsWith('many-')).map(([, v]) => v - t0);
      const q = (p: number) => (quantile(times, p) / 1000).toFixed(2);
      console.error(`${what}: first ${q(0)} s, p50 ${q(0.5)} s, p90 ${q(0.9)} s, last ${q(1)} s`);
    };
    stage('created', replicas.createdAt);
    stage('bound', replicas.boundAt);
    stage('running', replicas.runningAt);
  }
  const used = <K extends string>(before: Record<K, number>, after: Record<K, number>) =>
    Object.entries<number>(after)
      .map(([k, v]) => `${k} ${(v - before[k as K]).toFixed(1)} s`)
      .join(', ');
  const manyCpu = used(cpuBefore, cpuOf());
  console.error(
    `CPU during the ${MANY}: ${manyCpu}; of which ${used(cpuDetailBefore, cpuDetailOf())}; control plane RSS ${(rssKiB(plane.pid) / 1024).toFixed(0)} MiB`,
  );
  await sleep(2000); // let status writes settle
  debugWrites(`${MANY} at once, 2 s later`, manyBefore, writeCounts(plane.kubeconfig).by, MANY);
  const rssLoaded = rssOfDaemons();
  // Steady state: V8 gives back the young generation grown during the burst once it is idle.
  await sleep(IDLE_MS);
  const rssIdle = rssOfDaemons();
  await instances.delete('many', { namespace: 'default' });
  await waitFor('1,000 replicas gone', () => replicas.runningOf('many') === 0, 300_000);
  return { manyMs, manyCpu, rss: { before: rssBefore, loaded: rssLoaded, idle: rssIdle } };
}

/**
 * ORRERY_BENCH_PPROF=FILE: a 10 s CPU profile of the control plane (kube-apiserver + etcd) from
 * now (`go tool pprof -top FILE`). ORRERY_BENCH_PERF=FILE: `perf record -a -g` of the whole
 * machine for 8 s.
 */
function profileDuringTheRamp(kubeconfig: string): void {
  const pprof = process.env.ORRERY_BENCH_PPROF;
  if (pprof) {
    void import('node:fs').then(({ createWriteStream }) => {
      const child = spawn(
        'kubectl',
        ['--kubeconfig', kubeconfig, 'get', '--raw', '/debug/pprof/profile?seconds=10'],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      child.stdout.pipe(createWriteStream(pprof));
    });
  }
  if (process.env.ORRERY_BENCH_PERF) {
    spawn('perf', ['record', '-a', '-g', '-o', process.env.ORRERY_BENCH_PERF, '--', 'sleep', '8'], {
      stdio: 'ignore',
    });
  }
}

function report(r: {
  baseline: number[];
  single: number[];
  writesPerStart: number;
  failoverMs: number;
  many: ManyResult;
}): string {
  const { manyMs, manyCpu, rss } = r.many;
  const ms = (v: number) => `${v.toFixed(1)} ms`;
  const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;
  const p50 = quantile(r.single, 0.5);
  const p99 = quantile(r.single, 0.99);
  const rows = [
    '| what | measured | baseline (same run) | target | verdict |',
    '|---|---:|---:|---:|---|',
    `| Instance created -> Replica Running, p50 (${SINGLE_ROUNDS} runs) | ${ms(p50)} | ${ms(quantile(r.baseline, 0.5))} API create -> watch event (${(p50 / quantile(r.baseline, 0.5)).toFixed(1)}×) | ≤ 50 ms | ${p50 <= 50 ? 'met' : 'not met'} |`,
    `| Instance created -> Replica Running, p99 | ${ms(p99)} | ${ms(quantile(r.baseline, 0.99))} | ≤ 150 ms | ${p99 <= 150 ? 'met' : 'not met'} |`,
    `| ${MANY} replicas applied -> all Running | ${(manyMs / 1000).toFixed(2)} s | | ≤ 5 s | ${manyMs <= 5000 ? 'met' : 'not met'} |`,
    `| CPU used during the ${MANY} (${((cpus().length * manyMs) / 1000).toFixed(1)} core-seconds available on ${cpus().length} CPUs) | ${manyCpu} | | | |`,
    `| API writes per replica start (orrery.dev objects, Leases, Events) | ${r.writesPerStart.toFixed(1)} | | | |`,
    ...(['agent', 'operator'] as const).map(
      (who) =>
        `| ${who === 'agent' ? 'host agent' : 'operator'} RSS: before -> 2 s after the ${MANY} -> ${IDLE_MS / 1000} s later | ${mib(rss.before[who])} -> ${mib(rss.loaded[who])} -> ${mib(rss.idle[who])} | | | |`,
    ),
    `| host lost (agent SIGKILLed) -> its 10 replicas Running elsewhere | ${ms(r.failoverMs)} | floor 1000 ms: the host grace (= the 1 s lease), counted from the last renewal | ≤ 1.5 s | ${r.failoverMs <= 1500 ? 'met' : 'not met'} |`,
  ];
  return [
    'Private local control plane, `orrery operator` and `orrery runtime` as child processes,',
    'default isolation (pid, mount, uts, ipc namespaces: each replica is orrery-init + the workload).',
    'Latencies are measured from the create call to the watch event that shows phase Running.',
    '',
    ...rows,
  ].join('\n');
}

export default async function bench(): Promise<{ title: string; markdown: string }> {
  const root = mkdtempSync(join(tmpdir(), 'orrery-bench-e2e-'));
  // The records of the live processes on tmpfs, as the DaemonSet keeps them (the node's
  // /run/orrery); /dev/shm stands in where /run is not a tmpfs.
  const tmpfs = ['/run', '/dev/shm'].find(isTmpfs);
  const runRoot = tmpfs ? mkdtempSync(join(tmpfs, 'orrery-bench-e2e-')) : undefined;
  const parents: string[] = [];
  const daemons: Daemon[] = [];
  let plane: ControlPlane | undefined;
  try {
    // ORRERY_BENCH_APISERVER_FLAGS: extra kube-apiserver flags for experiments (space-separated).
    const apiserverFlags = (process.env.ORRERY_BENCH_APISERVER_FLAGS ?? '').split(' ').filter(Boolean);
    if (process.env.ORRERY_BENCH_PPROF) apiserverFlags.push('--profiling=true');
    const cp = await startControlPlane({ dataDir: join(root, 'cp'), apiserverFlags });
    plane = cp;
    const kubeConfig = loadKubeConfig({ kubeconfig: cp.kubeconfig });
    await installCrds(kubeConfig);
    const api = await KubeApi.fromKubeConfig(kubeConfig);

    const startHost = async (name: string) => {
      const parent = `orrery-bench-${randomBytes(3).toString('hex')}`;
      parents.push(parent);
      const d = await daemon(
        [
          'runtime',
          '--kubeconfig',
          cp.kubeconfig,
          '--host-name',
          name,
          '--state-dir',
          join(root, name),
          ...(runRoot ? ['--run-dir', join(runRoot, name)] : []),
          '--cgroup-parent',
          parent,
          '--stop-workloads-on-exit',
          '--max-replicas', // room for the 1,000 plus the single-replica rounds
          '2000',
        ],
        true,
      );
      daemons.push(d);
      return d;
    };
    const hostA = await startHost('bench-a');
    // With ORRERY_BENCH_DEBUG the operator's /metrics on a known port: reconciles per controller.
    operatorMetricsPort = process.env.ORRERY_BENCH_DEBUG ? await freePort() : undefined;
    const operator = await daemon(
      [
        'operator',
        '--kubeconfig',
        cp.kubeconfig,
        ...(operatorMetricsPort ? ['--metrics-listen', `127.0.0.1:${operatorMetricsPort}`] : []),
      ],
      false,
    );
    daemons.push(operator);

    const waits = eventWaits();
    const stages = Boolean(process.env.ORRERY_BENCH_STAGES);
    const run: Run = {
      api,
      plane: cp,
      instances: resourceClient(api, typed<Instance>(INSTANCES), 'bench'),
      replicas: await observeReplicas(
        resourceClient(api, typed<Replica>(REPLICAS), 'bench'),
        stages,
        waits.poke,
      ),
      waitFor: waits.waitFor,
      stages,
    };
    const baseline = await apiBaseline(api, waits);
    const { single, writesPerStart } = await singleStarts(run);
    // Failover first, on a quiet system; the 1,000 replicas then run on the second host.
    const hostB = await startHost('bench-b');
    const failoverMs = await failover(run, hostA, 'bench-b');
    const many = await manyAtOnce(run, operator, hostB);
    await run.replicas.informer.stop();
    api.close();

    const markdown = report({ baseline, single, writesPerStart, failoverMs, many });
    return { title: 'End to end: apply -> Running, 1,000 replicas, failover', markdown };
  } finally {
    for (const d of daemons.reverse()) await d.stop().catch(() => {});
    await plane?.stop();
    for (const parent of parents) {
      await new CgroupManager({ layout: detectCgroupLayout(), parent }).removeAll().catch(() => {});
    }
    rmSync(root, { recursive: true, force: true });
    if (runRoot) rmSync(runRoot, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const result = await bench();
  console.log(`## ${result.title}\n\n${result.markdown}`);
  process.exit(0);
}
