// Volumes (SpawnRequest.binds) of a replica in a user namespace are locked: the kernel sets
// MNT_LOCK_READONLY and MNT_LOCKED on mounts only when it copies a mount namespace into a less
// privileged user namespace, so the addon attaches them before the replica's namespaces are made
// (node-runtime/native/src/clone.c, "Locked volumes"). Root of the replica's user namespace, with
// every capability there, then cannot remount a read-only volume read-write (mount(8) and
// mount_setattr(2) both get EPERM), nor unmount one, nor write to it (EROFS).
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import {
  closeFd,
  forceCloneFallback,
  mountTmpfs,
  remountReadOnly,
  SpawnError,
  type SpawnRequest,
  sendSignal,
  spawnTrace,
  unmount,
  writableClone,
} from '../../node-runtime/native/index.ts';
import { minimalRoot, ROOT_MARKER } from '../helpers/workload-root.ts';
import { runNative, tempDir } from './fixtures/native-run.ts';

const isolated = ['pid', 'mount', 'uts', 'ipc'] as const;
/** The replica's host ids: above the engine's slots (2^30..2^31), as the spawn bench's. */
const userNamespace = { hostUid: 3 * 2 ** 30 + 2 ** 20, hostGid: 3 * 2 ** 30 + 2 ** 20, size: 65536 };
const PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** mount_setattr(AT_FDCWD, path, 0, {attr_clr: MOUNT_ATTR_RDONLY}) from Python's ctypes: errno name or OK. */
const clearRdonly = (path: string) =>
  `python3 -c 'import ctypes,errno,struct,sys
libc=ctypes.CDLL(None,use_errno=True)
attr=ctypes.create_string_buffer(struct.pack("QQQQ",0,1,0,0),32)
rc=libc.syscall(442,-100,sys.argv[1].encode(),0,attr,32)
print("mount_setattr", "OK" if rc==0 else errno.errorcode[ctypes.get_errno()])' ${path}`;

/**
 * A host directory (a hostPath volume: resolved below root "/"), a tmpfs holding a file (a
 * configMap or secret volume), both read-only, and a writable directory (an emptyDir), each at a
 * mount point of its own; the directories are reachable by the replica's unprivileged host ids.
 */
function volumes(t: ExecutionContext) {
  const dir = tempDir(t, 'orrery-native-vol-');
  chmodSync(dir, 0o711);
  for (const d of ['host', 'config', 'data', 'mnt-host', 'mnt-config', 'mnt-data']) mkdirSync(join(dir, d));
  writeFileSync(join(dir, 'host', 'greeting'), 'from the host\n');
  chmodSync(join(dir, 'host', 'greeting'), 0o666); // writable by file mode: only the mount stops it
  chmodSync(join(dir, 'host'), 0o777);
  chmodSync(join(dir, 'data'), 0o777);
  mountTmpfs(join(dir, 'config'), 'size=1m,mode=0777');
  t.teardown(() => unmount(join(dir, 'config')));
  writeFileSync(join(dir, 'config', 'app.conf'), 'key=value\n');
  chmodSync(join(dir, 'config', 'app.conf'), 0o666);
  const binds: NonNullable<SpawnRequest['binds']> = [
    { source: join(dir, 'host'), target: join(dir, 'mnt-host'), readOnly: true, root: '/' },
    { source: join(dir, 'config'), target: join(dir, 'mnt-config'), readOnly: true },
    { source: join(dir, 'data'), target: join(dir, 'mnt-data'), readOnly: false },
  ];
  return { dir, binds };
}

/**
 * The runtime's files of a configMap volume as volumes/manager.ts keeps them: `dir`/files, a tmpfs
 * of 0700 owned by the replica's root (searchable by the child only once its id maps are written),
 * a directory per volume (app/app.conf), mounted read-only (the manager writes through a writable
 * clone attached nowhere).
 */
function runtimeFiles(t: ExecutionContext, dir: string): string {
  const files = join(dir, 'files');
  mkdirSync(files);
  mountTmpfs(files, `size=1m,mode=0700,uid=${userNamespace.hostUid},gid=${userNamespace.hostGid}`);
  t.teardown(() => unmount(files));
  mkdirSync(join(files, 'app'), { mode: 0o755 });
  writeFileSync(join(files, 'app', 'app.conf'), 'key=value\n');
  remountReadOnly(files);
  return files;
}

/** Per read-only mount: try to make it writable three ways, write to it, unmount it; one line each. */
function attempts(dir: string): string {
  return ['mnt-host', 'mnt-config']
    .map((m) => {
      const p = join(dir, m);
      return [
        `echo "== ${m} uid=$(id -u)"`,
        `e=$(mount -o remount,bind,rw ${p} 2>&1); echo "remount rc=$? $e" | head -1`,
        `e=$(mount -o remount,rw ${p} 2>&1); echo "remount-sb rc=$? $e" | head -1`,
        clearRdonly(p),
        `e=$( (echo changed > ${p}/$(ls ${p} | head -1)) 2>&1); echo "write rc=$? $e"`,
        `e=$(umount ${p} 2>&1); echo "umount rc=$? $e"`,
        `e=$(umount -l ${p} 2>&1); echo "umount-lazy rc=$? $e"`,
        `echo "still $(cat ${p}/* | tr -d '\\n')"`,
        `grep " ${p} " /proc/self/mountinfo | cut -d" " -f6`,
      ].join('; ');
    })
    .concat([`echo written > ${join(dir, 'mnt-data', 'out')}; echo "rw rc=$?"`])
    .join('; ');
}

/** The lines of the log after "== <mount>" up to the next "==". */
function section(log: string, mount: string): string {
  const start = log.indexOf(`== ${mount}`);
  const end = log.indexOf('==', start + 3);
  return log.slice(start, end < 0 ? undefined : end);
}

test('in a user namespace, read-only volumes are locked: no remount rw (EPERM), no unmount, no write (EROFS)', async (t) => {
  const { dir, binds } = volumes(t);
  const { exited, log } = runNative(
    t,
    {
      file: '/bin/sh',
      argv: ['sh', '-c', attempts(dir)],
      env: [PATH],
      namespaces: [...isolated],
      userNamespace,
      binds,
    },
    { exitStatusFile: true, prefix: 'orrery-native-vol-log-' },
  );
  t.deepEqual(await exited, { code: 0, signal: null });
  const out = log();
  t.log(out);
  for (const m of ['mnt-host', 'mnt-config']) {
    const s = section(out, m);
    t.regex(s, /uid=0/, `${m}: the attempts ran as root of the user namespace`);
    t.regex(s, /^remount rc=32 .*permission denied/im, `${m}: mount -o remount,bind,rw refused (EPERM)`);
    t.regex(s, /^remount-sb rc=32 .*permission denied/im, `${m}: mount -o remount,rw refused (EPERM)`);
    t.regex(s, /mount_setattr EPERM/, `${m}: mount_setattr clearing MOUNT_ATTR_RDONLY refused`);
    t.regex(s, /^write rc=[1-9] .*Read-only file system/m, `${m}: the write failed with EROFS`);
    t.regex(s, /^umount rc=[1-9]/m, `${m}: not unmounted`);
    t.regex(s, /^umount-lazy rc=[1-9]/m, `${m}: not unmounted lazily either`);
    t.regex(s, /^ro,nosuid,nodev/m, `${m}: still read-only, nosuid, nodev`);
  }
  t.regex(section(out, 'mnt-host'), /still from the host/);
  t.regex(section(out, 'mnt-config'), /still key=value/);
  t.is(readFileSync(join(dir, 'host', 'greeting'), 'utf8'), 'from the host\n');
  t.is(readFileSync(join(dir, 'config', 'app.conf'), 'utf8'), 'key=value\n');
  // The writable volume is written through, as the replica's host uid.
  t.regex(out, /rw rc=0/);
  t.is(readFileSync(join(dir, 'data', 'out'), 'utf8'), 'written\n');
});

test('without a user namespace volumes are attached by the child as before (host root could remount anyway)', async (t) => {
  const { dir, binds } = volumes(t);
  const { exited, log } = runNative(
    t,
    {
      file: '/bin/sh',
      argv: [
        'sh',
        '-c',
        `cat ${dir}/mnt-host/greeting ${dir}/mnt-config/app.conf; grep " ${dir}/mnt-" /proc/self/mountinfo | cut -d" " -f5,6`,
      ],
      env: [PATH],
      namespaces: [...isolated],
      binds,
    },
    { exitStatusFile: true, prefix: 'orrery-native-vol-log-' },
  );
  t.deepEqual(await exited, { code: 0, signal: null });
  const out = log();
  t.regex(out, /from the host\nkey=value\n/);
  t.regex(out, new RegExp(`${dir}/mnt-host ro,nosuid,nodev`));
  t.regex(out, new RegExp(`${dir}/mnt-config ro,nosuid,nodev`));
  t.regex(out, new RegExp(`${dir}/mnt-data rw,nosuid,nodev`));
});

test('a volume whose mount point is missing fails the spawn at step volume, naming the target, with or without a user namespace', (t) => {
  const { dir, binds } = volumes(t);
  const missing = [
    ...binds,
    { source: join(dir, 'data'), target: join(dir, 'no-such-dir'), readOnly: false },
  ];
  for (const withUserns of [true, false]) {
    const err = t.throws(
      () =>
        runNative(t, {
          file: '/bin/true',
          argv: ['true'],
          namespaces: [...isolated],
          ...(withUserns ? { userNamespace } : {}),
          binds: missing,
        }),
      { instanceOf: SpawnError },
    ) as SpawnError;
    t.is(err.code, 'ENOENT', `user namespace: ${withUserns}`);
    t.is(err.step, 'volume');
    t.is(err.path, join(dir, 'no-such-dir'));
  }
});

// Serial: forceCloneFallback is process-wide.
for (const fallback of ['no-into-cgroup', 'no-clone3', 'fork'] as const) {
  test.serial(`locked volumes with the clone fallback ${fallback}`, async (t) => {
    forceCloneFallback(fallback);
    t.teardown(() => forceCloneFallback('none'));
    const { dir, binds } = volumes(t);
    const p = join(dir, 'mnt-config');
    const { exited, log } = runNative(
      t,
      {
        file: '/bin/sh',
        argv: [
          'sh',
          '-c',
          `${clearRdonly(p)}; e=$(umount ${p} 2>&1); echo "umount rc=$?"; cat ${p}/app.conf`,
        ],
        env: [PATH],
        namespaces: [...isolated],
        userNamespace,
        binds,
      },
      { exitStatusFile: true, prefix: 'orrery-native-vol-log-' },
    );
    t.deepEqual(await exited, { code: 0, signal: null });
    t.regex(log(), /mount_setattr EPERM\numount rc=32\nkey=value\n/);
  });
}

test.serial(
  'a read-only volume on a read-only tmpfs is cloned by the child, locked, without the mount helper',
  async (t) => {
    const { dir, binds } = volumes(t);
    const files = runtimeFiles(t, dir);
    t.throws(() => writeFileSync(join(files, 'app', 'app.conf'), 'x'), { code: 'EROFS' });
    const p = join(dir, 'mnt-config');
    spawnTrace(true);
    t.teardown(() => spawnTrace(false));
    const { child, exited, log } = runNative(
      t,
      {
        file: '/bin/sh',
        argv: [
          'sh',
          '-c',
          [
            `e=$(mount -o remount,bind,rw ${p} 2>&1); echo "remount rc=$? $e"`,
            clearRdonly(p),
            `e=$( (echo changed > ${p}/app.conf) 2>&1); echo "write rc=$? $e"`,
            `grep " ${p} " /proc/self/mountinfo | cut -d" " -f6`,
            `cat ${p}/app.conf`,
            `echo written > ${join(dir, 'mnt-data', 'out')}; echo "rw rc=$?"`,
            'exec sleep 30',
          ].join('; '),
        ],
        env: [PATH],
        namespaces: [...isolated],
        userNamespace,
        binds: [
          { source: join(files, 'app'), target: p, readOnly: true },
          binds[2] as NonNullable<SpawnRequest['binds']>[number],
        ],
      },
      { exitStatusFile: true, prefix: 'orrery-native-vol-log-' },
    );
    const steps = spawnTrace(false).map((x) => x.step);
    t.true(steps.includes('volume-trees'), 'the child cloned the volume');
    t.false(steps.includes('helper'), 'no mount helper');
    const deadline = Date.now() + 10_000;
    while (!log().includes('rw rc=') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const out = log();
    t.log(out);
    t.regex(out, /^remount rc=32 .*permission denied/m);
    t.regex(out, /^mount_setattr EPERM$/m);
    t.regex(out, /^write rc=[1-9] .*Read-only file system/m);
    t.regex(out, /^ro,nosuid,nodev/m);
    t.regex(out, /^key=value$/m);
    t.regex(out, /^rw rc=0$/m);
    // The runtime writes through a writable clone; the replica sees it at once.
    const fd = writableClone(files);
    try {
      writeFileSync(`/proc/self/fd/${fd}/app/app.conf`, 'key=new\n');
    } finally {
      closeFd(fd);
    }
    t.is(readFileSync(`/proc/${child.pid}/root${p}/app.conf`, 'utf8'), 'key=new\n');
    t.throws(() => writeFileSync(join(files, 'app', 'app.conf'), 'x'), { code: 'EROFS' });
    sendSignal(child.pidfd, 'SIGKILL');
    t.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
  },
);

test.serial('a read-only volume from a writable source takes the mount helper, and is locked too', (t) => {
  const { binds } = volumes(t);
  spawnTrace(true);
  t.teardown(() => spawnTrace(false));
  runNative(t, {
    file: '/bin/true',
    argv: ['true'],
    namespaces: [...isolated],
    userNamespace,
    binds: [binds[1] as NonNullable<SpawnRequest['binds']>[number]],
  });
  const steps = spawnTrace(false).map((x) => x.step);
  t.true(steps.includes('helper-mounts'), `steps: ${steps.join(' ')}`);
  t.false(steps.includes('volume-trees'));
});

test("with a workload root the child still clones a read-only volume from the runtime's read-only tmpfs, before and after the pivot", async (t) => {
  const dir = tempDir(t, 'orrery-native-vol-root-');
  const root = await minimalRoot(dir);
  mkdirSync(join(root, 'config'));
  // The runtime's tmpfs lives outside the root (the runtime's own files, a container's).
  const files = runtimeFiles(t, dir);
  spawnTrace(true);
  t.teardown(() => spawnTrace(false));
  const { exited, log } = runNative(
    t,
    {
      file: '/usr/bin/sh',
      argv: [
        'sh',
        '-c',
        'cat /config/app.conf; cat /root-marker; (echo x > /config/app.conf) 2>&1; echo "rc=$?"',
      ],
      namespaces: [...isolated],
      userNamespace,
      root,
      binds: [{ source: join(files, 'app'), target: '/config', readOnly: true }],
    },
    { exitStatusFile: true, prefix: 'orrery-native-vol-log-' },
  );
  const steps = spawnTrace(false).map((x) => x.step);
  t.true(steps.includes('volume-trees'), `steps: ${steps.join(' ')}`);
  t.deepEqual(await exited, { code: 0, signal: null });
  t.regex(log(), new RegExp(`^key=value\\n${ROOT_MARKER}\\n.*Read-only file system\\nrc=[1-9]\\n$`));
});
