// The host feature detection the integration tests gate on (test/helpers/host-facts.ts), fed the
// hosts they meet: cgroup v2 only (most CI runners, at /sys/fs/cgroup or elsewhere), v1 only,
// and hybrid (v2 at /sys/fs/cgroup/unified without controllers, v1 beside it). The mountinfo
// goes through the product's own layoutFromFacts, as detectCgroupLayout does on a real host.
import test from 'ava';
import { layoutFromFacts } from '../../node-runtime/cgroups/detect.ts';
import {
  cgroupProblem,
  describeCgroupLayout,
  hostFeaturesFromFacts,
  managerRoots,
  type NativeKernelFeatures,
  parseKernelRelease,
  seccompModeOf,
} from '../helpers/host-facts.ts';

/** An Ubuntu 22.04 / GitHub Actions runner: unified hierarchy only, kernel 6.1-ish. */
const V2_ONLY = `\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw,discard
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
29 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
30 24 0:27 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
`;
const V2_CONTROLLERS = 'cpuset cpu io memory hugetlb pids rdma misc\n';

/** A container runtime that mounts cgroup2 somewhere else, with a mount point that needs unescaping. */
const V2_ELSEWHERE = `\
600 500 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
610 600 0:60 / /run/cgroup\\040two rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
`;

/** CentOS 7 / RHEL 7: legacy hierarchy only, cpu and cpuacct co-mounted. */
const V1_ONLY = `\
18 60 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
25 18 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
27 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
28 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
29 25 0:27 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
30 25 0:28 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,freezer
31 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuset
`;

/** The machine Orrery is developed on: v2 at /sys/fs/cgroup/unified without controllers, v1 beside it. */
const HYBRID = `\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;

const v2Only = layoutFromFacts({
  mountinfo: V2_ONLY,
  v2ControllersText: V2_CONTROLLERS,
  kernelRelease: '6.1.0-18-amd64',
});
const v2NoControllers = layoutFromFacts({
  mountinfo: V2_ONLY,
  v2ControllersText: '',
  kernelRelease: '6.1.0',
});
const v2Old = layoutFromFacts({
  mountinfo: V2_ONLY,
  v2ControllersText: V2_CONTROLLERS,
  kernelRelease: '5.10.0',
});
const v2Elsewhere = layoutFromFacts({
  mountinfo: V2_ELSEWHERE,
  v2ControllersText: 'memory pids',
  kernelRelease: '6.8.0',
});
const v1Only = layoutFromFacts({ mountinfo: V1_ONLY, kernelRelease: '3.10.0-1160.el7.x86_64' });
const hybrid = layoutFromFacts({ mountinfo: HYBRID, v2ControllersText: '\n', kernelRelease: '6.18.44-fc' });

const allWritable = () => true;

test('parseKernelRelease reads major.minor.patch from uname -r, whatever follows', (t) => {
  t.deepEqual(parseKernelRelease('6.18.44-fc-v1272'), { major: 6, minor: 18, patch: 44 });
  t.deepEqual(parseKernelRelease('6.1.0-18-amd64'), { major: 6, minor: 1, patch: 0 });
  t.deepEqual(parseKernelRelease('5.15.0-1057-azure\n'), { major: 5, minor: 15, patch: 0 });
  t.deepEqual(parseKernelRelease('4.19'), { major: 4, minor: 19, patch: 0 });
  t.deepEqual(parseKernelRelease('3.10.0-1160.el7.x86_64'), { major: 3, minor: 10, patch: 0 });
  t.is(parseKernelRelease('garbage'), undefined);
  t.is(parseKernelRelease(''), undefined);
});

test('seccompModeOf reads the Seccomp line of /proc/self/status', (t) => {
  t.is(seccompModeOf('Name:\tnode\nSeccomp:\t0\nSeccomp_filters:\t0\n'), 'disabled');
  t.is(seccompModeOf('Seccomp:\t2\nSeccomp_filters:\t1\n'), 'filter');
  t.is(seccompModeOf('Seccomp:\t1\n'), 'strict');
  t.is(seccompModeOf('Name:\tnode\n'), undefined, 'kernels without CONFIG_SECCOMP print no line');
});

test('hostFeaturesFromFacts: root is uid 0, the layout and the addon features pass through', (t) => {
  const native: NativeKernelFeatures = {
    clone3: true,
    cloneIntoCgroup: true,
    pidfdInfoExit: false,
    cgroupKill: true,
  };
  const ci = hostFeaturesFromFacts({
    kernelRelease: '6.1.0-18-amd64',
    uid: 1001,
    procStatus: 'Seccomp:\t0\n',
    cgroups: v2Only,
    native,
  });
  t.false(ci.root);
  t.deepEqual(ci.kernel, { major: 6, minor: 1, patch: 0 });
  t.is(ci.seccomp, 'disabled');
  t.is(ci.cgroups?.mode, 'v2');
  t.is(ci.cgroups?.v2Root, '/sys/fs/cgroup');
  t.is(ci.cgroupsError, undefined);
  t.false(ci.native.pidfdInfoExit);

  const bare = hostFeaturesFromFacts({
    kernelRelease: '6.18.44-fc',
    uid: 0,
    cgroups: new Error('no cgroup hierarchy is mounted'),
    native: { ...native, pidfdInfoExit: true },
  });
  t.true(bare.root);
  t.is(bare.cgroups, undefined);
  t.is(bare.cgroupsError, 'no cgroup hierarchy is mounted');
  t.is(bare.seccomp, undefined);
  t.true(bare.native.pidfdInfoExit);
});

test('describeCgroupLayout names the mode, the v2 mount point and the v1 mounts', (t) => {
  t.is(
    describeCgroupLayout(v2Only),
    'v2: cgroup2 at /sys/fs/cgroup (cpuset cpu io memory hugetlb pids rdma misc)',
  );
  t.is(describeCgroupLayout(v2Elsewhere), 'v2: cgroup2 at /run/cgroup two (memory pids)');
  t.is(
    describeCgroupLayout(v1Only),
    'v1: v1 cpu at /sys/fs/cgroup/cpu,cpuacct, cpuacct at /sys/fs/cgroup/cpu,cpuacct, memory at /sys/fs/cgroup/memory, ' +
      'pids at /sys/fs/cgroup/pids, freezer at /sys/fs/cgroup/freezer, cpuset at /sys/fs/cgroup/cpuset',
  );
  t.regex(
    describeCgroupLayout(hybrid),
    /^hybrid: cgroup2 at \/sys\/fs\/cgroup\/unified \(no controllers\); v1 cpu at /,
  );
});

test('managerRoots: the hierarchy roots CgroupManager writes to, per layout', (t) => {
  t.deepEqual(managerRoots(v2Only), ['/sys/fs/cgroup']);
  t.deepEqual(managerRoots(v2Elsewhere), ['/run/cgroup two']);
  // co-mounted cpu,cpuacct is one directory; cpuset is never joined; v1 freezer only without v2.
  t.deepEqual(managerRoots(v1Only), [
    '/sys/fs/cgroup/cpu,cpuacct',
    '/sys/fs/cgroup/memory',
    '/sys/fs/cgroup/pids',
    '/sys/fs/cgroup/freezer',
  ]);
  t.deepEqual(managerRoots(hybrid), [
    '/sys/fs/cgroup/unified',
    '/sys/fs/cgroup/cpu',
    '/sys/fs/cgroup/cpuacct',
    '/sys/fs/cgroup/memory',
    '/sys/fs/cgroup/pids',
  ]);
});

test('cgroupProblem on a v2-only host: v2 tests run at its mount point, v1 ones are skipped with the reason', (t) => {
  t.is(
    cgroupProblem(v2Only, { v2: true, manager: true, limits: ['cpu', 'memory', 'pids'] }, allWritable),
    undefined,
  );
  t.is(cgroupProblem(v2Only, { kill: true, freeze: 'v2' }, allWritable), undefined);
  t.regex(
    cgroupProblem(v2Only, { v1: ['memory'] }, allWritable) ?? '',
    /^no v1 memory hierarchy is mounted \(v2: /,
  );
  t.regex(cgroupProblem(v2Only, { freeze: 'v1' }, allWritable) ?? '', /^no v1 freezer/);
  // Controllers not delegated to us (a container given none): limits cannot be enforced.
  t.regex(cgroupProblem(v2NoControllers, { limits: ['memory'] }, allWritable) ?? '', /memory controller/);
  t.is(cgroupProblem(v2NoControllers, { v2: true, kill: true }, allWritable), undefined);
  // Before 5.14 there is no cgroup.kill; cgroup.freeze has been there since 5.2.
  t.regex(cgroupProblem(v2Old, { kill: true }, allWritable) ?? '', /no cgroup\.kill/);
  t.is(cgroupProblem(v2Old, { freeze: 'v2' }, allWritable), undefined);
  t.is(cgroupProblem(v2Elsewhere, { v2: true, limits: ['memory', 'pids'] }, allWritable), undefined);
  t.regex(cgroupProblem(v2Elsewhere, { limits: ['cpu'] }, allWritable) ?? '', /cpu controller/);
});

test('cgroupProblem on a v1-only host: limits come from v1, anything v2 is skipped with the reason', (t) => {
  t.is(cgroupProblem(v1Only, { manager: true, limits: ['cpu', 'memory', 'pids'], freeze: 'v1' }), undefined);
  t.is(cgroupProblem(v1Only, { v1: ['memory'] }), undefined);
  t.regex(cgroupProblem(v1Only, { v2: true }) ?? '', /^no cgroup2 hierarchy is mounted \(v1: /);
  t.regex(cgroupProblem(v1Only, { kill: true }) ?? '', /no cgroup\.kill/);
  t.regex(cgroupProblem(v1Only, { freeze: 'v2' }) ?? '', /no cgroup\.freeze/);
});

test('cgroupProblem on a hybrid host: v2 membership at /sys/fs/cgroup/unified, limits from v1', (t) => {
  t.is(
    cgroupProblem(hybrid, { manager: true, v2: true, v1: ['memory'], limits: ['cpu', 'memory', 'pids'] }),
    undefined,
  );
  t.is(cgroupProblem(hybrid, { kill: true, freeze: 'v2' }), undefined);
  t.is(cgroupProblem(hybrid, { freeze: 'v1' }), undefined);
});

test('cgroupProblem asks about exactly the hierarchy roots the test would write to', (t) => {
  const asked: string[] = [];
  const notMemory = (dir: string) => {
    asked.push(dir);
    return dir !== '/sys/fs/cgroup/memory';
  };
  t.is(cgroupProblem(hybrid, { v2: true }, notMemory), undefined);
  t.deepEqual(asked, ['/sys/fs/cgroup/unified']);
  t.regex(
    cgroupProblem(hybrid, { v2: true, v1: ['memory'] }, notMemory) ?? '',
    /^cannot create cgroups under \/sys\/fs\/cgroup\/memory/,
  );
  asked.length = 0;
  t.regex(cgroupProblem(hybrid, { manager: true }, notMemory) ?? '', /under \/sys\/fs\/cgroup\/memory/);
  t.deepEqual(asked, [
    '/sys/fs/cgroup/unified',
    '/sys/fs/cgroup/cpu',
    '/sys/fs/cgroup/cpuacct',
    '/sys/fs/cgroup/memory',
  ]);
  // Read-only cgroup2 (an unprivileged container): the reason names the mount point.
  t.regex(cgroupProblem(v2Only, { manager: true }, () => false) ?? '', /under \/sys\/fs\/cgroup \(not root/);
  // A missing hierarchy is reported as such, before any probe.
  asked.length = 0;
  t.regex(cgroupProblem(v2Only, { v1: ['memory'] }, notMemory) ?? '', /no v1 memory/);
  t.deepEqual(asked, []);
  t.is(cgroupProblem(undefined, {}), 'no cgroup hierarchy is mounted');
});
