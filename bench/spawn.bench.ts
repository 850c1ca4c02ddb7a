/**
 * docs/DESIGN.md §9 "spawn an isolated, cgroup-limited replica": latency of the native addon's spawn()
 * for a replica in new user+pid+mount+uts+ipc namespaces (its ids mapped to an unprivileged host
 * range, as every replica's are by default), joined to a v2 and a v1 (memory) test
 * cgroup, exec'ing /bin/true, until spawn() returns (the workload has exec'd). Baselines measured
 * in the same run: a raw C clone3+exec with the same flags and cgroup joins
 * (bench/baseline/clone3-exec.c, compiled here with cc) and Node's child_process.spawn (until its
 * 'spawn' event, no isolation). Target: addon p50 ≤ 1.5× raw p50, also for a replica with two
 * volumes mounted (issue 19): a configMap-like tmpfs attached read-only and an emptyDir directory
 * attached read-write, as the engine attaches them (SpawnRequest.binds); and, beside the target
 * rows, a replica with a read-only hostPath volume (the mount helper's cost).
 */
import { spawn as cpSpawn, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type ExitStatus,
  mountTmpfs,
  type Namespace,
  remountReadOnly,
  type SpawnRequest,
  type SpawnTracePoint,
  spawn,
  spawnTrace,
  unmount,
  watchExit,
} from '../node-runtime/native/index.ts';
import { quantile, summarize } from './stats.ts';

// Interleaved in short chunks so load from other work on the machine (2 CPUs, shared) hits every
// variant alike; the first rounds of each chunk are dropped (cold caches after the switch).
const CHUNKS = 30;
const CHUNK = 20;
const WARMUP = 4; // per chunk
const TARGET_RATIO = 1.5;
const ISOLATED: Namespace[] = ['pid', 'mount', 'uts', 'ipc'];
/** The host ids the bench's user namespaces map to: above the engine's default slots (2^30..2^31). */
const HOST_ID = 3 * 2 ** 30;

/**
 * Where the exit status files go: the runtime keeps them in its run dir, on tmpfs where the machine
 * has one (docs/DESIGN.md §12, "Process records on tmpfs"); with a user namespace the parent creates
 * the file before the clone (the child's host uid may not write there), so its cost is the
 * filesystem's. /dev/shm stands for the run dir; without it the log dir's filesystem is used.
 */
function makeRunDir(logDir: string): string {
  return existsSync('/dev/shm') ? mkdtempSync(join('/dev/shm', 'orrery-bench-spawn-')) : logDir;
}

/** /bin/true as an isolated replica: the request every addon row spawns. */
function isolatedTrue(
  v2Dir: string,
  v1Join: string,
  dir: string,
  init: boolean,
  runDir = dir,
  binds?: SpawnRequest['binds'],
): SpawnRequest {
  return {
    ...(binds ? { binds } : {}),
    file: '/bin/true',
    argv: ['true'],
    env: [],
    namespaces: ISOLATED,
    hostname: 'bench',
    init,
    cgroup: { v2Dir, procsFiles: [v1Join] },
    logFile: join(dir, 'spawn.log'),
    exitStatusFile: join(runDir, 'exit-status'),
    userNamespace: { hostUid: HOST_ID, hostGid: HOST_ID, size: 65536 },
  };
}

/**
 * The two volumes of the volumes row, made once as the engine makes them (node-runtime/volumes/):
 * a tmpfs holding a file (a configMap volume) attached read-only from the read-only mount the
 * manager keeps (which the replica's namespace copies locked), and a directory on the temp
 * dir's filesystem (a disk emptyDir) attached read-write, each at a mount point of its own.
 */
function twoVolumes(dir: string): NonNullable<SpawnRequest['binds']> {
  const config = join(dir, 'config');
  const data = join(dir, 'data');
  for (const d of [config, data, join(dir, 'mnt-config'), join(dir, 'mnt-data')]) mkdirSync(d);
  // The mount points are reached by the replica's (unprivileged) host ids, as a workload's are.
  chmodSync(dir, 0o711);
  // As volumes/manager.ts keeps a replica's files: a tmpfs of 0700 owned by the replica's root,
  // a directory per volume, the mount read-only.
  mountTmpfs(config, `size=1m,mode=0700,uid=${HOST_ID},gid=${HOST_ID}`);
  mkdirSync(join(config, 'app'), { mode: 0o755 });
  writeFileSync(join(config, 'app', 'app.conf'), 'key=value\n');
  remountReadOnly(config);
  return [
    { source: join(config, 'app'), target: join(dir, 'mnt-config'), readOnly: true },
    { source: data, target: join(dir, 'mnt-data'), readOnly: false },
  ];
}

/**
 * A read-only hostPath volume (resolved below root "/"): no read-only mount of the runtime's to
 * clone from, so the spawn's mount helper attaches it before the replica's namespaces are made
 * (node-runtime/native/README.md, "Locked volumes"). Reported beside the target rows, not in them.
 */
function hostPathVolume(dir: string): NonNullable<SpawnRequest['binds']> {
  for (const d of ['host', 'mnt-host']) mkdirSync(join(dir, d));
  writeFileSync(join(dir, 'host', 'greeting'), 'hello\n');
  return [{ source: join(dir, 'host'), target: join(dir, 'mnt-host'), readOnly: true, root: '/' }];
}

/** Undoes twoVolumes' mounts. */
function unmountVolumes(dir: string): void {
  unmount(join(dir, 'config'));
}

async function measureAddon(
  v2Dir: string,
  v1Procs: string,
  dir: string,
  runDir: string,
  init: boolean,
  binds?: SpawnRequest['binds'],
): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < CHUNK; i++) {
    const start = process.hrtime.bigint();
    const child = spawn(isolatedTrue(v2Dir, v1Procs, dir, init, runDir, binds));
    samples.push(Number(process.hrtime.bigint() - start) / 1e6);
    const status = await new Promise<ExitStatus>((resolve) => watchExit(child.pidfd, resolve));
    if (status.code !== 0) throw new Error(`/bin/true exited ${JSON.stringify(status)}`);
  }
  return samples.slice(WARMUP);
}

function compileRaw(dir: string): string {
  const source = fileURLToPath(new URL('./baseline/clone3-exec.c', import.meta.url));
  const binary = join(dir, 'clone3-exec');
  execFileSync('cc', ['-O2', '-o', binary, source]);
  return binary;
}

function measureRaw(binary: string, v2Dir: string, v1Procs: string): number[] {
  const out = execFileSync(binary, [String(CHUNK), v2Dir, v1Procs, String(HOST_ID)], { encoding: 'utf8' });
  return out
    .trim()
    .split('\n')
    .map((ns) => Number(ns) / 1e6)
    .slice(WARMUP);
}

async function measureChildProcess(): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < CHUNK; i++) {
    const start = process.hrtime.bigint();
    const cp = cpSpawn('/bin/true', [], { stdio: 'ignore', env: {} });
    await new Promise<void>((resolve, reject) => {
      cp.once('spawn', resolve);
      cp.once('error', reject);
    });
    samples.push(Number(process.hrtime.bigint() - start) / 1e6);
    await new Promise((resolve) => (cp.exitCode === null ? cp.once('exit', resolve) : resolve(null)));
  }
  return samples.slice(WARMUP);
}

const fmt = (ms: number) => ms.toFixed(3);

export default async function spawnBench(): Promise<{ title: string; markdown: string }> {
  const name = `orrery-bench-spawn-${process.pid}`;
  const v2Dir = join('/sys/fs/cgroup/unified', name);
  const v1Dir = join('/sys/fs/cgroup/memory', name);
  const dir = mkdtempSync(join(tmpdir(), 'orrery-bench-spawn-'));
  const runDir = makeRunDir(dir);
  mkdirSync(v2Dir);
  mkdirSync(v1Dir);
  // The runtime joins v1 through `tasks` (no threadgroup lock: node-runtime/cgroups/README.md).
  const v1Procs = join(v1Dir, 'tasks');
  try {
    const binds = twoVolumes(dir);
    const hostPath = hostPathVolume(dir);
    const binary = compileRaw(dir);
    const samples = {
      raw: [] as number[],
      init: [] as number[],
      volumes: [] as number[],
      hostPath: [] as number[],
      noInit: [] as number[],
      node: [] as number[],
    };
    for (let c = 0; c < CHUNKS; c++) {
      samples.raw.push(...measureRaw(binary, v2Dir, v1Procs));
      samples.init.push(...(await measureAddon(v2Dir, v1Procs, dir, runDir, true)));
      samples.volumes.push(...(await measureAddon(v2Dir, v1Procs, dir, runDir, true, binds)));
      samples.hostPath.push(...(await measureAddon(v2Dir, v1Procs, dir, runDir, true, hostPath)));
      samples.noInit.push(...(await measureAddon(v2Dir, v1Procs, dir, runDir, false)));
      samples.node.push(...(await measureChildProcess()));
    }
    const base = summarize(samples.raw);
    const addonInit = summarize(samples.init);
    const addonVolumes = summarize(samples.volumes);
    const addonHostPath = summarize(samples.hostPath);
    const addonNoInit = summarize(samples.noInit);
    const node = summarize(samples.node);
    const ratio = addonInit.p50 / base.p50;
    const volumesRatio = addonVolumes.p50 / base.p50;
    const rows = [
      ['raw C clone3 + exec, same flags (baseline)', base, '1.00×'],
      ['addon spawn(), orrery-init as PID 1 (default)', addonInit, `${ratio.toFixed(2)}×`],
      [
        'addon spawn(), default + two volumes (tmpfs ro, dir rw)',
        addonVolumes,
        `${volumesRatio.toFixed(2)}×`,
      ],
      [
        'addon spawn(), default + a read-only hostPath (mount helper; not a target row)',
        addonHostPath,
        `${(addonHostPath.p50 / base.p50).toFixed(2)}×`,
      ],
      ['addon spawn(), init: false', addonNoInit, `${(addonNoInit.p50 / base.p50).toFixed(2)}×`],
      ['Node child_process.spawn (no isolation)', node, `${(node.p50 / base.p50).toFixed(2)}×`],
    ] as const;
    const markdown = [
      `Spawn latency of an isolated replica (user+pid+mount+uts+ipc namespaces, v2 + v1 memory cgroup,`,
      `exec /bin/true), ${CHUNKS * (CHUNK - WARMUP)} rounds per row (${CHUNKS} interleaved chunks of ${CHUNK}, ` +
        `first ${WARMUP} of each dropped), milliseconds; load average at the end: ${loadavg()[0]?.toFixed(1)} ` +
        `on ${cpus().length} CPUs.`,
      '',
      '| what | p50 | p99 | mean | p50 vs raw |',
      '|---|---:|---:|---:|---:|',
      ...rows.map(([what, s, r]) => `| ${what} | ${fmt(s.p50)} | ${fmt(s.p99)} | ${fmt(s.mean)} | ${r} |`),
      '',
      `Target (docs/DESIGN.md §9): addon p50 ≤ ${TARGET_RATIO}× raw p50. ` +
        `Measured: ${ratio.toFixed(2)}× — ` +
        `${ratio <= TARGET_RATIO ? 'met' : 'NOT met'}; with two volumes ${volumesRatio.toFixed(2)}× — ` +
        `${volumesRatio <= TARGET_RATIO ? 'met' : 'NOT met'}. The read-only volume is locked against ` +
        "root of the replica's user namespace: its tmpfs is mounted read-only in the runtime's namespace " +
        '(as volumes/manager.ts keeps configMap and secret volumes), and the child clones it from its ' +
        "namespace's locked copy once the id maps are written (open_tree + mount_setattr, then move_mount); the " +
        'writable one is cloned by the parent (open_tree + mount_setattr) and attached by the child. A ' +
        'read-only hostPath has no such read-only mount: a mount helper task attaches it in a private mount ' +
        "namespace before the replica's namespaces are made (a thread, an unshare, and that " +
        "namespace's teardown). The default path does more than the raw baseline: " +
        'a second task (the child clones the workload, then execs orrery-init as PID 1 beside it), ' +
        "the resource limits (with a user namespace only those that differ from the runtime's: here one " +
        'prlimit call), no_new_privs, ' +
        '`mount --make-rprivate /` and a fresh /proc, hostname, setsid, stdio to the log file, signal ' +
        'reset, an empty exit status file (truncated by the parent before the clone with a user namespace, ' +
        `in ${existsSync('/dev/shm') ? "/dev/shm, standing for the runtime's tmpfs run dir" : 'the temp dir'}), ` +
        'and the JS side (validation, N-API); `init: false` leaves out ' +
        'the second task and the status file. Per-step costs: `node bench/spawn.bench.ts --trace` ' +
        '(node-runtime/native/README.md, "Where the time goes").',
    ].join('\n');
    return { title: 'Spawn an isolated, cgroup-limited replica', markdown };
  } finally {
    unmountVolumes(dir);
    rmSync(dir, { recursive: true, force: true });
    rmSync(runDir, { recursive: true, force: true });
    rmdirSync(v2Dir);
    rmdirSync(v1Dir);
  }
}

/**
 * `--trace`: where the time of one addon spawn goes. Each spawn is traced (spawnTrace, README.md
 * "Where the time goes"); prints, per step, the median and p90 time since the previous stamp and
 * the CPUs it ran on, plus the JS overhead (normalize, N-API, startTime) around the C part.
 */
async function traceSteps(init: boolean, rounds: number, withVolumes = false): Promise<string> {
  const name = `orrery-bench-spawn-trace-${process.pid}`;
  const v2Dir = join('/sys/fs/cgroup/unified', name);
  const v1Dir = join('/sys/fs/cgroup/memory', name);
  const dir = mkdtempSync(join(tmpdir(), 'orrery-bench-spawn-'));
  const runDir = makeRunDir(dir);
  mkdirSync(v2Dir);
  mkdirSync(v1Dir);
  const deltas = new Map<string, number[]>();
  const cpus = new Map<string, number[]>();
  const sameCpu: boolean[] = [];
  const totals: number[] = [];
  const binds = withVolumes ? twoVolumes(dir) : undefined;
  try {
    spawnTrace(true);
    for (let i = 0; i < rounds; i++) {
      const start = process.hrtime.bigint();
      const child = spawn(isolatedTrue(v2Dir, join(v1Dir, 'tasks'), dir, init, runDir, binds));
      const total = Number(process.hrtime.bigint() - start);
      const end = Number(process.hrtime.bigint());
      // In time order: the child and the workload run side by side in init mode.
      const points: SpawnTracePoint[] = spawnTrace(true).sort((a, b) => a.ns - b.ns);
      await new Promise<ExitStatus>((resolve) => watchExit(child.pidfd, resolve));
      if (i < WARMUP) continue;
      totals.push(total);
      let prev = Number(start);
      for (const p of points) {
        // The workload's exec runs beside the child's own steps: measure it from the clone.
        const from =
          p.step === 'workload-exec' ? (points.find((q) => q.step === 'workload-clone')?.ns ?? prev) : prev;
        deltas.set(p.step, [...(deltas.get(p.step) ?? []), p.ns - from]);
        cpus.set(p.step, [...(cpus.get(p.step) ?? []), p.cpu]);
        if (p.step !== 'workload-exec') prev = p.ns;
      }
      const parent = points.find((p) => p.step === 'clone')?.cpu;
      const child0 = points.find((p) => p.step === 'child')?.cpu;
      sameCpu.push(parent === child0);
      deltas.set('js after C (N-API result, startTime)', [
        ...(deltas.get('js after C (N-API result, startTime)') ?? []),
        end - prev,
      ]);
    }
  } finally {
    spawnTrace(false);
    if (binds) unmountVolumes(dir);
    rmSync(dir, { recursive: true, force: true });
    rmSync(runDir, { recursive: true, force: true });
    rmdirSync(v2Dir);
    rmdirSync(v1Dir);
  }
  const us = (ns: number) => (ns / 1000).toFixed(1);
  const lines = [
    `### addon spawn(), init: ${init}${withVolumes ? ', two volumes' : ''} — ${totals.length} rounds, total p50 ${us(quantile(totals, 0.5))} µs, p90 ${us(quantile(totals, 0.9))} µs`,
    `child started on the parent's CPU in ${sameCpu.filter(Boolean).length}/${sameCpu.length} rounds`,
    '',
    '| step (time since previous stamp; enter: since spawn() was called in JS) | p50 µs | p90 µs | CPUs |',
    '|---|---:|---:|---|',
  ];
  for (const [step, xs] of deltas) {
    const c = cpus.get(step) ?? [];
    const hist = [...new Set(c)].sort().map((cpu) => `${cpu}:${c.filter((x) => x === cpu).length}`);
    lines.push(`| ${step} | ${us(quantile(xs, 0.5))} | ${us(quantile(xs, 0.9))} | ${hist.join(' ')} |`);
  }
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--trace')) {
    console.log(await traceSteps(true, 300));
    console.log();
    console.log(await traceSteps(true, 300, true));
    console.log();
    console.log(await traceSteps(false, 300));
  } else {
    const result = await spawnBench();
    console.log(`## ${result.title}\n\n${result.markdown}`);
  }
}
