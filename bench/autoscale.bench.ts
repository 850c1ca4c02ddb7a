/**
 * Issue 16's target "one metrics round over 1,000 replicas on one host costs ≤ 100 ms of operator
 * CPU". A real runtime in a child process (test/integration/fixtures/engine-host.ts with its HTTP
 * API) runs 1,000 replicas of one sleeping process, each in its own cgroup. This process is the
 * operator's side of a round, with the autoscaler's own code: one authenticated
 * `GET /v1/replicas?stats=true` (platform/runtime-api.ts scrapeHost), the CPU rates of every replica
 * (usage.ts UsageTracker), and the HPA's recommendation and stabilised decision (hpa.ts) for each of
 * 250 Instances of 4 replicas. Its CPU (process.cpuUsage, user + system) is measured per round,
 * one round a second after a first that only primes the rates. Not in it: API writes, which the
 * autoscaler makes only when a count or its status changes. Baseline in the same run: the same
 * round over a host with 10 replicas, so the ratio shows how the cost grows with the replicas.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { CgroupManager, detectCgroupLayout } from '../node-runtime/cgroups/index.ts';
import { Engine } from '../node-runtime/index.ts';
import { recommend, ScaleHistory } from '../operator/autoscale/hpa.ts';
import { scrapeHost, UsageTracker } from '../operator/autoscale/usage.ts';
import { median } from './stats.ts';

const REPLICAS = 1000;
const PER_INSTANCE = 4;
const ROUNDS = 10;
const TARGET_MS = 100;
const REQUEST_MILLIS = 100;

const hostScript = fileURLToPath(new URL('../test/integration/fixtures/engine-host.ts', import.meta.url));

interface Ready {
  ms: number;
  api: { endpoint: string; token: string };
}

function readyLine(child: ChildProcess, ms: number): Promise<Ready> {
  const rl = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the runtime host was not ready within ${ms} ms`)), ms);
    child.once('exit', (code) => reject(new Error(`the runtime host exited (${code}) before it was ready`)));
    rl.once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line) as Ready);
    });
  });
}

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

/** Rounds over one host of `replicas`: operator CPU (ms) per measured round. */
async function measure(replicas: number): Promise<{ rounds: number[]; runMs: number; seen: number }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'orrery-bench-autoscale-'));
  const dirs = { stateDir: path.join(root, 'state'), logDir: path.join(root, 'logs') };
  const parent = `orrery-bench-as-${process.pid}-${Date.now().toString(36)}`;
  const host = spawn(
    process.execPath,
    [hostScript, dirs.stateDir, dirs.logDir, parent, String(replicas), ''],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...process.env, ORRERY_HOST_API: '1' },
    },
  );
  try {
    const ready = await readyLine(host, 300_000);
    const target = { name: 'bench', endpoint: ready.api.endpoint };
    // The Instances: 4 replicas each (names r0..r999 in namespace "host", engine-host's ids).
    const instances = Array.from({ length: Math.ceil(replicas / PER_INSTANCE) }, (_, i) => ({
      names: Array.from({ length: PER_INSTANCE }, (_, j) => `r${i * PER_INSTANCE + j}`).filter(
        (n) => Number(n.slice(1)) < replicas,
      ),
      history: new ScaleHistory(),
    }));
    const tracker = new UsageTracker();
    let seen = 0;
    const round = async () => {
      const before = process.cpuUsage();
      const sample = await scrapeHost(target, ready.api.token);
      tracker.add(sample);
      const now = performance.now() / 1000;
      let decided = 0;
      for (const inst of instances) {
        const samples = inst.names.map((name) => ({
          name,
          ready: true,
          cpuMillis: tracker.get('host', name)?.cpuMillis,
        }));
        const current = inst.names.length;
        const rec = recommend(current, samples, REQUEST_MILLIS, 50);
        inst.history.decide(now, current, rec.desired, {
          minReplicas: 1,
          maxReplicas: 10,
        });
        if (rec.utilization !== undefined) decided++;
      }
      seen = Math.max(seen, decided);
      return cpuMs(process.cpuUsage(before));
    };
    await round(); // primes the rates (CPU is a rate between two reads)
    const rounds: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      await sleep(1000);
      rounds.push(await round());
    }
    return { rounds, runMs: ready.ms, seen };
  } finally {
    if (host.exitCode === null && host.signalCode === null) host.kill('SIGKILL');
    await new Promise((r) =>
      host.exitCode !== null || host.signalCode !== null ? r(undefined) : host.once('exit', r),
    );
    // The replicas outlive their runtime (by design): a runtime in this process re-adopts and stops them.
    const adopter = new Engine({ ...dirs, cgroupParent: parent, log: pino({ level: 'warn' }) });
    await adopter.start().catch(() => {});
    await adopter.stopAll({ graceSeconds: 0 }).catch(() => {});
    await adopter.close().catch(() => {});
    await new CgroupManager({ layout: detectCgroupLayout(), parent }).removeParentIfEmpty().catch(() => {});
    await rm(root, { recursive: true, force: true });
  }
}

export default async function autoscaleBench(): Promise<{ title: string; markdown: string }> {
  const small = await measure(10);
  const large = await measure(REPLICAS);
  const med = median(large.rounds);
  const max = Math.max(...large.rounds);
  const markdown = [
    `One autoscaler metrics round against a real runtime (a child process, its HTTP API on loopback) running`,
    `${REPLICAS} replicas, each its own cgroup: one \`GET /v1/replicas?stats=true\`, the CPU rate of every replica, and`,
    `the HPA recommendation and stabilised decision for ${REPLICAS / PER_INSTANCE} Instances of ${PER_INSTANCE}. Operator CPU is this`,
    `process's user + system time over the round (${ROUNDS} rounds, 1 s apart, after one that primes the rates).`,
    '',
    '| host | Instances decided | operator CPU per round, median | max | target |',
    '|---|---|---|---|---|',
    `| 10 replicas (baseline) | ${small.seen} | ${median(small.rounds).toFixed(1)} ms | ${Math.max(...small.rounds).toFixed(1)} ms | |`,
    `| ${REPLICAS} replicas | ${large.seen} | ${med.toFixed(1)} ms | ${max.toFixed(1)} ms | ≤ ${TARGET_MS} ms (${(med / TARGET_MS).toFixed(2)}×) |`,
    '',
    `${REPLICAS} against 10 replicas: ${(med / median(small.rounds)).toFixed(1)}× the CPU for 100× the replicas. ` +
      `Load average at the end: ${(os.loadavg()[0] ?? 0).toFixed(1)} on ${os.cpus().length} CPUs.`,
  ].join('\n');
  if (med > TARGET_MS)
    console.error(`autoscale: a round costs ${med.toFixed(1)} ms of operator CPU, over ${TARGET_MS} ms`);
  return { title: 'Autoscaler metrics round (1,000 replicas on one host)', markdown };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await autoscaleBench();
  console.log(`# ${r.title}\n\n${r.markdown}`);
}
