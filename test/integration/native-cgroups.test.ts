// Joining cgroups at spawn: v2 through CLONE_INTO_CGROUP (or the child writing cgroup.procs when
// the kernel cannot), v1 by the child writing "0" to each cgroup.procs before exec, all before
// the workload runs a single instruction. The hierarchies are the ones this host mounts, as the
// product detects them: the cgroup2 mount point (/sys/fs/cgroup on v2-only hosts,
// /sys/fs/cgroup/unified on hybrid ones) and the v1 memory controller's mount where there is one.
// A hierarchy that is missing, or where cgroups cannot be created (not root, read-only), is left
// out with the reason printed; with neither, the join tests are skipped.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { removeCgroupDir } from '../../node-runtime/cgroups/index.ts';
import {
  type CloneFallback,
  forceCloneFallback,
  kernelFeatures,
  SpawnError,
  sendSignal,
  spawn,
} from '../../node-runtime/native/index.ts';
import { cgroupSkipReason, host, runs } from '../helpers/features.ts';
import { tempDir, watched } from './fixtures/native-run.ts';

const v2Reason = cgroupSkipReason({ v2: true });
const v1Reason = cgroupSkipReason({ v1: ['memory'] });
/** Where the tests make their cgroups: each undefined when this host cannot have one there. */
const V2_ROOT = v2Reason === undefined ? host.cgroups?.v2Root : undefined;
const V1_MEMORY = v1Reason === undefined ? host.cgroups?.v1.memory : undefined;
const joinReason =
  V2_ROOT === undefined && V1_MEMORY === undefined
    ? `cgroup2: ${v2Reason}; v1 memory: ${v1Reason}`
    : undefined;
// One hierarchy only: the tests run with it, and say which part is left out.
if (joinReason === undefined) {
  runs(v2Reason, 'native-cgroups: the v2 half of the join tests');
  runs(v1Reason, 'native-cgroups: the v1 half of the join tests');
}
/** What this kernel offers before any forceCloneFallback. */
const realFeatures = kernelFeatures();

/** rmdir(2) of each directory this test made, even when another fails; EBUSY is retried a while. */
async function removeCgroupDirs(dirs: string[]): Promise<void> {
  let first: unknown;
  for (const dir of dirs) {
    await removeCgroupDir(dir, 10_000).catch((error: unknown) => {
      first ??= error;
    });
  }
  if (first !== undefined) throw first;
}

/**
 * A cgroup `orrery-test-<random>` in each hierarchy this host has. The teardown is registered
 * before the first mkdir, so a failing second mkdir does not leak the first directory.
 */
function testCgroups(t: ExecutionContext): { name: string; v2Dir?: string; v1Dir?: string } {
  const name = `orrery-test-${randomBytes(4).toString('hex')}`;
  const made: string[] = [];
  // A cgroup directory is removed with rmdir(2) once empty (its processes exited).
  t.teardown(() => removeCgroupDirs(made));
  const v2Dir = V2_ROOT === undefined ? undefined : join(V2_ROOT, name);
  const v1Dir = V1_MEMORY === undefined ? undefined : join(V1_MEMORY, name);
  for (const dir of [v2Dir, v1Dir]) {
    if (dir === undefined) continue;
    mkdirSync(dir);
    made.push(dir);
  }
  return { name, ...(v2Dir ? { v2Dir } : {}), ...(v1Dir ? { v1Dir } : {}) };
}

function cgroupLines(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
}

const hierarchies = [V1_MEMORY && 'v1', V2_ROOT && 'v2'].filter(Boolean).join(' and ') || 'v1 and v2';

// Serial: forceCloneFallback is process-wide.
for (const fallback of ['none', 'no-into-cgroup', 'no-clone3', 'fork'] as CloneFallback[]) {
  test.serial.runIf(runs(joinReason, 'native-cgroups'))(
    `${hierarchies} cgroups are joined before exec, also inside a pid namespace (clone path: ${fallback})`,
    async (t) => {
      forceCloneFallback(fallback);
      t.teardown(() => forceCloneFallback('none'));
      // Forcing only takes paths away; a kernel (or seccomp filter) without them has none to take.
      t.is(kernelFeatures().cloneIntoCgroup, realFeatures.cloneIntoCgroup && fallback === 'none');
      t.is(
        kernelFeatures().clone3,
        realFeatures.clone3 && (fallback === 'none' || fallback === 'no-into-cgroup'),
      );
      const { name, v2Dir, v1Dir } = testCgroups(t);
      const dir = tempDir(t);
      const child = spawn({
        file: '/bin/sleep',
        argv: ['sleep', '30'],
        env: [],
        namespaces: ['pid', 'mount', 'uts', 'ipc'],
        cgroup: {
          ...(v2Dir ? { v2Dir } : {}),
          procsFiles: v1Dir ? [join(v1Dir, 'cgroup.procs')] : [],
        },
        logFile: join(dir, 'out.log'),
        exitStatusFile: join(dir, 'status'),
      });
      const exited = watched(t, child);

      const lines = cgroupLines(child.pid);
      const procsOf = (cgroupDir: string) =>
        readFileSync(join(cgroupDir, 'cgroup.procs'), 'utf8').trim().split('\n').map(Number).sort();
      // The init (host pid child.pid) and the workload under it are both members.
      if (v2Dir) {
        t.true(lines.includes(`0::/${name}`), lines.join('\n'));
        const v2Procs = procsOf(v2Dir);
        t.true(v2Procs.includes(child.pid));
        t.is(v2Procs.length, 2, 'init and the workload');
      }
      if (v1Dir) {
        t.true(
          lines.some((l) => l.endsWith(`:memory:/${name}`)),
          lines.join('\n'),
        );
        const v1Procs = procsOf(v1Dir);
        t.true(v1Procs.includes(child.pid));
        t.is(v1Procs.length, 2, 'init and the workload');
        if (v2Dir) t.deepEqual(v1Procs, procsOf(v2Dir));
      }
      sendSignal(child.pidfd, 'SIGKILL');
      t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
    },
  );
}

test.serial(
  'a cgroup.procs file that cannot be opened fails the spawn at step cgroup.procs with its path',
  (t) => {
    const dir = tempDir(t);
    // Opened by the child, before any cgroup is involved: any hierarchy (or none) will do.
    const base = host.cgroups?.v1.memory ?? host.cgroups?.v2Root ?? tmpdir();
    const missing = join(base, `orrery-test-missing-${randomBytes(4).toString('hex')}`, 'cgroup.procs');
    const err = t.throws(
      () =>
        spawn({
          file: '/bin/true',
          argv: ['true'],
          env: [],
          namespaces: [],
          cgroup: { procsFiles: [missing] },
          logFile: join(dir, 'l'),
        }),
      { instanceOf: SpawnError },
    );
    t.is(err?.step, 'cgroup.procs');
    t.is(err?.code, 'ENOENT');
    t.is(err?.path, missing);
  },
);

test.serial('a v2 directory that does not exist fails the spawn naming it', (t) => {
  const dir = tempDir(t);
  // Opened (O_PATH) before the clone, whatever the kernel offers: no cgroup2 mount is needed.
  const v2Dir = join(
    host.cgroups?.v2Root ?? tmpdir(),
    `orrery-test-missing-${randomBytes(4).toString('hex')}`,
  );
  const err = t.throws(
    () =>
      spawn({
        file: '/bin/true',
        argv: ['true'],
        env: [],
        namespaces: [],
        cgroup: { v2Dir },
        logFile: join(dir, 'l'),
      }),
    { instanceOf: SpawnError },
  );
  t.is(err?.step, 'cgroup.v2Dir');
  t.is(err?.path, v2Dir);
});
