import { chmodSync, existsSync, statSync } from 'node:fs';
import { mkdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { CgroupManager, detectCgroupLayout } from '../../node-runtime/cgroups/index.ts';
import {
  harness,
  isAlive,
  nextEvent,
  readLog,
  replica,
  waitFor,
  workloadDir,
} from '../helpers/engine-harness.ts';
import { minimalRoot } from '../helpers/workload-root.ts';

test('a daemonized grandchild does not survive stop: nothing of the cgroup is left alive', async (t) => {
  const h = await harness(t);
  const pidFile = path.join(await workloadDir(h.root), 'grandchild.pid');
  // The grandchild double-forks into its own session, away from the process we supervise.
  const script = `setsid sh -c 'echo $$ > ${pidFile}; exec sleep 1000' </dev/null >/dev/null 2>&1 & exec sleep 1000`;
  const spec = replica([{ command: ['sh', '-c', script] }]);
  const status = await h.rt.run(spec);
  await waitFor(
    async () => (await readFile(pidFile, 'utf8').catch(() => '')).trim() !== '',
    5000,
    'grandchild pid',
  );
  const grandchild = Number((await readFile(pidFile, 'utf8')).trim());
  const cgroup = new CgroupManager({ layout: detectCgroupLayout(), parent: h.parent }).open(spec.id);
  const members = (await cgroup?.pids()) ?? [];
  t.true(members.includes(grandchild), 'the grandchild is in the replica cgroup');
  t.true(members.includes(status.processes[0]?.pid as number));
  t.true(await isAlive(grandchild));

  await h.rt.stop(spec.id, { graceSeconds: 1 });
  for (const pid of members) t.false(await isAlive(pid), `pid ${pid} of the cgroup is dead`);
  t.is(
    new CgroupManager({ layout: detectCgroupLayout(), parent: h.parent }).open(spec.id),
    null,
    'cgroup removed',
  );
  t.false(h.rt.has(spec.id));
});

test('a process allocating past its memory limit is OOM-killed and reported OOMKilled', async (t) => {
  const { rt } = await harness(t);
  const hog = 'b=[]\nwhile True: b.append(bytearray(1 << 20))';
  const spec = replica([{ restart: 'temporary', command: ['python3', '-c', hog] }], {
    resources: { memoryBytes: 48 * 1024 * 1024 },
    isolation: { namespaces: ['pid', 'mount'] },
  });
  const exited = nextEvent<'exited'>(rt, (e) => e.type === 'exited' && e.replica === spec.id, 30_000);
  await rt.run(spec);
  const e = await exited;
  t.is(e.reason, 'OOMKilled');
  t.is(rt.status(spec.id).processes[0]?.lastExit?.reason, 'OOMKilled');
  t.true((await rt.stats(spec.id)).oomKills >= 1);
});

test('a pids limit contains a fork bomb and the runtime keeps responding', async (t) => {
  const h = await harness(t);
  // exec: the supervised process forks once, for the bomb, and needs no fork after it.
  const bomb = 'f() { f | f & }; f; exec sleep 1000';
  const spec = replica([{ restart: 'temporary', command: ['sh', '-c', bomb] }], { resources: { pids: 64 } });
  const main = (await h.rt.run(spec)).processes[0]?.pid as number;
  const cgroup = new CgroupManager({ layout: detectCgroupLayout(), parent: h.parent }).open(spec.id);
  const pidsMax = cgroup?.plan.files.pidsMax;
  if (!pidsMax) throw new Error('the replica cgroup has no pids.max');
  // pids.events counts the forks the kernel refused at the limit: the bomb has hit it.
  const refused = async () =>
    Number(/^max (\d+)$/m.exec(await readFile(path.join(path.dirname(pidsMax), 'pids.events'), 'utf8'))?.[1]);
  let most = 0;
  await waitFor(
    async () => {
      most = Math.max(most, (await h.rt.stats(spec.id)).pids);
      return (await refused()) > 0;
    },
    10_000,
    'a fork refused at the pids limit',
  );
  most = Math.max(most, (await h.rt.stats(spec.id)).pids);
  t.true(most <= 64, `${most} tasks in the cgroup at most`);
  t.true(most > 1, 'the bomb forked');
  // The supervised process outlived its bomb, and the runtime still runs other replicas.
  t.is(h.rt.status(spec.id).phase, 'Running');
  t.true(await isAlive(main), 'the supervised process is alive');
  const other = replica([{ restart: 'temporary', command: ['sh', '-c', 'echo still running replicas'] }]);
  await h.rt.run(other);
  await waitFor(
    () => ['Succeeded', 'Failed'].includes(h.rt.status(other.id).phase),
    10_000,
    'the other replica to finish',
  );
  t.is(h.rt.status(other.id).phase, 'Succeeded');
  t.is(await readLog(h, other.id, 'p0'), 'still running replicas\n');
  const members = (await cgroup?.pids()) ?? [];
  await h.rt.stop(spec.id, { graceSeconds: 0 });
  t.false(h.rt.has(spec.id));
  for (const pid of members) t.false(await isAlive(pid), `pid ${pid} of the bomb is dead`);
});

test('with a pid namespace the workload sees itself as pid 2, gets our SIGTERM, and its hostname is the replica name', async (t) => {
  const h = await harness(t);
  // The trap is set before the first line, so seeing the line means a SIGTERM now is caught.
  const script = [
    'trap \'echo "got TERM"; exit 0\' TERM',
    'echo "pid=$$ host=$(cat /proc/sys/kernel/hostname)"',
    'while :; do sleep 0.05; done',
  ].join('\n');
  const spec = replica([{ command: ['sh', '-c', script], stopSignal: 'SIGTERM' }], {
    name: 'web-0',
    isolation: { namespaces: ['pid', 'mount', 'uts', 'ipc'] },
  });
  await h.rt.run(spec);
  await waitFor(async () => (await readLog(h, spec.id, 'p0')).includes('pid='), 5000, 'first log line');
  const m = /pid=(\d+) host=(\S+)/.exec(await readLog(h, spec.id, 'p0'));
  t.true(Number(m?.[1]) <= 2, `workload pid inside the namespace is ${m?.[1]}`);
  t.is(m?.[2], 'web-0');
  // orrery-init records the workload's exit in a status file, removed with the replica.
  const statusFile = path.join(h.stateDir, 'exit', `${spec.id}.p0.status`);
  t.true(existsSync(statusFile), `${statusFile} exists while the replica runs`);
  const exited = nextEvent<'exited'>(h.rt, (e) => e.type === 'exited' && e.replica === spec.id);
  await h.rt.stop(spec.id, { graceSeconds: 5 });
  const e = await exited;
  t.false(existsSync(statusFile), 'the exit status file is removed with the replica');
  t.regex(await readLog(h, spec.id, 'p0'), /got TERM/, 'SIGTERM reached the workload through orrery-init');
  t.is(e.code, 0, 'the trap ran and the workload exited 0 (its own status, through orrery-init)');
});

test('stop signals the processes in reverse start order and kills the ones that ignore it after the grace', async (t) => {
  const h = await harness(t);
  const order = path.join(await workloadDir(h.root), 'order');
  const polite = (name: string) =>
    `trap 'echo ${name} >> ${order}; exit 0' TERM; echo armed; while :; do sleep 0.02; done`;
  const spec = replica([
    { command: ['sh', '-c', polite('first')] },
    { command: ['sh', '-c', polite('second')] },
    // Ignores SIGTERM: only the cgroup kill after the grace ends it.
    { command: ['sh', '-c', "trap '' TERM; echo armed; while :; do sleep 0.02; done"] },
  ]);
  const pids = (await h.rt.run(spec)).processes.map((p) => p.pid as number);
  // A SIGTERM before a shell has set its trap would just kill it: wait until all three have.
  await waitFor(
    async () =>
      (await Promise.all(['p0', 'p1', 'p2'].map((p) => readLog(h, spec.id, p)))).every((l) =>
        l.includes('armed'),
      ),
    5000,
    'the traps set',
  );
  await h.rt.stop(spec.id, { graceSeconds: 0.5 });
  t.deepEqual((await readFile(order, 'utf8')).trim().split('\n'), ['second', 'first']);
  for (const pid of pids) t.false(await isAlive(pid));
});

test('isolation.user drops privileges to the given uid and gid', async (t) => {
  const h = await harness(t);
  const spec = replica(
    [{ restart: 'temporary', command: ['sh', '-c', 'echo "uid=$(id -u) gid=$(id -g)"'] }],
    {
      isolation: { namespaces: ['pid', 'mount'], user: { uid: 65534, gid: 65534 } },
    },
  );
  await h.rt.run(spec);
  await waitFor(
    () => ['Succeeded', 'Failed'].includes(h.rt.status(spec.id).phase),
    5000,
    'the process to finish',
  );
  t.is(h.rt.status(spec.id).phase, 'Succeeded');
  t.regex(await readLog(h, spec.id, 'p0'), /uid=65534 gid=65534/);
});

/** The Uid: line of /proc/<pid>/status: real, effective, saved, filesystem uid as the host sees them. */
async function hostUids(pid: number): Promise<number[]> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return (/^Uid:\s+(.*)$/m.exec(status)?.[1] ?? '').split(/\s+/).map(Number);
}

test('a default replica is root in its own user namespace and an unprivileged range on the host', async (t) => {
  const h = await harness(t);
  const marker = `/etc/orrery-userns-${process.pid}`;
  t.teardown(() => rm(marker, { force: true }));
  // Without a mount namespace of its own the replica is in the host's, which its user namespace
  // does not own: mounting there must fail as well as writing a root-owned file.
  const script = [
    'echo "inside uid=$(id -u)"',
    'grep CapEff /proc/self/status',
    `touch ${marker} && echo WROTE-HOST-FILE`,
    'mount -t tmpfs none /mnt && echo MOUNTED',
    'exec sleep 1000',
  ].join('; ');
  const a = replica([{ command: ['sh', '-c', script] }], { isolation: { namespaces: [] } });
  const b = replica([{ command: ['sleep', '1000'] }], { isolation: { namespaces: ['pid', 'uts'] } });
  const pidA = (await h.rt.run(a)).processes[0]?.pid as number;
  const pidB = (await h.rt.run(b)).processes[0]?.pid as number;
  await waitFor(async () => /MOUNTED|mount:/.test(await readLog(h, a.id, 'p0')), 5000, 'the script to run');
  const log = await readLog(h, a.id, 'p0');
  t.regex(log, /inside uid=0/);
  t.notRegex(log, /WROTE-HOST-FILE|MOUNTED/);
  t.false(existsSync(marker), 'no file written in /etc');

  const [uidsA, uidsB] = [await hostUids(pidA), await hostUids(pidB)];
  const mapA = (await readFile(`/proc/${pidA}/uid_map`, 'utf8')).trim().split(/\s+/).map(Number);
  const mapB = (await readFile(`/proc/${pidB}/uid_map`, 'utf8')).trim().split(/\s+/).map(Number);
  t.deepEqual(mapA.length, 3);
  t.is(mapA[0], 0);
  t.is(mapA[2], 65536);
  t.true((mapA[1] as number) >= 65536, `host range starts at ${mapA[1]}`);
  t.deepEqual(uidsA, [mapA[1], mapA[1], mapA[1], mapA[1]], 'every host uid of the process is the range base');
  t.not(mapA[1], mapB[1], 'each replica has a range of its own');
  t.true((uidsB[0] as number) >= 65536);
  // Its capabilities are the user namespace's: it is not in ours.
  t.not(await readlink(`/proc/${pidA}/ns/user`), await readlink('/proc/self/ns/user'));
  const nnp = /^NoNewPrivs:\s+(\d)/m.exec(await readFile(`/proc/${pidA}/status`, 'utf8'))?.[1];
  t.is(nnp, '1', 'no_new_privs is set');
});

test('isolation.hostUsers runs the replica as the runtime user, without a user namespace', async (t) => {
  const h = await harness(t);
  const spec = replica([{ command: ['sleep', '1000'] }], {
    isolation: { namespaces: ['pid'], hostUsers: true },
  });
  const pid = (await h.rt.run(spec)).processes[0]?.pid as number;
  t.is(await readlink(`/proc/${pid}/ns/user`), await readlink('/proc/self/ns/user'));
  t.deepEqual(
    await hostUids(pid),
    [0, 0, 0, 0].map(() => process.getuid?.() ?? 0),
  );
  // A pid namespace comes with a mount namespace and a /proc of its own.
  t.not(await readlink(`/proc/${pid}/ns/mnt`), await readlink('/proc/self/ns/mnt'));
});

test('a fork bomb in a replica without resources is contained by the default limits, under a capped parent', async (t) => {
  const h = await harness(t, {
    defaultResources: { memoryBytes: 256 * 2 ** 20, pids: 96 },
    parentLimits: { memoryBytes: 1024 * 2 ** 20, pids: 400 },
  });
  const bomb = 'f() { f | f & }; f; exec sleep 1000';
  const spec = replica([{ restart: 'temporary', command: ['sh', '-c', bomb] }]);
  t.deepEqual(spec.resources, {}, 'the template sets no resources');
  const main = (await h.rt.run(spec)).processes[0]?.pid as number;
  const cgroup = new CgroupManager({ layout: detectCgroupLayout(), parent: h.parent }).open(spec.id);
  const files = cgroup?.plan.files;
  const pidsMax = files?.pidsMax;
  const memoryFile = files?.memoryMax ?? files?.memoryLimit;
  if (!pidsMax || !memoryFile) throw new Error('the replica cgroup has no pids or memory limit file');
  t.is((await readFile(pidsMax, 'utf8')).trim(), '96', 'the default pids limit');
  t.is((await readFile(memoryFile, 'utf8')).trim(), String(256 * 2 ** 20), 'the default memory limit');
  // The per-host parent is capped too: workloads together leave the runtime its reserve.
  const parentFile = (file: string) => path.join(path.dirname(path.dirname(file)), path.basename(file));
  t.is((await readFile(parentFile(pidsMax), 'utf8')).trim(), '400');
  t.is((await readFile(parentFile(memoryFile), 'utf8')).trim(), String(1024 * 2 ** 20));

  const refused = async () =>
    Number(/^max (\d+)$/m.exec(await readFile(path.join(path.dirname(pidsMax), 'pids.events'), 'utf8'))?.[1]);
  let most = 0;
  await waitFor(
    async () => {
      most = Math.max(most, (await h.rt.stats(spec.id)).pids);
      return (await refused()) > 0;
    },
    10_000,
    'a fork refused at the default pids limit',
  );
  most = Math.max(most, (await h.rt.stats(spec.id)).pids);
  t.true(most <= 96, `${most} tasks in the cgroup at most`);
  t.true(most > 1, 'the bomb forked');
  t.true(await isAlive(main), 'the supervised process is alive');
  // The runtime still starts and supervises other replicas meanwhile.
  const other = replica([{ restart: 'temporary', command: ['sh', '-c', 'echo still running replicas'] }]);
  await h.rt.run(other);
  await waitFor(() => h.rt.status(other.id).phase === 'Succeeded', 10_000, 'the other replica to finish');
  const members = (await cgroup?.pids()) ?? [];
  await h.rt.stop(spec.id, { graceSeconds: 0 });
  for (const pid of members) t.false(await isAlive(pid), `pid ${pid} of the bomb is dead`);
});

test("a default replica cannot see the runtime's state and log directories", async (t) => {
  const h = await harness(t);
  // The harness's root lets workloads through (workloadDir); the runtime's own dirs must not.
  await workloadDir(h.root);
  const script = [
    `ls ${h.stateDir} && echo LISTED-STATE`,
    `ls ${h.logDir} && echo LISTED-LOGS`,
    `cat ${h.stateDir}/*.json && echo READ-RECORD`,
    'echo checked',
  ].join('; ');
  // No mount namespace, so nothing is masked: the directories' modes alone keep it out.
  const spec = replica([{ restart: 'temporary', command: ['sh', '-c', script] }], {
    isolation: { namespaces: ['uts'] },
  });
  await h.rt.run(spec);
  await waitFor(async () => (await readLog(h, spec.id, 'p0')).includes('checked'), 5000, 'the script');
  const log = await readLog(h, spec.id, 'p0');
  t.notRegex(log, /LISTED-STATE|LISTED-LOGS|READ-RECORD/);
  t.regex(log, /Permission denied/);
});

test("a replica's mount namespace hides the runtime's directories under an empty tmpfs", async (t) => {
  const h = await harness(t, { maskPaths: ['/no/such/dir'] });
  await workloadDir(h.root);
  // As root of its user namespace it could list an empty directory, and finds nothing there.
  const script = `echo "state=$(ls -A ${h.stateDir} | wc -l) logs=$(ls -A ${h.logDir} | wc -l)"; grep -c " ${h.stateDir} tmpfs ro," /proc/self/mounts`;
  const spec = replica([{ restart: 'temporary', command: ['sh', '-c', script] }], {
    isolation: { namespaces: ['mount'] },
  });
  await h.rt.run(spec);
  await waitFor(() => h.rt.status(spec.id).phase === 'Succeeded', 5000, 'the script to finish');
  const lines = (await readLog(h, spec.id, 'p0')).trim().split('\n');
  t.is(lines.at(-2)?.trim(), 'state=0 logs=0', 'both directories look empty');
  t.is(lines.at(-1)?.trim(), '1', 'the state dir is a read-only tmpfs');
});

test('orrery-init starts in a replica whose host uid cannot search the package directory', async (t) => {
  // As from a checkout in a 0750 home directory: the child execs orrery-init by descriptor.
  const release = fileURLToPath(new URL('../../node-runtime/native/build/Release', import.meta.url));
  const mode = statSync(release).mode & 0o7777;
  chmodSync(release, 0o700);
  t.teardown(() => chmodSync(release, mode));
  const h = await harness(t);
  const spec = replica([{ restart: 'temporary', command: ['sh', '-c', 'echo "pid=$$"'] }], {
    isolation: { namespaces: ['pid'] },
  });
  await h.rt.run(spec);
  await waitFor(() => h.rt.status(spec.id).phase !== 'Running', 5000, 'the process to finish');
  t.is(h.rt.status(spec.id).phase, 'Succeeded', JSON.stringify(h.rt.status(spec.id).processes[0]?.lastExit));
  t.is(await readLog(h, spec.id, 'p0'), 'pid=2\n', 'under orrery-init, PID 1 of its namespace');
});

test('a replica cannot raise its own cgroup limits: the cgroup stays the runtime’s', async (t) => {
  const h = await harness(t, { defaultResources: { pids: 50 } });
  const planned = new CgroupManager({ layout: detectCgroupLayout(), parent: h.parent });
  const spec = replica([{ restart: 'temporary', command: ['sh', '-c', 'sleep 0.2; exec sleep 1000'] }], {
    isolation: { namespaces: ['pid'] },
  });
  await h.rt.run(spec);
  const pidsMax = planned.open(spec.id)?.plan.files.pidsMax;
  if (!pidsMax) throw new Error('no pids.max');
  // A replica (root of its user namespace) writing its own pids.max, and its neighbour's: refused.
  const name = 'raiser';
  const own = pidsMax.replace(spec.id, `test.${name}`);
  const script = `echo max > ${own} && echo RAISED-OWN; echo max > ${pidsMax} && echo RAISED-OTHER; echo done`;
  const writer = replica([{ restart: 'temporary', command: ['sh', '-c', script] }], {
    name,
    isolation: { namespaces: ['pid'] },
  });
  await h.rt.run(writer);
  await waitFor(async () => (await readLog(h, writer.id, 'p0')).includes('done'), 5000, 'the write attempts');
  t.true(existsSync(own), `its own pids.max is ${own}`);
  const log = await readLog(h, writer.id, 'p0');
  t.notRegex(log, /RAISED/);
  t.regex(log, /Permission denied/);
  t.is((await readFile(own, 'utf8')).trim(), '50');
  t.is((await readFile(pidsMax, 'utf8')).trim(), '50');
});

test("a workload root: the replica is pivoted into it, with a mount namespace it did not ask for; the runtime's root is gone", async (t) => {
  const base = await harness(t); // only for its directories
  const root = await minimalRoot(base.root);
  const h = await harness(t, { workloadRoot: root });
  const script = 'cat /root-marker; echo /*; test -e /etc/hostname && echo runtime-root-visible; echo pid=$$';
  // No namespaces asked for: the workload root brings a mount namespace of its own.
  const plain = replica([{ restart: 'temporary', command: ['sh', '-c', script] }], {
    isolation: { namespaces: [] },
  });
  // With a pid namespace: /proc is mounted in the new root, and orrery-init (by descriptor) runs there.
  const withPid = replica([{ restart: 'temporary', command: ['sh', '-c', script] }], {
    isolation: { namespaces: ['pid'] },
  });
  for (const spec of [plain, withPid]) {
    await h.rt.run(spec);
    await waitFor(() => h.rt.status(spec.id).phase !== 'Running', 10_000, 'the script to finish');
    t.is(
      h.rt.status(spec.id).phase,
      'Succeeded',
      JSON.stringify(h.rt.status(spec.id).processes[0]?.lastExit),
    );
  }
  const plainLog = await readLog(h, plain.id, 'p0');
  t.regex(plainLog, /^the node root\n\/dev \/lib\S* .*\/proc \/root-marker \/usr\n/);
  t.notRegex(plainLog, /runtime-root-visible/);
  t.is(await readLog(h, withPid.id, 'p0'), `the node root\n${plainLog.split('\n')[1]}\npid=2\n`);
  // A command the root does not have is not found, though the runtime's own root has it.
  const missing = replica([{ restart: 'temporary', command: ['python3', '-c', 'pass'] }]);
  const failed = await h.rt.run(missing);
  t.is(failed.phase, 'Failed');
  t.regex(failed.processes[0]?.lastExit?.message ?? '', /ENOENT python3 \(not in PATH/);
});

test("a workload root: a hostPath volume is the node's path, resolved in that root, never through a symbolic link", async (t) => {
  const base = await harness(t); // only for its directories
  const root = await minimalRoot(base.root);
  const h = await harness(t, { workloadRoot: root });
  // The same path in the runtime's own root and in the node's: only the node's may be mounted.
  const dir = `/tmp/orrery-hostpath-root-${process.pid}-${Date.now()}`;
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(dir, { recursive: true });
  await writeFile(`${dir}/f`, "the runtime's\n");
  await mkdir(path.join(root, dir), { recursive: true });
  await writeFile(path.join(root, dir, 'f'), "the node's\n");
  await symlink(dir, path.join(root, dir, 'link'));
  const spec = (volumePath: string) =>
    replica(
      [
        {
          restart: 'temporary',
          command: ['sh', '-c', 'cat /mnt/h/f; echo x 2>&1 > /mnt/h/f'],
          volumeMounts: [{ name: 'h', mountPath: '/mnt/h', readOnly: true }],
        },
      ],
      { isolation: { namespaces: [] }, volumes: [{ name: 'h', hostPath: { path: volumePath, type: '' } }] },
    );
  const ok = spec(dir);
  await h.rt.run(ok);
  await waitFor(() => h.rt.status(ok.id).phase !== 'Running', 10_000, 'the script to finish');
  t.regex(await readLog(h, ok.id, 'p0'), /^the node's\n.*Read-only file system/s);
  t.is(await readFile(path.join(root, dir, 'f'), 'utf8'), "the node's\n");
  t.true(existsSync(path.join(root, 'mnt', 'h')), 'the mount point is made in the node root');
  // A path through a symbolic link of the node's (an absolute one, which outside the root would
  // name the runtime's own directory) is refused before any spawn.
  await t.throwsAsync(h.rt.run(spec(`${dir}/link`)), {
    message: new RegExp(
      `hostPath ${dir}/link \\(under the workload root ${root}\\) goes through ${dir}/link, a symbolic link`,
    ),
  });
});
