import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { pino } from 'pino';
import { Engine } from '../../node-runtime/index.ts';
import { loadProcessApi, type ProcessApi } from '../../node-runtime/supervisor/process-api.ts';
import {
  harness,
  isAlive,
  newRuntime,
  nextEvent,
  readLog,
  recordEvents,
  removeCgroupTree,
  replica,
  runtimeDirs,
  tempRoot,
  uniqueParent,
  waitFor,
} from '../helpers/engine-harness.ts';
import { eventually } from '../helpers/wait.ts';

test('run is idempotent by id; a different spec under a running id is refused', async (t) => {
  const { rt } = await harness(t);
  const spec = replica([{}]);
  const [a, b] = await Promise.all([rt.run(spec), rt.run(structuredClone(spec))]);
  t.is(a.processes[0]?.pid, b.processes[0]?.pid);
  t.is(rt.list().length, 1);
  const changed = structuredClone(spec);
  changed.processes[0]?.command.push('extra');
  await t.throwsAsync(rt.run(changed), { message: /already running with a different spec/ });
});

test('concurrent stops share one stop; a run during a stop starts afresh after it', async (t) => {
  const { rt } = await harness(t);
  const events = recordEvents(rt);
  const spec = replica([{}]);
  const first = (await rt.run(spec)).processes[0]?.pid;
  const stop1 = rt.stop(spec.id, { graceSeconds: 1 });
  const stop2 = rt.stop(spec.id, { graceSeconds: 1 });
  const again = rt.run(spec);
  await Promise.all([stop1, stop2]);
  const status = await again;
  t.is(events.filter((e) => e.type === 'stopped').length, 1);
  t.is(status.phase, 'Running');
  t.not(status.processes[0]?.pid, first);
  t.is(status.processes[0]?.restarts, 0, 'a fresh replica, not a restart');
});

test('runtime API errors name what is wrong', async (t) => {
  const { rt } = await harness(t);
  t.throws(() => rt.status('test.nope'), { message: /no replica test\.nope/ });
  await t.throwsAsync(rt.stop('test.nope'), { message: /no replica test\.nope/ });
  await t.throwsAsync(rt.run({ ...replica([{}]), id: 'Not Valid' }), {
    instanceOf: TypeError,
    message: /spec\.id/,
  });
});

test('a restart keeps the previous run log (kubectl logs --previous) and starts a fresh one', async (t) => {
  const h = await harness(t);
  const spec = replica([{ command: ['sh', '-c', 'echo "run of $$"; exec sleep 1000'] }]);
  const first = (await h.rt.run(spec)).processes[0]?.pid as number;
  await waitFor(async () => (await readLog(h, spec.id, 'p0')).includes('run of'), 5000, 'first output');
  const restarted = nextEvent<'started'>(h.rt, (e) => e.type === 'started' && e.replica === spec.id);
  process.kill(first, 'SIGKILL');
  const second = (await restarted).pid;
  await waitFor(async () => (await readLog(h, spec.id, 'p0')).includes('run of'), 5000, 'second output');
  t.is((await h.rt.logs.tail(spec.id, 'p0', { previous: true })).trim(), `run of ${first}`);
  t.is((await h.rt.logs.tail(spec.id, 'p0')).trim(), `run of ${second}`);
});

test('live logs past the size limit are rotated by copytruncate while the process keeps writing', async (t) => {
  const root = await tempRoot(t);
  const parent = uniqueParent();
  t.teardown(() => removeCgroupTree(parent));
  const logDir = path.join(root, 'logs');
  const rt = new Engine({
    stateDir: path.join(root, 'state'),
    logDir,
    cgroupParent: parent,
    log: pino({ level: 'silent' }),
    logRotation: { maxBytes: 16 * 1024, maxFiles: 2 },
  });
  t.teardown(async () => {
    await rt.stopAll({ graceSeconds: 0 }).catch(() => {});
    await rt.close();
  });
  await rt.start();
  const spec = replica([
    {
      command: [
        'sh',
        '-c',
        'i=0; while :; do echo "$i 0123456789abcdef0123456789abcdef"; i=$((i+1)); sleep 0.001; done',
      ],
    },
  ]);
  await rt.run(spec);
  const live = path.join(logDir, spec.id, 'p0.log');
  await waitFor(
    () => (statSync(live, { throwIfNoEntry: false })?.size ?? 0) > 16 * 1024,
    10_000,
    'the log to grow',
  );
  await rt.rotateLogs();
  t.true(statSync(`${live}.1`).size >= 16 * 1024, 'the full file was copied to .1');
  const copied = readFileSync(`${live}.1`, 'utf8').trimEnd().split('\n');
  const lastCopied = Number(copied.at(-1)?.split(' ')[0]);
  // Appended to again: the live file starts with whole lines numbered after the copy's (lines
  // written between the last copy and the truncation may be lost), not at line 0 (no truncation)
  // nor with a hole of zeros (a writer without O_APPEND would go on at its old offset).
  const fresh = await eventually('a whole line in the live file after the rotation', () => {
    const text = readFileSync(live, 'utf8');
    return text.includes('\n') && text;
  });
  t.false(fresh.includes('\0'), 'no hole of zeros: the child appends at the new end');
  t.regex(fresh, /^\d+ 0123456789abcdef0123456789abcdef\n/, 'the live file starts with a whole line');
  t.true(
    Number(fresh.split(' ')[0]) > lastCopied,
    'the live file was truncated: its first line comes after the copy',
  );
});

test('a stop while a restart is being spawned waits for that spawn, and nothing is left running', async (t) => {
  const dirs = await runtimeDirs(t);
  // The real addon, with the answer of each spawn after the first held back (the process exists)
  // until the test lets it go, so the stop below lands while a spawn is in flight.
  const api = await loadProcessApi();
  let release = () => {};
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  const spawned: number[] = [];
  let answered = 0;
  const slowApi: ProcessApi = {
    ...api,
    spawnAsync: async (req) => {
      const s = await api.spawnAsync(req);
      spawned.push(s.pid);
      if (spawned.length > 1) await held;
      answered++;
      return s;
    },
  };
  const rt = newRuntime(dirs, { processApi: slowApi });
  await rt.start();
  t.teardown(() => rt.close());
  const spec = replica([{ command: ['sh', '-c', 'sleep 0.2'], restart: 'permanent' }], {
    supervision: {
      strategy: 'one-for-one',
      maxRestarts: 100,
      periodSeconds: 10,
      backoff: { initialSeconds: 1, maxSeconds: 1 },
    },
  });
  await rt.run(spec);
  // The first run exits after 0.2 s; its restart is spawned and held: stop now.
  await waitFor(() => spawned.length === 2, 5000);
  const stopped = rt.stop(spec.id, { graceSeconds: 1 });
  // The held answer is let go a while after the stop began: a stop() that did not wait for it
  // would have returned by then (and if it is slower, the test proves less, but never fails wrongly).
  setTimeout(release, 300);
  await stopped;
  t.is(answered, spawned.length, 'stop() returned only once the spawn in flight was accounted for');
  for (const pid of spawned) t.false(await isAlive(pid), `process ${pid} is gone`);
  t.false(rt.has(spec.id));
});
