// The test suite's own cleanup, on real processes and cgroups: removeCgroupTree (the last line of
// the engine and agent teardowns, test/helpers/engine-harness.ts) and the run-level sweep of
// hack/test.ts (hack/test-sweep.ts). The sweeps here use a run id of their own, which no other
// process carries; and since this test runs under ava, another "test run" is always alive from
// their point of view, so they may only remove cgroups named with that id. A dry run checks that
// plan before any real sweep, so a bug cannot reach the cgroups of other runs on this machine.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { RUN_ENV, sweep, TEST_CGROUP_PREFIX } from '../../hack/test-sweep.ts';
import type { CgroupLayout } from '../../node-runtime/cgroups/detect.ts';
import { CgroupManager } from '../../node-runtime/cgroups/index.ts';
import { parentDirsOf } from '../../node-runtime/cgroups/paths.ts';
import { isAlive, removeCgroupTree, uniqueParent } from '../helpers/engine-harness.ts';
import { cgroupSkipReason, host, runs } from '../helpers/features.ts';

const layout = host.cgroups as CgroupLayout;
const canCgroups = runs(cgroupSkipReason({ manager: true }), 'test-harness-cleanup');

/** `sleep 1000` (or `script` under sh) with `env` added to PATH; SIGKILLed at teardown if still there. */
async function sleeper(t: ExecutionContext, env: Record<string, string> = {}, script?: string) {
  const argv = script === undefined ? ['sleep', ['1000']] : ['sh', ['-c', script]];
  const child = spawn(argv[0] as string, argv[1] as string[], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: 'ignore',
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  await new Promise((resolve, reject) => child.once('spawn', resolve).once('error', reject));
  return child as ChildProcess & { pid: number };
}

const signalOf = (child: ChildProcess) =>
  new Promise<NodeJS.Signals | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.signalCode);
    else child.once('exit', (_code, signal) => resolve(signal));
  });

const leftDirs = (parent: string) => parentDirsOf(layout, parent).filter((dir) => existsSync(dir));

test.runIf(canCgroups)(
  'removeCgroupTree kills and removes a tree with a process in it; a tree already gone is fine',
  async (t) => {
    const parent = uniqueParent();
    const cgroups = new CgroupManager({ layout, parent });
    t.teardown(() => cgroups.removeAll().catch(() => {}));
    const cgroup = await cgroups.create('r');
    const child = await sleeper(t);
    await cgroup.attach(child.pid);

    await removeCgroupTree(parent);
    t.is(await signalOf(child), 'SIGKILL');
    t.deepEqual(leftDirs(parent), []);
    await t.notThrowsAsync(removeCgroupTree(parent), 'nothing there is not an error');
  },
);

test.runIf(canCgroups)('removeCgroupTree throws, naming what it could not remove', async (t) => {
  const parent = uniqueParent();
  const cgroups = new CgroupManager({ layout, parent });
  const cgroup = await cgroups.create('r');
  // A child cgroup the manager does not know of: rmdir of `r` stays EBUSY.
  const stuck = join(cgroup.plan.dirs[0] as string, 'stuck');
  mkdirSync(stuck);
  t.teardown(async () => {
    rmdirSync(stuck);
    await removeCgroupTree(parent);
  });
  const error = await t.throwsAsync(removeCgroupTree(parent, 200));
  t.regex(error?.message ?? '', new RegExp(`^cgroup tree ${parent} not removed \\(.*EBUSY.*\\); left: `));
  t.true(error?.message.includes(`${stuck} (no pids)`), error?.message);
});

test('the sweep kills only the processes that carry its run id, SIGKILL for one that ignores SIGTERM', async (t) => {
  const runId = `t${randomBytes(6).toString('hex')}`;
  const mine = await sleeper(t, { [RUN_ENV]: runId });
  const stubborn = await sleeper(t, { [RUN_ENV]: runId }, 'trap "" TERM; exec sleep 1000');
  const otherRun = await sleeper(t, { [RUN_ENV]: `${runId}0` });
  const unmarked = await sleeper(t);
  const lines: string[] = [];
  // No cgroup named for this run id exists, so the cgroup half of the sweep removes nothing.
  const plan = await sweep({ runId, startedAt: Date.now(), log: () => {}, dryRun: true });
  t.deepEqual(plan.removed, []);
  if (plan.removed.length > 0) return;
  const result = await sweep({ runId, startedAt: Date.now(), log: (l) => lines.push(l), graceMs: 500 });

  t.deepEqual(
    result.killed.map((p) => [p.pid, p.how]).sort(),
    [
      [mine.pid, 'SIGTERM'],
      [stubborn.pid, 'SIGKILL'],
    ].sort(),
  );
  t.is(await signalOf(mine), 'SIGTERM');
  t.is(await signalOf(stubborn), 'SIGKILL');
  t.true(await isAlive(otherRun.pid), 'a process of another run is left alone');
  t.true(await isAlive(unmarked.pid), 'a process of no run is left alone');
  t.true(lines.includes(`sweep: killed pid ${mine.pid} (SIGTERM): sleep 1000`), lines.join('\n'));
  t.deepEqual(result.removed, []);
  t.deepEqual(result.errors, []);
});

test.runIf(canCgroups)(
  "the sweep removes its run's cgroups and what runs in them, and keeps the others while another test run is active",
  async (t) => {
    const runId = `t${randomBytes(6).toString('hex')}`;
    const ownName = `${TEST_CGROUP_PREFIX}${runId}-${randomBytes(4).toString('hex')}`;
    const otherName = `${TEST_CGROUP_PREFIX}${randomBytes(4).toString('hex')}`;
    t.teardown(() => removeCgroupTree(ownName));
    t.teardown(() => removeCgroupTree(otherName));
    const inOwn = await sleeper(t);
    const inOther = await sleeper(t);
    await (await new CgroupManager({ layout, parent: ownName }).create('r')).attach(inOwn.pid);
    await (await new CgroupManager({ layout, parent: otherName }).create('r')).attach(inOther.pid);

    const plan = await sweep({ runId, startedAt: Date.now() - 60_000, log: () => {}, dryRun: true });
    t.deepEqual(
      plan.removed.map((c) => c.name),
      [ownName],
      'the plan: only the cgroup named for the run',
    );
    const kept = plan.kept.find((k) => k.name === otherName);
    t.regex(kept?.why ?? '', /^another test run is active \(pid \d+ /, 'ava itself is such a run');
    if (plan.removed.some((c) => c.name !== ownName)) return; // never sweep for real on a wrong plan

    const lines: string[] = [];
    const result = await sweep({ runId, startedAt: Date.now() - 60_000, log: (l) => lines.push(l) });
    t.deepEqual(
      result.removed.map((c) => [c.name, c.pids]),
      [[ownName, [inOwn.pid]]],
    );
    t.is(await signalOf(inOwn), 'SIGKILL');
    t.deepEqual(leftDirs(ownName), [], 'gone from every hierarchy');
    t.true(await isAlive(inOther.pid), "the other run's process runs on");
    t.deepEqual(leftDirs(otherName), parentDirsOf(layout, otherName), "the other run's cgroup is all there");
    t.true(
      lines.some(
        (l) => l.startsWith(`sweep: removed cgroup ${ownName} from `) && l.endsWith(`pids ${inOwn.pid}`),
      ),
      lines.join('\n'),
    );
    t.deepEqual(result.errors, []);
  },
);
