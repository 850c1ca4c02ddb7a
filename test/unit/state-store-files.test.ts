// The runtime's replica records are written through a temporary file made by exclusive create:
// a symlink planted at its (predictable) name is never followed, and a stale one left by a crash
// is replaced; the records' directory is 0700.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { StateStore, type StoredReplica } from '../../node-runtime/state/store.ts';

const record: StoredReplica = {
  version: 1,
  spec: { id: 'r' },
  createdAt: '2026-01-01T00:00:00Z',
  ports: {},
  processes: [],
};

function store(t: { teardown(fn: () => void): void }): { dir: string; store: StateStore } {
  const dir = mkdtempSync(join(tmpdir(), 'state-store-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, store: new StateStore(dir) };
}

test('a symlink at the temporary name is replaced, not written through', async (t) => {
  const { dir, store: s } = store(t);
  await s.init();
  t.is(statSync(join(dir, 'replicas')).mode & 0o777, 0o700);
  const target = join(dir, 'elsewhere');
  writeFileSync(target, 'precious\n');
  symlinkSync(target, `${s.fileOf('r')}.${process.pid}.tmp`);
  await s.save('r', () => record);
  t.is(readFileSync(target, 'utf8'), 'precious\n');
  t.deepEqual(s.load('r'), record);
  t.is(statSync(s.fileOf('r')).mode & 0o777, 0o600);
  t.false(existsSync(`${s.fileOf('r')}.${process.pid}.tmp`));
});

test('a temporary file left by a crash is replaced', async (t) => {
  const { store: s } = store(t);
  await s.init();
  writeFileSync(`${s.fileOf('r')}.${process.pid}.tmp`, 'half a rec');
  await s.save('r', () => record);
  t.deepEqual(s.load('r'), record);
});
