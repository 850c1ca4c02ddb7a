// Joining cgroups at spawn: v2 through CLONE_INTO_CGROUP (or the child writing cgroup.procs when
// the kernel cannot), v1 by the child writing "0" to each cgroup.procs before exec, all before
// the workload runs a single instruction. Hybrid hierarchy as on these hosts: v2 at
// /sys/fs/cgroup/unified, v1 memory at /sys/fs/cgroup/memory.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import {
  type CloneFallback,
  type ExitStatus,
  forceCloneFallback,
  kernelFeatures,
  SpawnError,
  sendSignal,
  spawn,
  watchExit,
} from '../../node-runtime/native/index.ts';
import { tempDir, watched } from './fixtures/native-run.ts';

const V2_ROOT = '/sys/fs/cgroup/unified';
const V1_MEMORY = '/sys/fs/cgroup/memory';

function testCgroups(t: ExecutionContext): { name: string; v2Dir: string; v1Dir: string } {
  const name = `orrery-test-${randomBytes(4).toString('hex')}`;
  const v2Dir = join(V2_ROOT, name);
  const v1Dir = join(V1_MEMORY, name);
  mkdirSync(v2Dir);
  mkdirSync(v1Dir);
  t.teardown(() => {
    // rmdir only: a cgroup directory is removed with rmdir(2) once empty (its processes exited).
    for (const dir of [v2Dir, v1Dir]) rmdirSync(dir);
  });
  return { name, v2Dir, v1Dir };
}

function cgroupLines(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
}

// Serial: forceCloneFallback is process-wide.
for (const fallback of ['none', 'no-into-cgroup', 'no-clone3', 'fork'] as CloneFallback[]) {
  test.serial(
    `v1 and v2 cgroups are joined before exec, also inside a pid namespace (clone path: ${fallback})`,
    async (t) => {
      forceCloneFallback(fallback);
      t.teardown(() => forceCloneFallback('none'));
      t.is(kernelFeatures().cloneIntoCgroup, fallback === 'none');
      t.is(kernelFeatures().clone3, fallback === 'none' || fallback === 'no-into-cgroup');
      const { name, v2Dir, v1Dir } = testCgroups(t);
      const dir = tempDir(t);
      const child = spawn({
        file: '/bin/sleep',
        argv: ['sleep', '30'],
        env: [],
        namespaces: ['pid', 'mount', 'uts', 'ipc'],
        cgroup: { v2Dir, procsFiles: [join(v1Dir, 'cgroup.procs')] },
        logFile: join(dir, 'out.log'),
        exitStatusFile: join(dir, 'status'),
      });
      const exited = watched(t, child);

      const lines = cgroupLines(child.pid);
      t.true(lines.includes(`0::/${name}`), lines.join('\n'));
      t.true(
        lines.some((l) => l.endsWith(`:memory:/${name}`)),
        lines.join('\n'),
      );
      // The init (host pid child.pid) and the workload under it are both members.
      const v2Procs = readFileSync(join(v2Dir, 'cgroup.procs'), 'utf8').trim().split('\n').map(Number);
      const v1Procs = readFileSync(join(v1Dir, 'cgroup.procs'), 'utf8').trim().split('\n').map(Number);
      t.true(v2Procs.includes(child.pid));
      t.is(v2Procs.length, 2, 'init and the workload');
      t.deepEqual(v1Procs.sort(), v2Procs.sort());
      sendSignal(child.pidfd, 'SIGKILL');
      t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
    },
  );
}

test.serial(
  'a cgroup.procs file that cannot be opened fails the spawn at step cgroup.procs with its path',
  (t) => {
    const dir = tempDir(t);
    const missing = join(V1_MEMORY, `orrery-test-missing-${randomBytes(4).toString('hex')}`, 'cgroup.procs');
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
  const v2Dir = join(V2_ROOT, `orrery-test-missing-${randomBytes(4).toString('hex')}`);
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
