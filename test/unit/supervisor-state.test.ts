import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { StateStore, type StoredReplica } from '../../node-runtime/state/store.ts';

async function store(t: import('ava').ExecutionContext): Promise<StateStore> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'orrery-state-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const s = new StateStore(dir);
  await s.init();
  return s;
}

const record = (n: number): StoredReplica<{ n: number; text?: string }> => ({
  version: 1,
  spec: { n },
  createdAt: '2026-01-01T00:00:00Z',
  ports: {},
  processes: [],
});

test('a saved replica loads back and is listed; removal deletes it', async (t) => {
  const s = await store(t);
  await s.save('ns.web-0', () => record(1));
  t.deepEqual(await s.ids(), ['ns.web-0']);
  t.deepEqual((await s.load('ns.web-0'))?.spec, { n: 1 });
  await s.remove('ns.web-0');
  t.deepEqual(await s.ids(), []);
  t.is(await s.load('ns.web-0'), undefined);
});

test('saves issued while a write is in flight coalesce into the newest record, no temp file left', async (t) => {
  const s = await store(t);
  const snapshots: number[] = [];
  let n = 0;
  const saves = Array.from({ length: 20 }, () =>
    s.save('a', () => {
      snapshots.push(++n);
      return record(n);
    }),
  );
  await Promise.all(saves);
  await s.flush();
  t.true(snapshots.length < 20, `wrote ${snapshots.length} times for 20 saves`);
  t.deepEqual((await s.load('a'))?.spec, { n });
  t.deepEqual(await readdir(s.dir), ['a.json']);
});

test('a remove racing an in-flight save wins', async (t) => {
  const s = await store(t);
  const saved = s.save('b', () => record(1));
  await s.remove('b');
  await saved;
  await s.flush();
  t.is(await s.load('b'), undefined);
});

test('a record is updated in place (same inode), a shorter one padded; a torn one reads as absent', async (t) => {
  const s = await store(t);
  const long = { ...record(1), spec: { n: 1, text: 'x'.repeat(500) } };
  await s.save('c', () => long);
  const file = s.fileOf('c');
  const inode = statSync(file).ino;
  await s.save('c', () => record(2), { durable: false });
  await s.save('c', () => record(3));
  t.is(statSync(file).ino, inode, 'no new inode: the record was overwritten in place');
  t.deepEqual(s.load('c')?.spec, { n: 3 });
  t.regex(readFileSync(file, 'utf8'), /}\n {10,}$/, 'padded with spaces to the old length');
  // Past one page it is replaced through a temp file instead (a new inode).
  await s.save('c', () => ({ ...record(4), spec: { n: 4, text: 'y'.repeat(5000) } }));
  t.not(statSync(file).ino, inode);
  t.is((s.load('c')?.spec as { n: number } | undefined)?.n, 4);
  // What a machine crash could leave of an in-place write.
  writeFileSync(file, '{"version":1,"spec":{"n"');
  t.is(s.load('c'), undefined);
});
