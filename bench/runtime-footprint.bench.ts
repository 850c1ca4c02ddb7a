/**
 * docs/DESIGN.md §9 "runtime memory per supervised process ≤ 30 KB": a runtime in a child process of its
 * own (test/integration/fixtures/engine-host.ts) runs 1,000 replicas of one sleeping process each
 * (no namespaces, an empty cgroup each); RSS after minus RSS before, over 1,000. Then its CPU over
 * 30 s idle (utime+stime from /proc/self/stat). Then the runtime is SIGKILLed and a new one
 * re-adopts all 1,000 (docs/DESIGN.md §9 "runtime killed -9 and restarted"), and stops them.
 * Baseline in the same run: a Node process holding 1,000 `child_process.spawn` children.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { CgroupManager, detectCgroupLayout } from '../node-runtime/cgroups/index.ts';
import { Engine } from '../node-runtime/index.ts';
import { CLK_TCK } from './proc.ts';

const PROCESSES = 1000;
const IDLE_SECONDS = 30;
const TARGET_BYTES = 30 * 1024;

const hostScript = fileURLToPath(new URL('../test/integration/fixtures/engine-host.ts', import.meta.url));

function lines(child: ChildProcess): Interface {
  return createInterface({ input: child.stdout as NodeJS.ReadableStream });
}

function nextLine<T>(rl: Interface, child: ChildProcess, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer from child within ${ms} ms`)), ms);
    child.once('exit', (code) => reject(new Error(`child exited (${code}) before answering`)));
    rl.once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line) as T);
    });
  });
}

const naiveScript = `
const { spawn } = require('node:child_process');
const { readFileSync } = require('node:fs');
const rss = () => Number(/VmRSS:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
global.gc(); const before = rss();
const kids = [];
for (let i = 0; i < ${PROCESSES}; i++) {
  const c = spawn('/bin/sleep', ['100000'], { stdio: 'ignore' });
  c.on('exit', () => {});
  kids.push(c);
}
setTimeout(() => {
  global.gc(); const after = rss();
  for (const c of kids) c.kill('SIGKILL');
  console.log(JSON.stringify({ before, after }));
  setTimeout(() => process.exit(0), 500);
}, 2000);
`;

async function naiveBaseline(): Promise<number> {
  const child = spawn(process.execPath, ['--expose-gc', '-e', naiveScript], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const r = await nextLine<{ before: number; after: number }>(lines(child), child, 60_000);
  return (r.after - r.before) / PROCESSES;
}

interface HostSample {
  rss: number;
  cpuTicks: number;
  heapUsed: number;
}

interface HostRun {
  flags: string[];
  runMs: number;
  baseline: HostSample;
  loaded: HostSample;
  idle?: HostSample;
  adopted: number;
  restarted: number;
  adoptMs: number;
}

/**
 * One runtime host with PROCESSES replicas: RSS before/after, optionally CPU over an idle period,
 * then SIGKILL and re-adoption by a Engine in this process, which finally stops everything.
 */
async function measureHost(flags: string[], idleSeconds: number): Promise<HostRun> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'orrery-bench-footprint-'));
  const dirs = { stateDir: path.join(root, 'state'), logDir: path.join(root, 'logs') };
  const parent = `orrery-bench-fp-${process.pid}-${Date.now().toString(36)}`;
  const host = spawn(
    process.execPath,
    [...flags, '--expose-gc', hostScript, dirs.stateDir, dirs.logDir, parent, String(PROCESSES), ''],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const rl = lines(host);
  let adopter: Engine | undefined;
  try {
    const ready = await nextLine<{ ms: number; baseline: HostSample }>(rl, host, 300_000);
    await sleep(2000);
    host.stdin?.write('rss\n');
    const loaded = await nextLine<HostSample>(rl, host, 10_000);
    let idle: HostSample | undefined;
    if (idleSeconds > 0) {
      await sleep(idleSeconds * 1000);
      host.stdin?.write('rss\n');
      idle = await nextLine<HostSample>(rl, host, 10_000);
    }

    const exited = new Promise((r) => host.once('exit', r));
    host.kill('SIGKILL');
    await exited;
    adopter = new Engine({ ...dirs, cgroupParent: parent, log: pino({ level: 'warn' }) });
    let adopted = 0;
    let restarted = 0;
    adopter.on('event', (e) => {
      if (e.type === 'adopted') adopted++;
      if (e.type === 'started') restarted++;
    });
    const t0 = performance.now();
    await adopter.start();
    const adoptMs = performance.now() - t0;
    const run: HostRun = {
      flags,
      runMs: ready.ms,
      baseline: ready.baseline,
      loaded,
      adopted,
      restarted,
      adoptMs,
    };
    if (idle) run.idle = idle;
    return run;
  } finally {
    if (host.exitCode === null && host.signalCode === null) host.kill('SIGKILL');
    if (!adopter) {
      adopter = new Engine({ ...dirs, cgroupParent: parent, log: pino({ level: 'warn' }) });
      await adopter.start().catch(() => {});
    }
    await adopter.stopAll({ graceSeconds: 0 }).catch(() => {});
    await adopter.close().catch(() => {});
    await new CgroupManager({ layout: detectCgroupLayout(), parent }).removeParentIfEmpty().catch(() => {});
    await rm(root, { recursive: true, force: true });
  }
}

export default async function footprintBench(): Promise<{ title: string; markdown: string }> {
  const plain = await measureHost([], IDLE_SECONDS);
  // The same with V8's young generation capped: what the runtime retains, without the slack of
  // semi-spaces grown during the burst of 1,000 starts (V8 keeps them after a full GC).
  const capped = await measureHost(['--max-semi-space-size=1'], 0);
  const naivePerProcess = await naiveBaseline();

  const kb = (b: number) => (b / 1024).toFixed(1);
  const perProcess = (r: HostRun) => (r.loaded.rss - r.baseline.rss) / PROCESSES;
  const heapPerProcess = (r: HostRun) => (r.loaded.heapUsed - r.baseline.heapUsed) / PROCESSES;
  const idle = plain.idle as HostSample;
  const cpuPercent = ((idle.cpuTicks - plain.loaded.cpuTicks) / CLK_TCK / IDLE_SECONDS) * 100;
  const row = (name: string, r: HostRun) =>
    `| ${name} | ${kb(perProcess(r))} KB | ${kb(heapPerProcess(r))} KB | ${kb(naivePerProcess)} KB | ${(perProcess(r) / TARGET_BYTES).toFixed(2)} |`;
  const markdown = [
    `${PROCESSES} replicas × 1 sleeping process, no namespaces, one cgroup each; the runtime alone in a child`,
    'process (test/integration/fixtures/engine-host.ts). RSS and V8 heap after a full GC, 2 s after the last start.',
    '',
    '| runtime process | RSS per supervised process | of which JS heap | naive baseline (child_process, RSS) | RSS / target (30 KB) |',
    '|---|---|---|---|---|',
    row('node defaults', plain),
    row('node --max-semi-space-size=1', capped),
    '',
    '| measure | value | target |',
    '|---|---|---|',
    `| RSS before → with ${PROCESSES} (defaults) | ${kb(plain.baseline.rss)} KB → ${kb(plain.loaded.rss)} KB | |`,
    `| RSS after ${IDLE_SECONDS} s idle (defaults) | ${kb(idle.rss)} KB (${kb((idle.rss - plain.baseline.rss) / PROCESSES)} KB per process) | ≤ 30 KB per process |`,
    `| runtime CPU over ${IDLE_SECONDS} s idle, ${PROCESSES} processes | ${cpuPercent.toFixed(3)} % of one core | |`,
    `| time to run ${PROCESSES} replicas (batches of 50) | ${(plain.runMs / 1000).toFixed(2)} s, ${(capped.runMs / 1000).toFixed(2)} s | |`,
    `| re-adoption after kill -9 (defaults) | ${plain.adopted} adopted, ${plain.restarted} restarted, ${plain.adoptMs.toFixed(0)} ms | 0 restarts, ≤ 500 ms (${(plain.adoptMs / 500).toFixed(2)}×) |`,
    `| re-adoption after kill -9 (capped) | ${capped.adopted} adopted, ${capped.restarted} restarted, ${capped.adoptMs.toFixed(0)} ms | |`,
    '',
    `Load average at the end: ${(os.loadavg()[0] ?? 0).toFixed(1)} on ${os.cpus().length} CPUs (wall times above stretch with it).`,
  ].join('\n');
  return { title: 'Runtime footprint (1,000 supervised processes)', markdown };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await footprintBench();
  console.log(`# ${r.title}\n\n${r.markdown}`);
}
