import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import { type CgroupLayout, kernelAtLeast } from '../../node-runtime/cgroups/detect.ts';
import type { CgroupLimits } from '../../node-runtime/cgroups/limits.ts';
import { CgroupManager, type ReplicaCgroup } from '../../node-runtime/cgroups/manager.ts';
import { parentDirsOf } from '../../node-runtime/cgroups/paths.ts';
import { type CgroupNeeds, cgroupSkipReason, describeCgroupLayout, host, runs } from '../helpers/features.ts';
import { eventually } from '../helpers/wait.ts';

// Real cgroups on this host, in whatever layout it has (v2 only, v1 only, or hybrid as where
// Orrery is developed: v2 at /sys/fs/cgroup/unified without controllers, v1 controllers beside
// it), as the product detects it. Limits are read back from whichever hierarchy carries them; a
// test whose controller or hierarchy this host lacks, or that cannot create cgroups (not root, a
// read-only cgroup mount), is skipped with the reason printed. Every test owns a parent
// `orrery-test-<random>` and removes it in a teardown that runs even when the test fails.

/** The product's detectCgroupLayout(); undefined only when no hierarchy is mounted and every test here is skipped. */
const detected = host.cgroups as CgroupLayout;

/** Whether a test with `needs` (and CgroupManager's own hierarchies writable) can run here; prints why not. */
const can = (needs: CgroupNeeds = {}): boolean =>
  runs(cgroupSkipReason({ manager: true, ...needs }), 'cgroups-manager');

function manager(t: ExecutionContext, layout: CgroupLayout = detected): CgroupManager {
  const cgroups = new CgroupManager({ layout, parent: `orrery-test-${randomBytes(4).toString('hex')}` });
  t.teardown(() => cgroups.removeAll());
  return cgroups;
}

/**
 * Starts `sh -c script` held on a read from stdin, moves it into the cgroup, then lets it go, so
 * nothing it forks can start outside the cgroup (what the native spawn does with clone3 + procs writes).
 */
async function runIn(t: ExecutionContext, cgroup: ReplicaCgroup, script: string): Promise<ChildProcess> {
  const child = spawn('sh', ['-c', `read _; ${script}`], { stdio: ['pipe', 'ignore', 'ignore'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  await new Promise((resolve, reject) => child.once('spawn', resolve).once('error', reject));
  await cgroup.attach(child.pid as number);
  child.stdin?.end('\n');
  return child;
}

const exited = (child: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });

const read = async (file: string | undefined) => (await readFile(file as string, 'utf8')).trim();

/** Alive means present and not a zombie (proc(5) state Z). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Reads a control file, or undefined when this kernel does not have it. */
async function readIfPresent(file: string | undefined): Promise<string | undefined> {
  if (file === undefined) return undefined;
  return readFile(file, 'utf8').then(
    (text) => text.trim(),
    () => undefined,
  );
}

/** v1 says "unlimited" with a huge number (PAGE_COUNTER_MAX pages), v2 with "max". */
const bytesOrMax = (text: string) => (Number(text) >= 2 ** 62 ? 'max' : text);

/**
 * The limits in force, read from whichever files the plan chose (v2 cpu.max, memory.max, pids.max
 * or v1 cpu.cfs_*, memory.limit_in_bytes, pids.max), in v2's notation: cpu `quota period`,
 * memory bytes, pids count, "max" for unlimited.
 */
async function limitsOf(cgroup: ReplicaCgroup): Promise<{ cpu: string; memory: string; pids: string }> {
  const f = cgroup.plan.files;
  let cpu: string;
  if (f.cpuMax !== undefined) cpu = await read(f.cpuMax);
  else {
    const quota = await read(f.cpuCfsQuota);
    cpu = `${quota === '-1' ? 'max' : quota} ${await read(f.cpuCfsPeriod)}`;
  }
  const memory = bytesOrMax(await read(f.memoryMax ?? f.memoryLimit));
  return { cpu, memory, pids: await read(f.pidsMax) };
}

/**
 * No swap on top of the memory limit: v2 memory.swap.max 0; v1 memory+swap capped at the memory
 * limit (with swap accounting) and swappiness 0. Knobs this kernel lacks are left out, as the
 * product leaves them.
 */
async function assertNoSwap(t: ExecutionContext, cgroup: ReplicaCgroup, memory: string): Promise<void> {
  const f = cgroup.plan.files;
  const swapMax = await readIfPresent(f.memorySwapMax);
  if (swapMax !== undefined) t.is(swapMax, '0', 'memory.swap.max');
  const memsw = await readIfPresent(f.memswLimit);
  if (memsw !== undefined) t.is(bytesOrMax(memsw), memory, 'memory.memsw.limit_in_bytes = memory limit');
  const swappiness = await readIfPresent(f.memorySwappiness);
  if (swappiness !== undefined) t.is(swappiness, '0', 'memory.swappiness');
}

const CGROUP2_SUPER_MAGIC = 0x63677270;
const CGROUP_SUPER_MAGIC = 0x27e0eb;

test.runIf(runs(host.cgroupsError, 'cgroups-manager'))(
  'the detected layout is what the kernel mounts: cgroup2 and v1 hierarchies where statfs finds them',
  (t) => {
    t.log(describeCgroupLayout(detected));
    const v1Mounts = Object.values(detected.v1);
    t.is(detected.mode, detected.v2Root === undefined ? 'v1' : v1Mounts.length > 0 ? 'hybrid' : 'v2');
    if (detected.v2Root !== undefined) {
      t.is(statfsSync(detected.v2Root).type, CGROUP2_SUPER_MAGIC, `${detected.v2Root} is a cgroup2 mount`);
      const controllers = readFileSync(join(detected.v2Root, 'cgroup.controllers'), 'utf8');
      t.deepEqual(detected.v2Controllers, controllers.split(/\s+/).filter(Boolean));
    }
    for (const mount of v1Mounts) t.is(statfsSync(mount).type, CGROUP_SUPER_MAGIC, `${mount} is a v1 mount`);
    // This process is a member of every v1 hierarchy found, by controller (proc(5) /proc/self/cgroup).
    const own = readFileSync('/proc/self/cgroup', 'utf8')
      .split('\n')
      .flatMap((line) => line.split(':')[1]?.split(',') ?? []);
    for (const controller of Object.keys(detected.v1)) t.true(own.includes(controller), controller);
    t.is(detected.cgroupKill, detected.v2Root !== undefined && kernelAtLeast(host.kernelRelease, 5, 14));
    t.is(detected.cgroupFreeze, detected.v2Root !== undefined && kernelAtLeast(host.kernelRelease, 5, 2));
  },
);

test.runIf(can({ limits: ['cpu', 'memory', 'pids'] }))(
  'create applies limits that read back, setLimits changes them, remove leaves no directory',
  async (t) => {
    const cgroups = manager(t);
    const limits: CgroupLimits = { cpuMillis: 500, memoryBytes: 64 << 20, pids: 20 };
    const cgroup = await cgroups.create('web-0', limits);
    t.true(cgroup.plan.dirs.every((dir) => existsSync(dir)));
    t.deepEqual(await cgroups.list(), ['web-0']);
    t.is(cgroups.open('web-0')?.spawnTarget.v2Dir, cgroup.spawnTarget.v2Dir);
    t.deepEqual(cgroup.spawnTarget.procsFiles, cgroup.plan.joinFiles);

    t.deepEqual(await limitsOf(cgroup), { cpu: '50000 100000', memory: String(64 << 20), pids: '20' });
    await assertNoSwap(t, cgroup, String(64 << 20));

    await cgroup.setLimits({ memoryBytes: 256 << 20 }); // growing past memsw exercises the v1 write order
    t.deepEqual(await limitsOf(cgroup), { cpu: 'max 100000', memory: String(256 << 20), pids: 'max' });
    await assertNoSwap(t, cgroup, String(256 << 20));
    await cgroup.setLimits({ memoryBytes: 32 << 20 });
    t.is((await limitsOf(cgroup)).memory, String(32 << 20));
    await assertNoSwap(t, cgroup, String(32 << 20));

    await cgroup.remove();
    t.false(cgroup.plan.dirs.some((dir) => existsSync(dir)));
    t.deepEqual(await cgroups.list(), []);
    t.true(await cgroups.removeParentIfEmpty());
    t.false(cgroup.plan.parentDirs.some((dir) => existsSync(dir)));
  },
);

test.runIf(can())(
  'removeParentIfEmpty takes the per-host parent and its emptied ancestors, not one another host still uses',
  async (t) => {
    const top = `orrery-test-${randomBytes(4).toString('hex')}`;
    const hostA = new CgroupManager({ layout: detected, parent: `${top}/host-a` });
    const hostB = new CgroupManager({ layout: detected, parent: `${top}/host-b` });
    const topDirs = () => parentDirsOf(detected, top);
    t.teardown(async () => {
      for (const m of [hostA, hostB]) {
        for (const id of await m.list()) await m.open(id)?.remove();
        await m.removeParentIfEmpty();
      }
    });
    await hostA.create('a-0', {});
    const b = await hostB.create('b-0', {});
    t.false(await hostA.removeParentIfEmpty(), 'a replica is still there');
    await hostA.open('a-0')?.remove();
    t.true(await hostA.removeParentIfEmpty());
    t.true(
      topDirs().every((dir) => existsSync(dir)),
      'the shared top stays while host-b uses it',
    );
    await b.remove();
    t.true(await hostB.removeParentIfEmpty());
    t.false(
      topDirs().some((dir) => existsSync(dir)),
      'the last host leaves nothing behind',
    );
  },
);

test.runIf(can({ limits: ['cpu', 'memory', 'pids'] }))(
  'created without limits: unlimited as the kernel made it; a leftover directory is reset to unlimited',
  async (t) => {
    const cgroups = manager(t);
    const fresh = await cgroups.create('free-0', {});
    t.deepEqual(await limitsOf(fresh), { cpu: 'max 100000', memory: 'max', pids: 'max' });
    // The no-swap policy is still written.
    await assertNoSwap(t, fresh, 'max');
    // A directory left behind with limits (an interrupted run): create() must not trust defaults.
    const left = await cgroups.create('left-0', { cpuMillis: 500, pids: 5 });
    t.like(await limitsOf(left), { cpu: '50000 100000', pids: '5' });
    const again = await cgroups.create('left-0', {});
    t.deepEqual(await limitsOf(again), { cpu: 'max 100000', memory: 'max', pids: 'max' });
    t.is(left.plan.files.pidsMax, again.plan.files.pidsMax);
  },
);

// The hog is python3 (it fills every page it allocates, in a few MB of its own).
const python3 =
  spawnSync('python3', ['-c', '']).status === 0 ? undefined : 'no python3 on PATH for the memory hog';

test.runIf(can({ limits: ['memory'] }) && runs(python3, 'cgroups-manager'))(
  'a process allocating past the memory limit is OOM-killed and counted, swap cannot save it',
  async (t) => {
    const cgroups = manager(t);
    const cgroup = await cgroups.create('hog-0', { memoryBytes: 64 << 20 });
    const before = await cgroup.oomKills();
    // b'x' * n fills every page (a bare bytearray(n) would stay lazily zero-mapped).
    const child = await runIn(t, cgroup, `exec python3 -c "x = b'x' * (512 << 20); print(len(x))"`);
    const exit = await exited(child);
    t.is(exit.signal, 'SIGKILL');
    t.true(await cgroup.oomKilled(before));
    const stats = await cgroup.stats();
    t.true(stats.oomKills >= 1);
    // The high-water mark: v1 memory.max_usage_in_bytes, v2 memory.peak (Linux 5.19+ only).
    if (existsSync(cgroup.plan.files.memoryPeak as string)) {
      t.true(stats.memoryPeak <= 64 << 20, `peak ${stats.memoryPeak} stays within the limit`);
      t.true(stats.memoryPeak > 32 << 20, `peak ${stats.memoryPeak} shows the allocation reached the limit`);
    } else t.log(`no ${cgroup.plan.files.memoryPeak} on Linux ${host.kernelRelease}: peak not checked`);
  },
);

test.runIf(can({ limits: ['pids'] }))(
  'pids.max contains a fork bomb and the test process keeps working',
  async (t) => {
    const cgroups = manager(t);
    const cgroup = await cgroups.create('bomb-0', { pids: 20 });
    await runIn(t, cgroup, 'b() { b & b & wait; }; b');
    // Sampled until the kernel has refused forks (pids.events "max N"), however slowly a loaded
    // machine lets the bomb grow, then a while longer.
    // pids.events beside pids.max, in v1 and v2 alike.
    const events = join(dirname(cgroup.plan.files.pidsMax as string), 'pids.events');
    let most = 0;
    let refusedAt = -1;
    for (let i = 0; i < 1000 && (refusedAt < 0 || i < refusedAt + 20); i++) {
      most = Math.max(most, (await cgroup.stats()).pids);
      if (refusedAt < 0 && /max [1-9]/.test(await read(events))) refusedAt = i;
      await sleep(10);
    }
    // Refused forks prove the bomb reached the limit (its task count swings too fast for sampling
    // to catch the peak on a loaded machine); sampling proves it never went past it.
    t.true(refusedAt >= 0, 'forks were refused (pids.events)');
    t.true(most <= 20, `at most 20 tasks, saw ${most}`);
    t.is(spawnSync('true').status, 0, 'outside the cgroup, forking still works');
    await cgroup.kill();
    t.deepEqual(await cgroup.pids(), []);
  },
);

async function killLeavesNoDaemon(t: ExecutionContext, layout: CgroupLayout): Promise<void> {
  const cgroups = manager(t, layout);
  const cgroup = await cgroups.create('daemon-0', {});
  const pidFile = `/tmp/orrery-test-daemon-${randomBytes(4).toString('hex')}`;
  t.teardown(() => spawnSync('rm', ['-f', pidFile]));
  // Double fork + setsid: the grandchild is reparented away and leads its own session.
  await runIn(t, cgroup, `setsid sh -c 'sleep 1000 & echo $! > ${pidFile}; exit' & wait; exec sleep 1000`);
  const daemon = await eventually(
    'the daemon to write its pid',
    async () => Number((await readFile(pidFile, 'utf8').catch(() => '')).trim()) || undefined,
  );
  t.true((await cgroup.pids()).includes(daemon), 'the daemon is still in the cgroup');
  t.true((await cgroup.pids()).length >= 2);
  await cgroup.kill();
  t.deepEqual(await cgroup.pids(), []);
  t.false(alive(daemon), 'the daemonized grandchild is dead');
  t.false(await cgroup.populated());
  await cgroup.remove();
  t.false(cgroup.plan.dirs.some((dir) => existsSync(dir)));
}

test.runIf(can({ kill: true }))('kill() via cgroup.kill leaves no daemonized grandchild alive', (t) =>
  killLeavesNoDaemon(t, detected),
);

test.runIf(can({ freeze: 'v2' }))(
  'kill() via cgroup.freeze + SIGKILL (no cgroup.kill) leaves no daemonized grandchild alive',
  (t) => killLeavesNoDaemon(t, { ...detected, cgroupKill: false }),
);

test.runIf(can({ freeze: 'v1', v1: ['freezer'] }))(
  'kill() via the v1 freezer + SIGKILL (neither cgroup.kill nor cgroup.freeze) leaves no daemonized grandchild alive',
  (t) => killLeavesNoDaemon(t, { ...detected, cgroupKill: false, cgroupFreeze: false }),
);

test.runIf(can({ limits: ['cpu', 'memory'] }))(
  'cpu usage grows under a busy loop; memory and pids are reported',
  async (t) => {
    const cgroups = manager(t);
    const cgroup = await cgroups.create('busy-0', { cpuMillis: 500 });
    // exec after joining, as the real spawn does, so the new image's pages are charged here
    // (v1 does not move existing charges: memory.move_charge_at_immigrate is 0).
    await runIn(t, cgroup, "exec sh -c 'while :; do :; done'");
    let firstAt = 0;
    const first = await eventually('the loop to use CPU', async () => {
      firstAt = performance.now();
      const stats = await cgroup.stats();
      return stats.cpuUsageNanos > 0n && stats;
    });
    // Until the loop has used 400 ms more CPU, however long a loaded machine takes to give it that.
    const second = await eventually(
      '400 ms more CPU',
      async () => {
        const stats = await cgroup.stats();
        return stats.cpuUsageNanos - first.cpuUsageNanos >= 400_000_000n && stats;
      },
      { timeoutMs: 60_000 },
    );
    const wallMs = performance.now() - firstAt;
    const cpuMs = Number(second.cpuUsageNanos - first.cpuUsageNanos) / 1e6;
    t.log(`${cpuMs.toFixed(0)} ms of CPU in ${wallMs.toFixed(0)} ms (quota 500m)`);
    // The quota, not a speed: at 500m the kernel runs the loop at most 50 ms per 100 ms period, so
    // that CPU took at least twice as long in wall time, less the ends of the window (two periods'
    // quota, 100 ms) and 50 ms for the kernel's accounting overshoot. Unthrottled it would take
    // ~400 ms of wall time, over the bound; load only makes the wall time longer.
    t.true(
      cpuMs <= 0.5 * wallMs + 150,
      `${cpuMs} ms of CPU in ${wallMs} ms: more than the 500m quota allows`,
    );
    t.true(second.memoryCurrent > 0);
    t.is(second.pids, 1);
    t.is(second.oomKills, 0);
  },
);
