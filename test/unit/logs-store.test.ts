import { existsSync } from 'node:fs';
import {
  appendFile,
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { LogStore, type LogStoreOptions } from '../../node-runtime/logs/store.ts';

async function store(t: ExecutionContext, options: Partial<LogStoreOptions> = {}): Promise<LogStore> {
  const root = await mkdtemp(join(tmpdir(), 'orrery-logs-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return new LogStore({ root, rotateOnWrite: false, ...options });
}

/** Bytes of one numbered() line. */
const LINE = 33;
const numbered = (from: number, to: number) => {
  let text = '';
  for (let i = from; i <= to; i++) text += `line ${String(i).padStart(6, '0')} ${'x'.repeat(20)}\n`;
  return text;
};

test('pathFor names <root>/<replica>/<process>.log', async (t) => {
  const logs = await store(t);
  t.is(logs.pathFor('web-0', 'server'), join(logs.root, 'web-0', 'server.log'));
});

test('tail returns the last N lines of a file many read blocks long', async (t) => {
  const logs = await store(t);
  const file = await logs.prepareRun('web-0', 'server');
  await writeFile(file, numbered(1, 20_000)); // ~680 KB, ten 64 KiB blocks
  t.is(await logs.tail('web-0', 'server', { lines: 3 }), numbered(19_998, 20_000));
  t.is(await logs.tail('web-0', 'server', { lines: 5000 }), numbered(15_001, 20_000));
  t.is(await logs.tail('web-0', 'server', { lines: 0 }), '');
  t.is(await logs.tail('web-0', 'server'), numbered(1, 20_000), 'no count: everything');
  t.is(await logs.tail('web-0', 'server', { lines: 50_000 }), numbered(1, 20_000));
});

test('a last line without its newline counts as a line', async (t) => {
  const logs = await store(t);
  const file = await logs.prepareRun('web-0', 'server');
  await writeFile(file, 'a\nb\nc');
  t.is(await logs.tail('web-0', 'server', { lines: 2 }), 'b\nc');
  await writeFile(file, 'a\n\n\nb\n');
  t.is(await logs.tail('web-0', 'server', { lines: 2 }), '\nb\n', 'empty lines count');
});

test('tail reads across the rotated file when the live one is short', async (t) => {
  const logs = await store(t, { maxBytes: 1000 });
  const file = await logs.prepareRun('web-0', 'server');
  await writeFile(file, numbered(1, 100));
  t.true(await logs.rotateIfNeeded('web-0', 'server'));
  await appendFile(file, numbered(101, 102));
  t.is(await logs.tail('web-0', 'server', { lines: 5 }), numbered(98, 102));
});

test('prepareRun keeps the previous run, rotated files included, and starts an empty one', async (t) => {
  const logs = await store(t, { maxBytes: LINE * 10 });
  const file = await logs.prepareRun('web-0', 'server');
  t.is(await readFile(file, 'utf8'), '', 'the live file exists before the child writes');
  await writeFile(file, numbered(1, 10));
  await logs.rotateIfNeeded('web-0', 'server');
  await appendFile(file, numbered(11, 12));
  t.is(await logs.prepareRun('web-0', 'server'), file);
  t.is(await logs.tail('web-0', 'server'), '');
  t.is(await logs.tail('web-0', 'server', { previous: true }), numbered(1, 12));
  await appendFile(file, 'second run\n');
  await logs.prepareRun('web-0', 'server');
  t.is(
    await logs.tail('web-0', 'server', { previous: true }),
    'second run\n',
    'only one previous run is kept',
  );
  t.false(
    existsSync(`${join(logs.root, 'web-0', 'server.previous.log')}.1`),
    'stale rotated previous removed',
  );
});

test('rotation keeps at most maxFiles per run, newest content in .1', async (t) => {
  const logs = await store(t, { maxBytes: LINE * 10, maxFiles: 3 });
  const file = await logs.prepareRun('web-0', 'server');
  await writeFile(file, 'small\n');
  t.false(await logs.rotateIfNeeded('web-0', 'server'), 'below maxBytes nothing happens');
  for (let round = 1; round <= 5; round++) {
    await appendFile(file, numbered(round * 10, round * 10 + 9));
    t.true(await logs.rotateIfNeeded('web-0', 'server'));
  }
  t.deepEqual((await readdir(join(logs.root, 'web-0'))).sort(), [
    'server.log',
    'server.log.1',
    'server.log.2',
  ]);
  t.is(await readFile(`${file}.1`, 'utf8'), numbered(50, 59));
  t.is(await readFile(`${file}.2`, 'utf8'), numbered(40, 49));
  t.is(await readFile(file, 'utf8'), '');
});

test('removeReplica deletes every log of the replica and nothing else', async (t) => {
  const logs = await store(t);
  await logs.prepareRun('web-0', 'server');
  await logs.prepareRun('web-0', 'sidecar');
  await logs.prepareRun('web-1', 'server');
  await logs.removeReplica('web-0');
  t.deepEqual(await readdir(logs.root), ['web-1']);
  await t.notThrowsAsync(logs.removeReplica('web-0'), 'removing twice is fine');
});

test('unsafe names and bad options are refused with a TypeError naming the argument', async (t) => {
  const logs = await store(t);
  t.throws(() => logs.pathFor('../etc', 'server'), { instanceOf: TypeError, message: /^replicaId must be/ });
  t.throws(() => logs.pathFor('web-0', 'a/b'), { instanceOf: TypeError, message: /^processName must be/ });
  await t.throwsAsync(async () => logs.prepareRun('web-0', '..'), { message: /^processName/ });
  await t.throwsAsync(async () => logs.removeReplica(''), { message: /^replicaId/ });
  await t.throwsAsync(async () => logs.tail('web-0', 'server', { lines: -1 }), {
    message: /^options\.lines must be/,
  });
  t.throws(() => new LogStore({ root: '' }), { message: /^options\.root/ });
  t.throws(() => new LogStore({ root: '/tmp', maxFiles: 0 }), {
    message: /^options\.maxFiles must be an integer >= 1/,
  });
});

test('a live file past maxBytes keeps its newest maxBytes in .1, cut at a line, with a note of what was dropped', async (t) => {
  const logs = await store(t, { maxBytes: LINE * 10 + 5, maxFiles: 2 });
  const file = logs.prepareRun('web-0', 'server');
  await writeFile(file, numbered(1, 100));
  t.true(await logs.rotateIfNeeded('web-0', 'server'));
  const kept = await readFile(`${file}.1`, 'utf8');
  t.is(
    kept,
    `[orrery: ${LINE * 90} bytes of log dropped: written faster than rotated]\n${numbered(91, 100)}`,
  );
  t.is(await readFile(file, 'utf8'), '');
});

test('a line the cut falls in the middle of ends .1 with a newline: it never runs into the live file', async (t) => {
  const logs = await store(t, { maxBytes: 11 });
  const file = logs.prepareRun('web-0', 'server');
  // A writer in blocks: the cut comes after `half` of a line; the rest of it comes after.
  await writeFile(file, 'one\ntwo\nhal');
  t.true(await logs.rotateIfNeeded('web-0', 'server'));
  t.is(await readFile(`${file}.1`, 'utf8'), 'one\ntwo\nhal\n');
  await appendFile(file, 'f\nlast\n');
  t.is(await logs.tail('web-0', 'server', { lines: 1 }), 'last\n');
  t.is(await logs.tail('web-0', 'server', { lines: 3 }), 'hal\nf\nlast\n');
});

test('directories are 0700 and live files 0600, also when the root existed looser; a symlink is not followed', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'orrery-logs-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await chmod(root, 0o755);
  const logs = new LogStore({ root, rotateOnWrite: false });
  await mkdir(join(root, 'web-0'), { mode: 0o755 });
  const target = join(root, 'target');
  await writeFile(target, 'not a log\n');
  await symlink(target, join(root, 'web-0', 'server.log'));
  const file = logs.prepareRun('web-0', 'server');
  const mode = async (p: string) => (await lstat(p)).mode & 0o777;
  t.is(await mode(root), 0o700);
  t.is(await mode(join(root, 'web-0')), 0o700);
  t.is(await mode(file), 0o600);
  t.false((await lstat(file)).isSymbolicLink(), 'the symlink became .previous, a new file is live');
  t.is(await readFile(target, 'utf8'), 'not a log\n', 'the target was not written');
  await writeFile(join(root, 'web-0', 'server.previous.log.1'), 'x');
  await symlink(target, join(root, 'web-0', 'server.log.1'));
  await t.throwsAsync(logs.tail('web-0', 'server'), { code: 'ELOOP' }, 'reads refuse a symlink');
});

test('read() streams a run oldest file first, in blocks of at most 64 KiB', async (t) => {
  const logs = await store(t, { maxBytes: LINE * 5000, maxFiles: 3 });
  const file = logs.prepareRun('web-0', 'server');
  await writeFile(file, numbered(1, 5000));
  await logs.rotateIfNeeded('web-0', 'server');
  await writeFile(file, numbered(5001, 9000));
  const blocks: Buffer[] = [];
  for await (const block of logs.read('web-0', 'server')) blocks.push(block);
  t.true(blocks.every((b) => b.length <= 64 * 1024));
  t.is(Buffer.concat(blocks).toString(), numbered(1, 9000));
  const last: Buffer[] = [];
  for await (const block of logs.read('web-0', 'server', { lines: 4001 })) last.push(block);
  t.is(Buffer.concat(last).toString(), numbered(5000, 9000), 'from inside .1 on');
});
