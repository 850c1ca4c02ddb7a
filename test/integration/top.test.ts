// `orrery top` against a real host runtime: the numbers it prints for a replica that burns CPU and
// holds memory match the replica's own cgroup files (read here, not through the runtime).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { detectCgroupLayout, planReplicaCgroup } from '../../node-runtime/cgroups/index.ts';
import { e2e, instanceYaml } from '../helpers/e2e.ts';
import { eventually } from '../helpers/wait.ts';

const orrery = join(import.meta.dirname, '..', '..', 'bin', 'orrery.js');
const run = promisify(execFile);

/** Cumulative CPU ns from a cgroup's file: cpuacct.usage (v1) or cpu.stat usage_usec (v2). */
function cpuNanos(file: { file: string; format: string }): number {
  const text = readFileSync(file.file, 'utf8');
  if (file.format === 'nanos') return Number(text.trim());
  const m = /^usage_usec (\d+)$/m.exec(text);
  return Number(m?.[1]) * 1000;
}

test("orrery top shows a replica's CPU and memory as its cgroup files say, and per host", async (t) => {
  const env = await e2e(t, { hosts: 1 });
  const host = env.hosts[0];
  if (!host) return t.fail('no host');
  // 64 MiB touched and held, and one core kept busy for two minutes at most.
  await env.kubectl(
    ['apply', '-f', '-'],
    instanceYaml('burn', 1, [
      'node',
      '-e',
      'const keep = Buffer.alloc(64 * 1024 * 1024, 1); const end = Date.now() + 120000; while (Date.now() < end) {} console.log(keep.length);',
    ]),
  );
  await eventually(
    'burn-0 running',
    async () => (await env.replicasOf('burn'))[0]?.status?.phase === 'Running',
    {
      timeoutMs: 30_000,
    },
  );
  const plan = planReplicaCgroup(detectCgroupLayout(), host.cgroupParent, `${env.ns}.burn-0`);
  const memoryFile = plan.files.memoryCurrent;
  const cpuFile = plan.files.cpuUsage;
  if (!memoryFile || !cpuFile) return t.fail('no memory or cpu accounting in this cgroup layout');
  await eventually('64 MiB in use', () => Number(readFileSync(memoryFile, 'utf8')) > 60 * 1024 * 1024);

  const args = [
    orrery,
    'top',
    '-n',
    env.ns,
    '--kubeconfig',
    env.kubeconfig,
    '--token',
    host.token,
    '--window',
    '1s',
  ];
  const cpu0 = cpuNanos(cpuFile);
  const t0 = performance.now();
  const { stdout } = await run(process.execPath, args);
  const fileMillis = (cpuNanos(cpuFile) - cpu0) / ((performance.now() - t0) * 1000);
  const memoryMi = Number(readFileSync(memoryFile, 'utf8')) / (1024 * 1024);
  const lines = stdout.trim().split('\n');
  t.regex(lines[0] ?? '', /^NAME\s+CPU\(cores\)\s+MEMORY\(bytes\)$/);
  const row = /^burn-0\s+(\d+)m\s+(\d+)Mi$/.exec(lines.find((l) => l.startsWith('burn-0')) ?? '');
  t.truthy(row, stdout);
  if (!row) return;
  const [shownCpu, shownMemory] = [Number(row[1]), Number(row[2])];
  t.log(
    `top: ${shownCpu}m ${shownMemory}Mi; cgroup files: ${fileMillis.toFixed(0)}m ${memoryMi.toFixed(1)}Mi`,
  );
  t.true(
    Math.abs(shownMemory - memoryMi) <= 4,
    `memory ${shownMemory}Mi vs ${memoryMi.toFixed(1)}Mi in the cgroup file`,
  );
  // A busy loop on a shared 2-core machine: somewhere between a tenth of a core and two cores,
  // and within half of what the cgroup's own counter says over about the same second.
  t.true(shownCpu >= 100 && shownCpu <= 2100, `cpu ${shownCpu}m`);
  t.true(
    Math.abs(shownCpu - fileMillis) <= fileMillis * 0.5,
    `cpu ${shownCpu}m vs ${fileMillis.toFixed(0)}m`,
  );

  const hosts = await run(process.execPath, [
    orrery,
    'top',
    'hosts',
    '--kubeconfig',
    env.kubeconfig,
    '--token',
    host.token,
  ]);
  const hostRow = hosts.stdout.split('\n').find((l) => l.startsWith(`${host.name} `));
  t.regex(hostRow ?? '', /^\S+\s+\d+m\s+\d+Mi\s+\d+$/, hosts.stdout);
});
