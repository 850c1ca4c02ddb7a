// The pure logic of issue 19's volumes: the atomic writer's layout (node-runtime/volumes/
// atomic-writer.ts, on a temp dir), the projection of ConfigMap/Secret keys into files
// (node-runtime/agent/config-volumes.ts) and the engine's checks of a spec's volumes
// (node-runtime/supervisor/spec.ts); persistent volumes' directories (node-runtime/volumes/manager.ts)
// and what a host lists of them (node-runtime/agent/persistent.ts). The kernel's part is in test/integration/config-volumes.test.ts.
import {
  chownSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { ReplicaTemplate } from '../../crds/types.ts';
import { ConfigAccessError, UnresolvedConfigError } from '../../node-runtime/agent/config-env.ts';
import { type ConfigFiles, resolveVolumeFiles } from '../../node-runtime/agent/config-volumes.ts';
import { persistentDataOf, persistentKey } from '../../node-runtime/agent/persistent.ts';
import { InvalidSpecError } from '../../node-runtime/invalid-spec.ts';
import {
  isPersistentKey,
  validateWorkloadSpec,
  type WorkloadSpec,
} from '../../node-runtime/supervisor/spec.ts';
import { planFiles, type VolumeFile, writeAtomic } from '../../node-runtime/volumes/atomic-writer.ts';
import { VolumeManager } from '../../node-runtime/volumes/manager.ts';

const file = (p: string, data = p, mode = 0o644): VolumeFile => ({ path: p, data: Buffer.from(data), mode });

test('planFiles: one symlink per top-level name, sorted, nested paths sharing theirs', (t) => {
  t.deepEqual(planFiles([file('b'), file('a/x'), file('a/y/z'), file('c.conf')]), ['a', 'b', 'c.conf']);
  t.deepEqual(planFiles([]), []);
});

test('planFiles: refuses absolute, empty, dot and dot-dot paths, naming the path', (t) => {
  for (const bad of ['', '/etc/passwd', '..data', '..x', 'a/../b', 'a//b', './a', 'a/.', 'a/']) {
    const err = t.throws(() => planFiles([file(bad)]), { instanceOf: TypeError });
    t.true(err?.message.includes(`"${bad}"`), err?.message);
  }
});

test('planFiles: refuses a path used twice, a file below a file, and modes out of 0-0777', (t) => {
  t.throws(() => planFiles([file('a'), file('a')]), { message: /"a" is used twice/ });
  t.throws(() => planFiles([file('a'), file('a/b')]), { message: /"a\/b" is below the file "a"/ });
  t.throws(() => planFiles([file('a/b'), file('a')]), { message: /"a" is used twice/ });
  t.throws(() => planFiles([file('a', 'x', 0o1000)]), { message: /mode must be 0 to 0777, got 512/ });
  t.throws(() => planFiles([file('a', 'x', -1)]), { message: /mode/ });
  t.throws(() => planFiles([file('a', 'x', 1.5)]), { message: /mode/ });
});

test('writeAtomic: ..data points at the one version left; names link through it; gone names go', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'orrery-unit-atomic-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const owner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const v1 = writeAtomic(dir, [file('app.conf', 'one', 0o600), file('sub/key', 'k')], owner);
  t.is(readlinkSync(path.join(dir, '..data')), v1);
  t.is(readlinkSync(path.join(dir, 'app.conf')), '..data/app.conf');
  t.is(readlinkSync(path.join(dir, 'sub')), '..data/sub');
  t.is(readFileSync(path.join(dir, 'app.conf'), 'utf8'), 'one');
  t.is(readFileSync(path.join(dir, 'sub', 'key'), 'utf8'), 'k');
  t.is(lstatSync(path.join(dir, v1, 'app.conf')).mode & 0o777, 0o600);

  const v2 = writeAtomic(dir, [file('app.conf', 'two'), file('new')], owner, new Date(Date.now() + 1000));
  t.not(v2, v1);
  t.is(readFileSync(path.join(dir, 'app.conf'), 'utf8'), 'two');
  t.is(lstatSync(path.join(dir, v2, 'app.conf')).mode & 0o777, 0o644);
  t.deepEqual(readdirSync(dir).sort(), ['..data', v2, 'app.conf', 'new'].sort());
});

const volumeTemplate = (volumes: unknown[]): ReplicaTemplate =>
  ({ processes: [{ name: 'main', command: ['x'] }], volumes }) as unknown as ReplicaTemplate;

function store(objects: Record<string, Record<string, string>>, forbidden: string[] = []): ConfigFiles {
  return {
    async files(kind, _ns, name) {
      if (forbidden.includes(`${kind}/${name}`)) throw new ConfigAccessError(`${name} is not readable`);
      const data = objects[`${kind}/${name}`];
      return data && Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v)]));
    },
  };
}

test('resolveVolumeFiles: every key a file (sorted, defaultMode) or only the items, at their paths and modes', async (t) => {
  const files = await resolveVolumeFiles(
    volumeTemplate([
      { name: 'all', configMap: { name: 'cm', defaultMode: 0o640 } },
      { name: 'some', secret: { secretName: 's', items: [{ key: 'pw', path: 'db/password', mode: 0o400 }] } },
      { name: 'scratch', emptyDir: {} },
    ]),
    'ns',
    store({ 'ConfigMap/cm': { b: '2', a: '1' }, 'Secret/s': { pw: 'x', other: 'y' } }),
  );
  t.deepEqual([...files.keys()], ['all', 'some']);
  t.deepEqual(
    files.get('all')?.map((f) => [f.path, f.data.toString(), f.mode]),
    [
      ['a', '1', 0o640],
      ['b', '2', 0o640],
    ],
  );
  t.deepEqual(
    files.get('some')?.map((f) => [f.path, f.mode]),
    [['db/password', 0o400]],
  );
});

test('resolveVolumeFiles: optional objects and keys leave files out; others are named, all at once', async (t) => {
  const optional = await resolveVolumeFiles(
    volumeTemplate([
      { name: 'a', configMap: { name: 'missing', optional: true } },
      { name: 'b', configMap: { name: 'cm', optional: true, items: [{ key: 'nope', path: 'n' }] } },
    ]),
    'ns',
    store({ 'ConfigMap/cm': { k: 'v' } }),
  );
  t.deepEqual(optional.get('a'), []);
  t.deepEqual(optional.get('b'), []);
  const err = await t.throwsAsync(
    resolveVolumeFiles(
      volumeTemplate([
        { name: 'a', configMap: { name: 'missing' } },
        { name: 'b', configMap: { name: 'cm', items: [{ key: 'nope', path: 'n' }] } },
        { name: 'c', secret: { secretName: 'closed' } },
      ]),
      'ns',
      store({ 'ConfigMap/cm': { k: 'v' } }, ['Secret/closed']),
    ),
    { instanceOf: UnresolvedConfigError },
  );
  t.regex(err?.message ?? '', /configmap "missing" not found/);
  t.regex(err?.message ?? '', /key "nope" not found in configmap ns\/cm/);
  t.regex(err?.message ?? '', /closed is not readable/);
});

const spec = (volumes: unknown, mounts: unknown[] = []): WorkloadSpec =>
  ({
    id: 'ns.db-0',
    name: 'db-0',
    processes: [{ name: 'main', command: ['/bin/true'], restart: 'permanent', volumeMounts: mounts }],
    supervision: {
      strategy: 'one-for-one',
      maxRestarts: 3,
      periodSeconds: 10,
      backoff: { initialSeconds: 1, maxSeconds: 60 },
    },
    terminationGracePeriodSeconds: 10,
    resources: {},
    isolation: { namespaces: ['mount'] },
    volumes,
  }) as WorkloadSpec;

test("validateWorkloadSpec: a spec's volumes and mounts are checked, naming the field", (t) => {
  const ok = [
    { name: 'cfg', files: { secret: false } },
    { name: 'tmp', emptyDir: { medium: 'memory', sizeLimitBytes: 4096 } },
  ];
  t.notThrows(() =>
    validateWorkloadSpec(
      spec(ok, [
        { name: 'cfg', mountPath: '/etc/app', readOnly: true },
        { name: 'tmp', mountPath: '/scratch', readOnly: false },
      ]),
    ),
  );
  const cases: [unknown, unknown[], RegExp][] = [
    [[{ name: 'Bad_Name', files: { secret: false } }], [], /volumes\[0\]\.name/],
    [[ok[0], ok[0]], [], /volumes\[1\]\.name/],
    [[{ name: 'x', files: { secret: true }, emptyDir: { medium: 'disk' } }], [], /volumes\[0\]/],
    [[{ name: 'x', emptyDir: { medium: 'ssd' } }], [], /volumes\[0\]\.emptyDir\.medium/],
    [[{ name: 'x', emptyDir: { medium: 'disk', sizeLimitBytes: 100 } }], [], /sizeLimitBytes/],
    [ok, [{ name: 'nope', mountPath: '/a', readOnly: true }], /volumeMounts\[0\]\.name.*cfg, tmp/],
    [ok, [{ name: 'cfg', mountPath: 'rel', readOnly: true }], /volumeMounts\[0\]\.mountPath/],
    [ok, [{ name: 'cfg', mountPath: '/a/../b', readOnly: true }], /volumeMounts\[0\]\.mountPath/],
    [ok, [{ name: 'cfg', mountPath: '/proc/x', readOnly: true }], /volumeMounts\[0\]\.mountPath/],
    [
      ok,
      [
        { name: 'cfg', mountPath: '/a', readOnly: true },
        { name: 'tmp', mountPath: '/a', readOnly: true },
      ],
      /volumeMounts\[1\]\.mountPath/,
    ],
  ];
  for (const [volumes, mounts, field] of cases) {
    const err = t.throws(() => validateWorkloadSpec(spec(volumes, mounts)), { instanceOf: InvalidSpecError });
    t.regex(err?.message ?? '', field);
  }
});

test('persistentDataOf: one entry per ordinal, its volumes listed, malformed keys ignored', (t) => {
  t.deepEqual(
    persistentDataOf(['b/db/1/data', 'a/db/10/data', 'a/db/2/data', 'a/db/2/wal', 'a/db/x/data', 'a/db/1']),
    [
      { namespace: 'a', instance: 'db', ordinal: 2, volumes: ['data', 'wal'] },
      { namespace: 'a', instance: 'db', ordinal: 10, volumes: ['data'] },
      { namespace: 'b', instance: 'db', ordinal: 1, volumes: ['data'] },
    ],
  );
  t.is(persistentKey('ns', 'db', 0, 'data'), 'ns/db/0/data');
  t.true(isPersistentKey('ns/db/0/data'));
  for (const bad of ['', '/abs', 'a/../b', 'a//b', './a', 'a/b c', 7])
    t.false(isPersistentKey(bad), String(bad));
});

test('persistent volumes: made once, kept, ids moved to the range of the next run, removed on demand', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'orrery-unit-persistent-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const first = 2 ** 30;
  const noTmpfs = { mountTmpfs: () => t.fail('no tmpfs for persistent volumes'), unmount: () => {} };
  const volumes = new VolumeManager(path.join(dir, 'volumes'), noTmpfs, path.join(dir, 'root'), {
    root: path.join(dir, 'persistent'),
    firstHostId: first,
  });
  const key = 'ns/db/0/data';
  const spec = {
    id: 'ns.db-0',
    processes: [{ name: 'main', volumeMounts: [{ name: 'data', mountPath: '/data', readOnly: false }] }],
    volumes: [{ name: 'data', persistent: { key } }],
  } as unknown as WorkloadSpec;
  const ids = (base: number) => ({ process: { uid: base, gid: base }, root: { uid: base, gid: base } });
  const source = path.join(dir, 'persistent', key);
  t.is(volumes.source(spec.id, spec.volumes?.[0] as never), source);

  const rangeA = first + 3 * 65536;
  volumes.prepare(spec, ids(rangeA), 0);
  let st = statSync(source);
  t.is(st.mode & 0o777, 0o777);
  t.is(st.uid, rangeA);
  t.is(statSync(path.join(dir, 'persistent', 'ns')).mode & 0o777, 0o700, 'parents closed');
  t.true(existsSync(path.join(dir, 'root', 'data')), 'mount point made');
  writeFileSync(path.join(source, 'f'), 'x');
  chownSync(path.join(source, 'f'), rangeA + 1000, rangeA + 1000);
  writeFileSync(path.join(source, 'foreign'), 'y');
  chownSync(path.join(source, 'foreign'), 4242, 4242);
  t.false(existsSync(path.join(dir, 'volumes', spec.id)), 'nothing per replica');

  // The next run of the ordinal under another range: its files follow it.
  const rangeB = first + 65536;
  volumes.prepare(spec, ids(rangeB), 0);
  st = statSync(source);
  t.is(st.uid, rangeB);
  t.is(statSync(path.join(source, 'f')).uid, rangeB + 1000);
  t.is(statSync(path.join(source, 'f')).gid, rangeB + 1000);
  t.is(statSync(path.join(source, 'foreign')).uid, 4242, 'ids of no replica range are left');
  t.is(readFileSync(path.join(source, 'f'), 'utf8'), 'x');

  // The replica's volumes removed (its stop): persistent data stays.
  volumes.remove(spec.id);
  t.true(existsSync(path.join(source, 'f')));
  t.deepEqual(volumes.persistentKeys(), [key]);
  volumes.removePersistent(key);
  t.false(existsSync(path.join(dir, 'persistent', 'ns')), 'empty parents go too');
  t.true(existsSync(path.join(dir, 'persistent')));
  t.deepEqual(volumes.persistentKeys(), []);
});
