import test from 'ava';
import {
  afterBackoff,
  backoffDelayMs,
  decideOnExit,
  exitReason,
  finishedPhase,
  initialIntensity,
  isAbnormalExit,
  type ProcessView,
} from '../../node-runtime/supervisor/policy.ts';
import type { ExitFacts, SupervisionSpec } from '../../node-runtime/supervisor/types.ts';

const spec = (over: Partial<SupervisionSpec> = {}): SupervisionSpec => ({
  strategy: 'one-for-one',
  maxRestarts: 3,
  periodSeconds: 10,
  backoff: { initialSeconds: 1, maxSeconds: 60 },
  ...over,
});
const killed: ExitFacts = { code: null, signal: 'SIGKILL', stopRequested: false };
const clean: ExitFacts = { code: 0, signal: null, stopRequested: false };
const failed: ExitFacts = { code: 1, signal: null, stopRequested: false };
const group = (...types: ProcessView['restart'][]): ProcessView[] =>
  types.map((restart) => ({ restart, alive: true }));

test('a permanent process killed with SIGKILL is restarted at once, alone, under one-for-one', (t) => {
  const { decision } = decideOnExit(
    spec(),
    group('permanent', 'permanent'),
    initialIntensity(0),
    0,
    killed,
    5,
  );
  t.deepEqual(decision, { action: 'restart', stop: [], start: [0] });
});

test('a permanent process is restarted even after a clean exit', (t) => {
  const { decision } = decideOnExit(spec(), group('permanent'), initialIntensity(0), 0, clean, 5);
  t.is(decision.action, 'restart');
});

test('a transient process exiting 0 is not restarted; exiting 1, by a foreign signal, OOM or exec failure is', (t) => {
  const procs = group('transient');
  const s = initialIntensity(0);
  t.deepEqual(decideOnExit(spec(), procs, s, 0, clean, 1).decision, { action: 'none', why: 'normal-exit' });
  t.is(decideOnExit(spec(), procs, s, 0, failed, 1).decision.action, 'restart');
  t.is(decideOnExit(spec(), procs, s, 0, killed, 1).decision.action, 'restart');
  t.is(decideOnExit(spec(), procs, s, 0, { ...clean, oomKilled: true }, 1).decision.action, 'restart');
  t.is(decideOnExit(spec(), procs, s, 0, { ...failed, execFailed: true }, 1).decision.action, 'restart');
});

test('a transient process killed by the stop signal we sent is a normal exit, unless liveness made us send it', (t) => {
  const ours: ExitFacts = { code: null, signal: 'SIGTERM', stopRequested: true };
  t.false(isAbnormalExit(ours));
  t.true(isAbnormalExit({ ...ours, livenessFailed: true }));
  t.is(decideOnExit(spec(), group('transient'), initialIntensity(0), 0, ours, 1).decision.action, 'none');
});

test('a temporary process is never restarted, whatever its exit', (t) => {
  for (const exit of [clean, failed, killed]) {
    t.deepEqual(decideOnExit(spec(), group('temporary'), initialIntensity(0), 0, exit, 1).decision, {
      action: 'none',
      why: 'temporary',
    });
  }
});

test('one-for-all stops the live siblings in reverse order and restarts all in order', (t) => {
  const procs = group('permanent', 'permanent', 'permanent', 'permanent');
  const { decision } = decideOnExit(
    spec({ strategy: 'one-for-all' }),
    procs,
    initialIntensity(0),
    1,
    killed,
    1,
  );
  t.deepEqual(decision, { action: 'restart', stop: [3, 2, 0], start: [0, 1, 2, 3] });
});

test('one-for-all stops but does not restart a temporary sibling (OTP)', (t) => {
  const procs = group('permanent', 'temporary', 'transient');
  const { decision } = decideOnExit(
    spec({ strategy: 'one-for-all' }),
    procs,
    initialIntensity(0),
    0,
    killed,
    1,
  );
  t.deepEqual(decision, { action: 'restart', stop: [2, 1], start: [0, 2] });
});

test('rest-for-one restarts only the processes started after the one that died', (t) => {
  const procs = group('permanent', 'permanent', 'permanent', 'permanent');
  const { decision } = decideOnExit(
    spec({ strategy: 'rest-for-one' }),
    procs,
    initialIntensity(0),
    2,
    killed,
    1,
  );
  t.deepEqual(decision, { action: 'restart', stop: [3], start: [2, 3] });
});

test('siblings already down are not stopped again but are started with the group', (t) => {
  const procs: ProcessView[] = [
    { restart: 'permanent', alive: true },
    { restart: 'transient', alive: false },
    { restart: 'permanent', alive: true },
  ];
  const { decision } = decideOnExit(
    spec({ strategy: 'one-for-all' }),
    procs,
    initialIntensity(0),
    2,
    failed,
    1,
  );
  t.deepEqual(decision, { action: 'restart', stop: [0], start: [0, 1, 2] });
});

test('more than maxRestarts restarts within the period enter CrashLoopBackOff, stopping everything', (t) => {
  const procs = group('permanent', 'permanent');
  let state = initialIntensity(0);
  for (let i = 1; i <= 3; i++) {
    const r = decideOnExit(spec(), procs, state, 0, killed, i * 100);
    t.is(r.decision.action, 'restart', `restart ${i} is within the intensity`);
    state = r.state;
  }
  const r = decideOnExit(spec(), procs, state, 0, killed, 400);
  t.deepEqual(r.decision, { action: 'backoff', stop: [1], delayMs: 1000 });
  t.is(r.state.crashLoops, 1);
});

test('restarts older than the period leave the intensity window', (t) => {
  const procs = group('permanent');
  let state = initialIntensity(0);
  for (const now of [0, 4000, 8000, 12_000, 16_000, 20_000]) {
    const r = decideOnExit(spec(), procs, state, 0, killed, now);
    t.is(r.decision.action, 'restart', `restart at ${now} ms`);
    state = r.state;
  }
});

test('maxRestarts 0 sends the first crash straight to backoff', (t) => {
  const r = decideOnExit(spec({ maxRestarts: 0 }), group('permanent'), initialIntensity(0), 0, killed, 1);
  t.is(r.decision.action, 'backoff');
});

test('backoff delays double per crash loop up to maxSeconds, and reset after a stable run', (t) => {
  const s = spec({ maxRestarts: 0, backoff: { initialSeconds: 1, maxSeconds: 5 } });
  const procs = group('permanent');
  let state = initialIntensity(0);
  let now = 0;
  const delays: number[] = [];
  for (let i = 0; i < 5; i++) {
    now += 10;
    const r = decideOnExit(s, procs, state, 0, killed, now);
    if (r.decision.action !== 'backoff') return t.fail('expected backoff');
    delays.push(r.decision.delayMs);
    now += r.decision.delayMs;
    state = afterBackoff(r.state, now);
  }
  t.deepEqual(delays, [1000, 2000, 4000, 5000, 5000]);

  now += 10_001; // ran longer than one period since the last start: stable
  const r = decideOnExit(s, procs, state, 0, killed, now);
  t.deepEqual(r.decision, { action: 'backoff', stop: [], delayMs: 1000 });
});

test('backoffDelayMs honours fractional seconds', (t) => {
  t.is(backoffDelayMs(spec({ backoff: { initialSeconds: 0.25, maxSeconds: 1 } }), 1), 500);
});

test('exit reasons: Completed, Error, Killed, OOMKilled, ExecFailed', (t) => {
  t.is(exitReason(clean), 'Completed');
  t.is(exitReason(failed), 'Error');
  t.is(exitReason(killed), 'Killed');
  t.is(exitReason({ ...killed, oomKilled: true }), 'OOMKilled');
  t.is(exitReason({ code: null, signal: null, stopRequested: false, execFailed: true }), 'ExecFailed');
});

test('a finished group succeeded only if every last exit completed', (t) => {
  t.is(finishedPhase(['Completed', 'Completed']), 'Succeeded');
  t.is(finishedPhase(['Completed', 'Error']), 'Failed');
  t.is(finishedPhase(['Completed', null]), 'Failed');
});

test('an index outside the group is a RangeError naming the index', (t) => {
  t.throws(() => decideOnExit(spec(), group('permanent'), initialIntensity(0), 3, killed, 1), {
    instanceOf: RangeError,
    message: /index 3/,
  });
});
