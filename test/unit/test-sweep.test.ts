// How the run-level sweep of hack/test.ts (hack/test-sweep.ts) tells what is its own: the run id
// in a process's environment, a test runner on a command line, a cgroup named for the run, and
// every cgroup hierarchy of a mount table. Its effect on real processes and cgroups is tested in
// test/integration/test-harness-cleanup.test.ts.
import test from 'ava';
import { cgroupMounts, isTestRunner, marksRun, namedForRun } from '../../hack/test-sweep.ts';

test('marksRun: only the exact ORRERY_TEST_RUN=<id> entry marks a process', (t) => {
  const env = ['PATH=/usr/bin', 'ORRERY_TEST_RUN=ab12cd34', 'HOME=/root'];
  t.true(marksRun(env, 'ab12cd34'));
  t.false(marksRun(env, 'ab12cd3'), 'a prefix of the id is another run');
  t.false(marksRun(env, 'ab12cd345'));
  t.false(marksRun(['X_ORRERY_TEST_RUN=ab12cd34'], 'ab12cd34'));
  t.false(marksRun(['ORRERY_TEST_RUN='], ''), 'an empty id marks nothing');
  t.false(marksRun([], 'ab12cd34'));
});

test('isTestRunner: the ava cli and workers and hack/test.ts, nothing else', (t) => {
  t.true(isTestRunner(['node', '/work/main/node_modules/.bin/ava', 'test/x.test.ts']));
  t.true(isTestRunner(['/usr/bin/node', '/src/o/node_modules/ava/entrypoints/cli.mjs']));
  t.true(isTestRunner(['node', '--enable-source-maps', '/w/node_modules/ava/lib/worker/base.js']));
  t.true(isTestRunner(['node', 'hack/test.ts', 'test/unit']));
  t.true(isTestRunner(['/usr/bin/node', '/work/other/hack/test.ts']));
  t.false(isTestRunner(['sleep', '1000']));
  t.false(isTestRunner(['node', '/work/main/bin/orrery.js', 'runtime']));
  t.false(isTestRunner(['node', '/w/node_modules/avalanche/index.js']));
  t.false(isTestRunner(['vim', 'hack/test.ts.orig']));
  t.false(isTestRunner([]));
});

test('namedForRun: orrery-test-<run>-<random> only', (t) => {
  t.true(namedForRun('orrery-test-ab12cd34-0011aabb', 'ab12cd34'));
  t.false(namedForRun('orrery-test-0011aabb', 'ab12cd34'));
  t.false(namedForRun('orrery-test-ab12cd345-0011aabb', 'ab12cd34'));
  t.false(namedForRun('orrery-test-ab12cd34-0011aabb', ''));
  t.false(namedForRun('orrery-bench-ab12cd34-0011aabb', 'ab12cd34'));
});

test('cgroupMounts: every cgroup and cgroup2 mount, named v1 hierarchies included, once each', (t) => {
  const hybrid = `\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 23 0:38 / /run/cg\\040two rw,relatime - cgroup2 cgroup2 rw
43 23 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
  t.deepEqual(cgroupMounts(hybrid), [
    '/sys/fs/cgroup/cpu',
    '/sys/fs/cgroup/memory',
    '/sys/fs/cgroup/devices',
    '/sys/fs/cgroup/systemd',
    '/sys/fs/cgroup/unified',
    '/run/cg two',
  ]);
  t.deepEqual(cgroupMounts('22 1 8:1 / / rw - ext4 /dev/root rw\n'), []);
});
