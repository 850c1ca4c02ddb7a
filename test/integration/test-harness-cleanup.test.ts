// The test suite's own cleanup, on real processes and cgroups: removeCgroupTree (the last line of
// the engine and agent teardowns, test/helpers/engine-harness.ts).
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { CgroupLayout } from '../../node-runtime/cgroups/detect.ts';
import { CgroupManager } from '../../node-runtime/cgroups/index.ts';
import { parentDirsOf } from '../../node-runtime/cgroups/paths.ts';
import { removeCgroupTree, uniqueParent } from '../helpers/engine-harness.ts';
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
