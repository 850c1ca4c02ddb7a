// At most one copy of a replica after a failover (docs/DESIGN.md §4.4). Two hosts and the real
// operator (a child process); the host running the replica is partitioned from the API server
// (its agent talks to it through a TCP proxy that stops answering) while every CPU is busy. The
// operator moves the replica to the other host; the partitioned host must have killed its copy
// before the replacement starts, in every round.
//
// "Busy" is confined: each agent runs in a cgroup capped at CPU_CAP of one CPU, and the busy
// loops of a round run in the partitioned agent's, so the agent's timers are late as on a loaded
// host while the other tests of the run keep their CPUs.
//
// The workload proves it itself, as a replica with a fixed identity would: it takes an exclusive
// flock(2) on a file both hosts see, and a copy that finds the lock held logs "denied" and exits.
// The lock is released only when every process of the old copy is dead. Each line carries the
// time, so the margin between the old copy's death and the new copy's start is measured too.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { HOSTS } from '../../crds/resources.ts';
import type { Host, Replica } from '../../crds/types.ts';
import { resourceClient, typed } from '../../kube/index.ts';
import { removeCgroupDir } from '../../node-runtime/cgroups/index.ts';
import { e2e, instanceYaml } from '../helpers/e2e.ts';
import { workloadDir } from '../helpers/engine-harness.ts';
import { host as machine } from '../helpers/features.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { type Partition, partitionable } from '../helpers/partition.ts';
import { eventually } from '../helpers/wait.ts';

const ROUNDS = Number(process.env.ORRERY_TEST_FAILOVER_ROUNDS ?? 20);
/** CPU time each agent (and the busy loops beside the partitioned one) may use, in CPUs. */
const CPU_CAP = 0.6;

test('a partitioned host kills its copy before the replacement starts elsewhere, every round', async (t) => {
  t.timeout(ROUNDS * 35_000 + 60_000);
  const root = mkdtempSync(join(tmpdir(), 'orrery-fencing-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  // The replicas write the journal and take the lock as their unprivileged host uid.
  const dir = await workloadDir(root);
  const { kubeconfig } = await orreryCluster();
  const partitions: Partition[] = [];
  for (const i of [0, 1]) partitions.push(await partitionable(t, kubeconfig, join(root, `kubeconfig-${i}`)));
  // Removed after the e2e teardown has stopped the agents in them (ava runs teardowns newest first).
  const cageDirs: string[] = [];
  t.teardown(() => Promise.all(cageDirs.map((dir) => removeCgroupDir(dir, 10_000))));
  const env = await e2e(t, {
    hosts: 2,
    operator: 'none',
    agentArgs: (i) => ['--kubeconfig', (partitions[i] as Partition).kubeconfig],
  });
  const hosts = resourceClient(env.api, typed<Host>(HOSTS), 'orrery-test');
  const cages = env.hosts.map((h, i) => cpuCage(cageDirs, `agent${i}`, h.child.pid as number));
  if (cages.some((c) => !c))
    console.log('failover-fencing: no cpu controller to cage the load in; rounds run unloaded');
  env.operatorProcess(); // stopped by the e2e teardown, after the Instance is deleted
  const partitionOf = (host: string) => partitions[env.hosts.findIndex((h) => h.name === host)] as Partition;

  const lock = join(dir, 'identity.lock');
  const journal = join(dir, 'journal');
  // Each copy runs as its own replica's host uid: both files writable by every copy.
  for (const file of [lock, journal]) {
    writeFileSync(file, '');
    chmodSync(file, 0o666);
  }
  await env.kubectl(
    ['apply', '-f', '-'],
    instanceYaml(
      'db',
      1,
      [
        'sh',
        '-c',
        `exec flock -n -E 42 ${lock} sh -c 'echo "locked $(date +%s%N) $$" >> ${journal}; exec sleep infinity' || { echo "denied $(date +%s%N)" >> ${journal}; exit 42; }`,
      ],
      { template: { terminationGracePeriodSeconds: 1 } },
    ),
  );
  const running = async (notOn?: string) => {
    const [r] = await env.replicasOf('db');
    return r?.status?.phase === 'Running' && r.spec.host !== notOn && !r.metadata.deletionTimestamp
      ? r
      : undefined;
  };
  let current: Replica = await eventually('db-0 Running', () => running(), { timeoutMs: 30_000 });
  const journalLines = () =>
    existsSync(journal) ? readFileSync(journal, 'utf8').split('\n').filter(Boolean) : [];

  const failovers: number[] = [];
  const margins: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const from = current.spec.host as string;
    const oldPid = current.status?.processes?.[0]?.pid as number;
    const linesBefore = journalLines().length;
    const load = burnCpus(3, cages[env.hosts.findIndex((h) => h.name === from)]);
    let deadAt = 0;
    const watchOld = setInterval(() => {
      if (deadAt === 0 && !existsSync(`/proc/${oldPid}`)) deadAt = Date.now();
    }, 2);
    const cutAt = Date.now();
    partitionOf(from).cut();
    try {
      // 30 s: under the whole suite (load 11 on 2 cores) one of 20 rounds took over 15 s.
      current = await eventually(`round ${round}: db-0 Running on the other host`, () => running(from), {
        timeoutMs: 30_000,
        intervalMs: 20,
      });
    } finally {
      clearInterval(watchOld);
      for (const p of load) p.kill('SIGKILL');
      partitionOf(from).heal();
    }
    const runningAt = Date.now();
    // Running means spawned; the copy's first line (locked or denied) follows.
    const lines = await eventually(`round ${round}: the replacement's first line`, () => {
      const fresh = journalLines().slice(linesBefore);
      return fresh.length > 0 ? fresh : undefined;
    });
    t.deepEqual(
      lines.filter((l) => l.startsWith('denied')),
      [],
      `round ${round}: a second copy found the lock held (the old one was still alive)`,
    );
    const locked = lines.find((l) => l.startsWith('locked'));
    t.truthy(locked, `round ${round}: the replacement took the lock`);
    t.false(existsSync(`/proc/${oldPid}`), `round ${round}: the old copy is dead`);
    const lockedAt = Number(locked?.split(' ')[1]) / 1e6;
    failovers.push(runningAt - cutAt);
    if (deadAt > 0) margins.push(lockedAt - deadAt);
    // The healed host registers again and renews before the next round partitions the other one.
    await eventually(
      `round ${round}: ${from} Ready again`,
      async () => {
        const host = await hosts.get(from);
        return host.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
      },
      { timeoutMs: 30_000 },
    );
  }
  const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
  t.log(
    `${ROUNDS} rounds, lease 2 s, the partitioned agent sharing ${CPU_CAP} CPU with 3 busy loops: failover (cut → replacement Running) ${sorted(
      failovers,
    )
      .map((ms) => ms.toFixed(0))
      .join(
        ', ',
      )} ms; old copy dead → replacement started (lower bound, the test polls every 2 ms): min ${Math.min(...margins).toFixed(0)} ms over ${margins.length} rounds`,
  );
  t.is(failovers.length, ROUNDS);
});

/** `n` busy loops in `cage` (none without one); killed by the caller. */
function burnCpus(n: number, cage: Cage | undefined): ChildProcess[] {
  if (!cage) return [];
  return Array.from({ length: n }, () => {
    const p = spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' });
    cage.add(p.pid as number);
    return p;
  });
}

interface Cage {
  add(pid: number): void;
}

/**
 * A cgroup holding `pid`, capped at CPU_CAP of one CPU (cpu.max on v2, CFS quota on v1); its path
 * goes to `dirs` for the teardown. Undefined when no hierarchy here carries the cpu controller.
 */
function cpuCage(dirs: string[], name: string, pid: number): Cage | undefined {
  const layout = machine.cgroups;
  const period = 100_000;
  const quota = Math.round(CPU_CAP * period);
  const base = `orrery-test-${process.env.ORRERY_TEST_RUN ?? 'solo'}-fencing-${name}-${randomBytes(2).toString('hex')}`;
  let dir: string;
  if (layout?.v2Root && layout.v2Controllers.includes('cpu')) {
    dir = join(layout.v2Root, base);
    mkdirSync(dir);
    dirs.push(dir);
    writeFileSync(join(dir, 'cpu.max'), `${quota} ${period}`);
  } else if (layout?.v1.cpu) {
    dir = join(layout.v1.cpu, base);
    mkdirSync(dir);
    dirs.push(dir);
    writeFileSync(join(dir, 'cpu.cfs_period_us'), String(period));
    writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(quota));
  } else {
    return undefined;
  }
  const cage = { add: (p: number) => writeFileSync(join(dir, 'cgroup.procs'), String(p)) };
  cage.add(pid);
  return cage;
}
