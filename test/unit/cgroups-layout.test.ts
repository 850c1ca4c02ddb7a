import test from 'ava';
import { kernelAtLeast, layoutFromFacts, parseMountinfo } from '../../node-runtime/cgroups/detect.ts';
import { type LimitWrite, limitWrites, validateLimits } from '../../node-runtime/cgroups/limits.ts';
import { planReplicaCgroup } from '../../node-runtime/cgroups/paths.ts';

// mountinfo texts of the three layouts, trimmed to the lines that matter plus some noise.

/** A systemd machine booted with the unified hierarchy (Debian 11+, Fedora 31+). */
const V2_ONLY = `22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

/** A legacy host (CentOS 7 style): cpu and cpuacct co-mounted, no cgroup2. */
const V1_ONLY = `22 27 0:21 / /proc rw,relatime - proc proc rw
25 23 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
27 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
28 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
29 25 0:27 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
30 25 0:28 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,freezer
31 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuset
32 25 0:30 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,devices
`;

/** The machines Orrery is developed on: v2 at /sys/fs/cgroup/unified without controllers, v1 beside it. */
const HYBRID = `22 27 0:21 / /proc rw,relatime - proc proc rw
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

test('a unified-only machine is v2 with the controllers of the root cgroup', (t) => {
  const layout = layoutFromFacts({
    mountinfo: V2_ONLY,
    v2ControllersText: 'cpuset cpu io memory hugetlb pids rdma misc\n',
    kernelRelease: '6.1.0-18-amd64',
  });
  t.deepEqual(layout, {
    mode: 'v2',
    v2Root: '/sys/fs/cgroup',
    v2Controllers: ['cpuset', 'cpu', 'io', 'memory', 'hugetlb', 'pids', 'rdma', 'misc'],
    v1: {},
    cgroupKill: true,
    cgroupFreeze: true,
    v1Nested: [],
  });
});

test('a legacy machine is v1 and co-mounted cpu,cpuacct share one mount point', (t) => {
  const layout = layoutFromFacts({ mountinfo: V1_ONLY, kernelRelease: '3.10.0-1160.el7.x86_64' });
  t.is(layout.mode, 'v1');
  t.is(layout.v2Root, undefined);
  t.deepEqual(layout.v2Controllers, []);
  t.deepEqual(layout.v1, {
    cpu: '/sys/fs/cgroup/cpu,cpuacct',
    cpuacct: '/sys/fs/cgroup/cpu,cpuacct',
    memory: '/sys/fs/cgroup/memory',
    pids: '/sys/fs/cgroup/pids',
    freezer: '/sys/fs/cgroup/freezer',
    cpuset: '/sys/fs/cgroup/cpuset',
  });
  t.false(layout.cgroupKill, 'no v2 tree, so no cgroup.kill');
  t.false(layout.cgroupFreeze, 'nor cgroup.freeze');
});

test('v2 without controllers beside v1 controllers is hybrid', (t) => {
  const layout = layoutFromFacts({ mountinfo: HYBRID, v2ControllersText: '\n', kernelRelease: '6.18.44-fc' });
  t.is(layout.mode, 'hybrid');
  t.is(layout.v2Root, '/sys/fs/cgroup/unified');
  t.deepEqual(layout.v2Controllers, []);
  t.is(layout.v1.cpu, '/sys/fs/cgroup/cpu');
  t.is(layout.v1.cpuacct, '/sys/fs/cgroup/cpuacct');
  t.is(layout.v1.memory, '/sys/fs/cgroup/memory');
  t.true(layout.cgroupKill);
});

test('cgroup.freeze needs Linux 5.2, cgroup.kill 5.14', (t) => {
  t.false(layoutFromFacts({ mountinfo: V2_ONLY, kernelRelease: '5.1.21' }).cgroupFreeze);
  t.true(layoutFromFacts({ mountinfo: V2_ONLY, kernelRelease: '5.2.0' }).cgroupFreeze);
  t.false(layoutFromFacts({ mountinfo: V2_ONLY, kernelRelease: '5.13.19' }).cgroupKill);
  t.true(layoutFromFacts({ mountinfo: V2_ONLY, kernelRelease: '5.14.0' }).cgroupKill);
  t.true(kernelAtLeast('10.0', 5, 14));
  t.false(kernelAtLeast('garbage', 5, 14));
});

test('octal escapes in mount points are decoded', (t) => {
  const [entry] = parseMountinfo('41 31 0:38 / /mnt/my\\040cgroups rw shared:1 - cgroup2 cgroup2 rw\n');
  t.is(entry?.mountPoint, '/mnt/my cgroups');
  t.is(entry?.fsType, 'cgroup2');
});

test('a mount table without cgroups is an error that says what was expected', (t) => {
  t.throws(
    () => layoutFromFacts({ mountinfo: '22 27 0:21 / /proc rw - proc proc rw\n', kernelRelease: '6.1' }),
    {
      message: /expected a cgroup2 or cgroup v1 mount/,
    },
  );
});

const v2Layout = layoutFromFacts({
  mountinfo: V2_ONLY,
  v2ControllersText: 'cpuset cpu io memory pids',
  kernelRelease: '6.1',
});
const v1Layout = layoutFromFacts({ mountinfo: V1_ONLY, kernelRelease: '4.18' });
const hybridLayout = layoutFromFacts({ mountinfo: HYBRID, v2ControllersText: '', kernelRelease: '6.18' });

const values = (writes: LimitWrite[]) => writes.map((w) => [w.file.replace(/^.*\//, ''), w.value]);

test('v2: one directory carries membership, limits, stats, kill and events', (t) => {
  const plan = planReplicaCgroup(v2Layout, 'orrery/host-a', 'web-0');
  const dir = '/sys/fs/cgroup/orrery/host-a/web-0';
  t.is(plan.v2Dir, dir);
  t.deepEqual(plan.dirs, [dir]);
  t.deepEqual(plan.parentDirs, ['/sys/fs/cgroup/orrery/host-a']);
  t.deepEqual(plan.procsFiles, [], 'CLONE_INTO_CGROUP places the child; nothing to write');
  t.deepEqual(plan.joinFiles, []);
  t.deepEqual(plan.v2Enable, ['cpu', 'memory', 'pids']);
  t.deepEqual(plan.v2SubtreeDirs, [
    '/sys/fs/cgroup',
    '/sys/fs/cgroup/orrery',
    '/sys/fs/cgroup/orrery/host-a',
  ]);
  t.deepEqual(plan.files, {
    kill: `${dir}/cgroup.kill`,
    events: `${dir}/cgroup.events`,
    cpuMax: `${dir}/cpu.max`,
    memoryMax: `${dir}/memory.max`,
    memorySwapMax: `${dir}/memory.swap.max`,
    memoryCurrent: `${dir}/memory.current`,
    memoryPeak: `${dir}/memory.peak`,
    oomEvents: `${dir}/memory.events`,
    pidsMax: `${dir}/pids.max`,
    pidsCurrent: `${dir}/pids.current`,
    cpuUsage: { file: `${dir}/cpu.stat`, format: 'cpu.stat' },
    freeze: { file: `${dir}/cgroup.freeze`, kind: 'v2' },
  });
});

test('v1: the child joins every used controller once (co-mounted cpu,cpuacct), never cpuset', (t) => {
  const plan = planReplicaCgroup(v1Layout, 'orrery/host-a', 'web-0');
  t.is(plan.v2Dir, undefined);
  t.deepEqual(plan.procsFiles, [
    '/sys/fs/cgroup/cpu,cpuacct/orrery/host-a/web-0/cgroup.procs',
    '/sys/fs/cgroup/memory/orrery/host-a/web-0/cgroup.procs',
    '/sys/fs/cgroup/pids/orrery/host-a/web-0/cgroup.procs',
    '/sys/fs/cgroup/freezer/orrery/host-a/web-0/cgroup.procs',
  ]);
  // The child joins through `tasks` (its one thread, no threadgroup lock): same directories.
  t.deepEqual(
    plan.joinFiles,
    plan.procsFiles.map((f) => f.replace(/cgroup\.procs$/, 'tasks')),
  );
  t.is(plan.dirs.length, 4);
  t.false(plan.dirs.some((d) => d.includes('cpuset')));
  t.is(plan.files.kill, undefined, 'no cgroup.kill: kill() falls back to freeze + SIGKILL');
  t.deepEqual(plan.files.freeze, {
    file: '/sys/fs/cgroup/freezer/orrery/host-a/web-0/freezer.state',
    kind: 'v1',
  });
  t.deepEqual(plan.files.cpuUsage, {
    file: '/sys/fs/cgroup/cpu,cpuacct/orrery/host-a/web-0/cpuacct.usage',
    format: 'nanos',
  });
  t.is(plan.files.oomEvents, '/sys/fs/cgroup/memory/orrery/host-a/web-0/memory.oom_control');
  t.is(plan.files.memoryPeak, '/sys/fs/cgroup/memory/orrery/host-a/web-0/memory.max_usage_in_bytes');
});

test('hybrid: v2 for membership, kill, events and freezing; v1 for limits and stats', (t) => {
  const plan = planReplicaCgroup(hybridLayout, 'orrery/host-a', 'web-0');
  t.is(plan.v2Dir, '/sys/fs/cgroup/unified/orrery/host-a/web-0');
  t.deepEqual(plan.v2Enable, [], 'no v2 controllers: subtree_control is left alone');
  t.deepEqual(plan.v2SubtreeDirs, []);
  t.deepEqual(plan.procsFiles, [
    '/sys/fs/cgroup/cpu/orrery/host-a/web-0/cgroup.procs',
    '/sys/fs/cgroup/cpuacct/orrery/host-a/web-0/cgroup.procs',
    '/sys/fs/cgroup/memory/orrery/host-a/web-0/cgroup.procs',
    '/sys/fs/cgroup/pids/orrery/host-a/web-0/cgroup.procs',
  ]);
  t.deepEqual(
    plan.joinFiles,
    plan.procsFiles.map((f) => f.replace(/cgroup\.procs$/, 'tasks')),
  );
  t.is(plan.dirs[0], plan.v2Dir);
  t.is(plan.dirs.length, 5, 'v2 + cpu, cpuacct, memory, pids: no v1 freezer cgroup');
  t.is(plan.files.kill, '/sys/fs/cgroup/unified/orrery/host-a/web-0/cgroup.kill');
  t.is(plan.files.events, '/sys/fs/cgroup/unified/orrery/host-a/web-0/cgroup.events');
  t.is(plan.files.cpuCfsQuota, '/sys/fs/cgroup/cpu/orrery/host-a/web-0/cpu.cfs_quota_us');
  t.is(plan.files.cpuMax, undefined);
  t.is(plan.files.memoryLimit, '/sys/fs/cgroup/memory/orrery/host-a/web-0/memory.limit_in_bytes');
  t.is(plan.files.pidsMax, '/sys/fs/cgroup/pids/orrery/host-a/web-0/pids.max');
  t.is(plan.files.cpuUsage?.file, '/sys/fs/cgroup/cpuacct/orrery/host-a/web-0/cpuacct.usage');
  t.deepEqual(plan.files.freeze, {
    file: '/sys/fs/cgroup/unified/orrery/host-a/web-0/cgroup.freeze',
    kind: 'v2',
  });
});

/** /proc/self/cgroup of a runtime in a host-pid container (deploy/'s DaemonSet) on a hybrid node. */
const IN_A_CONTAINER = `11:name=systemd:/kubepods/besteffort/pod1/c1
10:pids:/kubepods/besteffort/pod1/c1
9:blkio:/kubepods/besteffort/pod1/c1
8:freezer:/kubepods/besteffort/pod1/c1
7:devices:/kubepods/besteffort/pod1/c1
6:memory:/kubepods/besteffort/pod1/c1
5:cpuset:/kubepods/besteffort/pod1/c1
4:cpuacct:/
3:cpu:/
0::/kubepods/besteffort/pod1/c1
`;

/** The hierarchies IN_A_CONTAINER is below the root of in HYBRID, cpuset aside, in mount order. */
const NESTED_IN_A_CONTAINER = [
  '/sys/fs/cgroup/memory',
  '/sys/fs/cgroup/devices',
  '/sys/fs/cgroup/freezer',
  '/sys/fs/cgroup/blkio',
  '/sys/fs/cgroup/pids',
  '/sys/fs/cgroup/systemd',
];

test('hybrid, runtime in a container: the replica leaves its cgroup in every hierarchy but cpuset', (t) => {
  const layout = layoutFromFacts({
    mountinfo: HYBRID,
    v2ControllersText: '',
    kernelRelease: '6.18',
    ownCgroups: IN_A_CONTAINER,
  });
  // Those whose controller Orrery does not use too: runc kills a host-pid container's `devices`
  // cgroup when it ends, systemd a unit's `name=systemd` cgroup.
  t.deepEqual(layout.v1Nested, NESTED_IN_A_CONTAINER);
  const plan = planReplicaCgroup(layout, 'orrery/host-a', 'web-0');
  t.deepEqual(plan.joinFiles, [
    '/sys/fs/cgroup/cpu/orrery/host-a/web-0/tasks',
    '/sys/fs/cgroup/cpuacct/orrery/host-a/web-0/tasks',
    '/sys/fs/cgroup/memory/orrery/host-a/web-0/tasks',
    '/sys/fs/cgroup/pids/orrery/host-a/web-0/tasks',
    '/sys/fs/cgroup/devices/orrery/host-a/web-0/tasks',
    '/sys/fs/cgroup/freezer/orrery/host-a/web-0/tasks',
    '/sys/fs/cgroup/blkio/orrery/host-a/web-0/tasks',
    '/sys/fs/cgroup/systemd/orrery/host-a/web-0/tasks',
  ]);
  t.is(plan.dirs.length, 9, 'v2 + 8 v1 hierarchies, each once');
  t.false(plan.dirs.some((d) => d.includes('cpuset')));
  // Freezing stays with v2: the v1 freezer directory is for membership only.
  t.is(plan.files.freeze?.kind, 'v2');
  // A runtime at the root of every hierarchy (orrery up on a host) joins only what it uses.
  const atRoot = layoutFromFacts({
    mountinfo: HYBRID,
    v2ControllersText: '',
    kernelRelease: '6.18',
    ownCgroups: '0::/\n3:cpu:/\n',
  });
  t.deepEqual(atRoot.v1Nested, []);
  t.is(planReplicaCgroup(atRoot, 'orrery/host-a', 'web-0').dirs.length, 5);
});

test("a hierarchy mounted twice (the node's / at /host in deploy/'s runtime) is one hierarchy", (t) => {
  // The node's root, bind-mounted recursively at /host, brings its cgroup mounts along; the
  // container's own /sys/fs/cgroup (a hostPath of the same hierarchies) comes later.
  const doubled = `${HYBRID.split('\n')
    .filter((l) => l.includes(' - cgroup'))
    .map((l) =>
      l
        .replace(/^(\d+) (\d+)/, (_, id: string) => `${Number(id) + 100} 131`)
        .replace(' /sys/fs/cgroup', ' /host/sys/fs/cgroup'),
    )
    .join('\n')}\n${HYBRID}`;
  const layout = layoutFromFacts({
    mountinfo: doubled,
    v2ControllersText: '',
    kernelRelease: '6.18',
    ownCgroups: IN_A_CONTAINER,
  });
  t.is(layout.v2Root, '/sys/fs/cgroup/unified');
  t.is(layout.v1.memory, '/sys/fs/cgroup/memory');
  t.deepEqual(layout.v1Nested, NESTED_IN_A_CONTAINER);
  // A bind of a sub-directory of a hierarchy is not the hierarchy: the whole one wins.
  const sub = '90 31 0:32 /kubepods /a rw - cgroup cgroup rw,memory\n';
  t.is(
    layoutFromFacts({ mountinfo: sub + HYBRID, kernelRelease: '6.18' }).v1.memory,
    '/sys/fs/cgroup/memory',
  );
});

test('hybrid on a kernel whose v2 cannot freeze (before 5.2): the v1 freezer is joined', (t) => {
  const plan = planReplicaCgroup({ ...hybridLayout, cgroupFreeze: false }, 'orrery/host-a', 'web-0');
  t.deepEqual(plan.files.freeze, {
    file: '/sys/fs/cgroup/freezer/orrery/host-a/web-0/freezer.state',
    kind: 'v1',
  });
  t.true(plan.joinFiles.includes('/sys/fs/cgroup/freezer/orrery/host-a/web-0/tasks'));
});

test('v2 limits: cpu.max quota over a 100 ms period, memory.max with swap off, pids.max', (t) => {
  const plan = planReplicaCgroup(v2Layout, 'p', 'r');
  t.deepEqual(values(limitWrites(plan, { cpuMillis: 500, memoryBytes: 64 << 20, pids: 20 })), [
    ['cpu.max', '50000 100000'],
    ['memory.max', '67108864'],
    ['memory.swap.max', '0'],
    ['pids.max', '20'],
  ]);
  t.deepEqual(values(limitWrites(plan, {})), [
    ['cpu.max', 'max 100000'],
    ['memory.max', 'max'],
    ['memory.swap.max', '0'],
    ['pids.max', 'max'],
  ]);
  // A new cgroup starts unlimited: only the no-swap policy is left to write.
  t.deepEqual(values(limitWrites(plan, {}, { fresh: true })), [['memory.swap.max', '0']]);
  t.deepEqual(values(limitWrites(plan, { pids: 5 }, { fresh: true })), [
    ['memory.swap.max', '0'],
    ['pids.max', '5'],
  ]);
  t.deepEqual(
    values(limitWrites(plan, { cpuMillis: 1 })).slice(0, 1),
    [['cpu.max', '1000 100000']],
    '1 ms minimum quota',
  );
});

test('v1 limits: CFS quota/period, memory then memsw then memory again, -1 for unlimited', (t) => {
  const plan = planReplicaCgroup(hybridLayout, 'p', 'r');
  const writes = limitWrites(plan, { cpuMillis: 1500, memoryBytes: 1 << 20, pids: 7 });
  t.deepEqual(values(writes), [
    ['cpu.cfs_period_us', '100000'],
    ['cpu.cfs_quota_us', '150000'],
    ['memory.limit_in_bytes', '1048576'],
    ['memory.memsw.limit_in_bytes', '1048576'],
    ['memory.limit_in_bytes', '1048576'],
    ['memory.swappiness', '0'],
    ['pids.max', '7'],
  ]);
  t.true(writes[2]?.tolerateEinval, 'the first limit write may fail when growing past memsw');
  t.true(writes[3]?.optional, 'memsw is absent without swap accounting');
  t.deepEqual(values(limitWrites(plan, {})).slice(0, 5), [
    ['cpu.cfs_period_us', '100000'],
    ['cpu.cfs_quota_us', '-1'],
    ['memory.limit_in_bytes', '-1'],
    ['memory.memsw.limit_in_bytes', '-1'],
    ['memory.limit_in_bytes', '-1'],
  ]);
  // Fresh: no CFS write at all (each walks every task group), no memory default either.
  t.deepEqual(values(limitWrites(plan, {}, { fresh: true })), [['memory.swappiness', '0']]);
  t.deepEqual(
    values(limitWrites(plan, { cpuMillis: 1500 }, { fresh: true })).slice(0, 2),
    [
      ['cpu.cfs_period_us', '100000'],
      ['cpu.cfs_quota_us', '150000'],
    ],
    'a real limit is still written whole',
  );
});

test('a limit no hierarchy can enforce is refused, naming the limit', (t) => {
  const bare = layoutFromFacts({ mountinfo: V2_ONLY, v2ControllersText: '', kernelRelease: '6.1' });
  const plan = planReplicaCgroup(bare, 'p', 'r');
  t.deepEqual(limitWrites(plan, {}), []);
  t.throws(() => limitWrites(plan, { memoryBytes: 1 }), {
    message: /limits\.memoryBytes .* memory controller/,
  });
  t.throws(() => limitWrites(plan, { cpuMillis: 1 }), { message: /limits\.cpuMillis/ });
  t.throws(() => limitWrites(plan, { pids: 1 }), { message: /limits\.pids/ });
});

test('limits are validated at the edge with the field, the value and its type', (t) => {
  t.throws(() => validateLimits({ memoryBytes: -5 }), {
    instanceOf: TypeError,
    message: 'limits.memoryBytes must be a positive integer, got number -5',
  });
  t.throws(() => validateLimits({ cpuMillis: '500m' }), { message: /limits\.cpuMillis .* got string 500m/ });
  t.throws(() => validateLimits({ memory: 5 }), { message: /limits\.memory is not a known limit/ });
  t.throws(() => validateLimits(null), { instanceOf: TypeError });
  t.deepEqual(validateLimits({ pids: 3 }), { pids: 3 });
});
