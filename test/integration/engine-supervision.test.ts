import { readFile } from 'node:fs/promises';
import test from 'ava';
import { harness, isAlive, nextEvent, recordEvents, replica, waitFor } from '../helpers/engine-harness.ts';

/** Field 22 of /proc/<pid>/stat: start time in clock ticks since boot; with the pid, it names one process. */
async function startTime(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] as string;
}

test('a missing binary is reported as ExecFailed ENOENT and backoff prevents a restart storm', async (t) => {
  const { rt } = await harness(t);
  const events = recordEvents(rt);
  const spec = replica([{ command: ['/no/such/bin'] }], {
    supervision: {
      strategy: 'one-for-one',
      maxRestarts: 2,
      periodSeconds: 10,
      backoff: { initialSeconds: 0.2, maxSeconds: 1 },
    },
  });
  // When each event came, by this process's clock.
  const at = new Map<object, number>();
  rt.on('event', (e) => at.set(e, performance.now()));
  await rt.run(spec);
  await waitFor(() => events.filter((e) => e.type === 'backoff').length >= 3, 10_000, 'three crash loops');
  const failures = events.filter((e) => e.type === 'exited' && e.reason === 'ExecFailed');
  t.true(failures.length >= 3, 'it was tried');
  const first = failures[0];
  t.regex(first?.type === 'exited' ? (first.message ?? '') : '', /ExecFailed: ENOENT/);
  // No storm, counted per crash loop rather than per wall-clock window: at most maxRestarts + 1
  // = 3 tries before each backoff, and each backoff is waited out before the next try.
  let tries = 0;
  let backoffAt: number | undefined;
  let backoffMs = 0;
  for (const e of events) {
    if (e.type === 'exited' && e.reason === 'ExecFailed') {
      tries++;
      if (backoffAt !== undefined) {
        const waited = (at.get(e) as number) - backoffAt;
        // Not sooner than the delay (a few ms of slack for Node's millisecond timers).
        t.true(waited >= backoffMs - 5, `a try ${waited.toFixed(0)} ms into a ${backoffMs} ms backoff`);
        backoffAt = undefined;
      }
    } else if (e.type === 'backoff') {
      t.true(tries <= 3, `${tries} tries in one crash loop`);
      tries = 0;
      backoffAt = at.get(e);
      backoffMs = e.delayMs;
    }
  }
  const delays = events.flatMap((e) => (e.type === 'backoff' ? [e.delayMs] : []));
  t.deepEqual(delays.slice(0, 3), [200, 400, 800], 'growing delays');
  const status = rt.status(spec.id);
  t.is(status.processes[0]?.lastExit?.reason, 'ExecFailed');
  t.regex(status.processes[0]?.lastExit?.message ?? '', /ENOENT/);
});

test('a permanent process killed with SIGKILL runs again with a new pid', async (t) => {
  const { rt } = await harness(t);
  const spec = replica([{ restart: 'permanent' }]);
  const first = await rt.run(spec);
  const pid = first.processes[0]?.pid as number;
  t.true(pid > 0);
  const started = nextEvent<'started'>(rt, (e) => e.type === 'started' && e.replica === spec.id);
  process.kill(pid, 'SIGKILL');
  const again = await started;
  t.not(again.pid, pid);
  const p = rt.status(spec.id).processes[0];
  t.is(p?.restarts, 1);
  t.is(p?.lastExit?.signal, 'SIGKILL');
  t.is(p?.lastExit?.reason, 'Killed');
  t.is(rt.status(spec.id).phase, 'Running');
});

test('a transient process exiting 0 is not restarted and the replica Succeeds', async (t) => {
  const { rt } = await harness(t);
  const events = recordEvents(rt);
  const spec = replica([{ restart: 'transient', command: ['sh', '-c', 'exit 0'] }]);
  await rt.run(spec);
  // Succeeded is set once the exit was handled and nothing is to start again: not restarted.
  await waitFor(() => rt.status(spec.id).phase === 'Succeeded', 5000, 'phase Succeeded');
  t.is(events.filter((e) => e.type === 'started').length, 1);
  t.is(rt.status(spec.id).processes[0]?.lastExit?.reason, 'Completed');
});

test('a transient process exiting 1 is restarted', async (t) => {
  const { rt } = await harness(t);
  const spec = replica([{ restart: 'transient', command: ['sh', '-c', 'sleep 0.1; exit 1'] }]);
  await rt.run(spec);
  await waitFor(() => (rt.status(spec.id).processes[0]?.restarts ?? 0) >= 1, 5000, 'a restart');
  t.is(rt.status(spec.id).processes[0]?.lastExit?.reason, 'Error');
});

test('a temporary process is never restarted, even after a failure', async (t) => {
  const { rt } = await harness(t);
  const events = recordEvents(rt);
  const spec = replica([{ restart: 'temporary', command: ['sh', '-c', 'exit 3'] }]);
  await rt.run(spec);
  // Failed is set once the exit was handled and nothing is to start again: not restarted.
  await waitFor(() => rt.status(spec.id).phase === 'Failed', 5000, 'phase Failed');
  t.is(events.filter((e) => e.type === 'started').length, 1);
  t.is(rt.status(spec.id).processes[0]?.lastExit?.code, 3);
  t.is(rt.status(spec.id).processes[0]?.restarts, 0);
});

test('one-for-all: killing one process restarts its siblings too', async (t) => {
  const { rt } = await harness(t);
  const spec = replica([{}, {}, {}], {
    supervision: {
      strategy: 'one-for-all',
      maxRestarts: 5,
      periodSeconds: 10,
      backoff: { initialSeconds: 1, maxSeconds: 10 },
    },
  });
  const before = (await rt.run(spec)).processes.map((p) => p.pid);
  process.kill(before[1] as number, 'SIGKILL');
  await waitFor(
    () => rt.status(spec.id).processes.every((p) => p.restarts === 1 && p.pid !== null),
    10_000,
    'all restarted',
  );
  const after = rt.status(spec.id).processes.map((p) => p.pid);
  for (let i = 0; i < 3; i++) t.not(after[i], before[i], `process ${i} has a new pid`);
  t.is(
    rt.status(spec.id).processes[0]?.lastExit?.signal,
    'SIGTERM',
    'siblings were stopped with their stop signal',
  );
});

test('one-for-one: killing one process restarts only it; its siblings keep their pids and start times', async (t) => {
  const { rt } = await harness(t);
  const events = recordEvents(rt);
  const spec = replica([{}, {}, {}], {
    supervision: {
      strategy: 'one-for-one',
      maxRestarts: 5,
      periodSeconds: 10,
      backoff: { initialSeconds: 1, maxSeconds: 10 },
    },
  });
  const before = (await rt.run(spec)).processes;
  const pids = before.map((p) => p.pid as number);
  t.true(pids.every((pid) => pid > 0));
  const starts = await Promise.all(pids.map(startTime));
  const victim = pids[1] as number;
  const restarted = nextEvent<'started'>(
    rt,
    (e) => e.type === 'started' && e.replica === spec.id && e.process === 'p1',
  );
  process.kill(victim, 'SIGKILL');
  const again = await restarted;
  t.not(again.pid, victim, 'the killed process runs again with a new pid');
  await waitFor(
    () => rt.status(spec.id).phase === 'Running' && rt.status(spec.id).processes.every((p) => p.pid !== null),
    10_000,
    'the replica Running with every process up',
  );

  const after = rt.status(spec.id).processes;
  t.is(after[1]?.pid, again.pid);
  t.is(after[1]?.restarts, 1);
  t.is(after[1]?.lastExit?.signal, 'SIGKILL');
  for (const i of [0, 2]) {
    const pid = pids[i] as number;
    t.is(after[i]?.pid, pid, `p${i} keeps its pid`);
    t.is(after[i]?.restarts, 0, `p${i} was not restarted`);
    t.is(after[i]?.startedAt, before[i]?.startedAt, `p${i} keeps its start`);
    t.true(await isAlive(pid), `p${i} (pid ${pid}) still runs`);
    // The same pid with the same kernel start time: the very same process, not a recycled pid.
    t.is(await startTime(pid), starts[i] as string, `p${i} has the start time it had`);
  }
  const touched = events.filter(
    (e) => (e.type === 'exited' || e.type === 'restarting' || e.type === 'started') && e.process !== 'p1',
  );
  t.is(touched.length, 2, 'siblings: only their first start, no exit, no restart');
  t.true(touched.every((e) => e.type === 'started'));
});

test('rest-for-one: only the processes started after the dead one are restarted', async (t) => {
  const { rt } = await harness(t);
  const spec = replica([{}, {}, {}], {
    supervision: {
      strategy: 'rest-for-one',
      maxRestarts: 5,
      periodSeconds: 10,
      backoff: { initialSeconds: 1, maxSeconds: 10 },
    },
  });
  const before = (await rt.run(spec)).processes.map((p) => p.pid);
  process.kill(before[1] as number, 'SIGKILL');
  await waitFor(
    () =>
      rt
        .status(spec.id)
        .processes.slice(1)
        .every((p) => p.restarts === 1 && p.pid !== null),
    10_000,
    'later ones restarted',
  );
  const after = rt.status(spec.id).processes;
  t.is(after[0]?.pid, before[0]);
  t.is(after[0]?.restarts, 0);
  t.not(after[1]?.pid, before[1]);
  t.not(after[2]?.pid, before[2]);
});

test('exceeding the restart intensity enters CrashLoopBackOff with growing delays', async (t) => {
  const { rt } = await harness(t);
  const events = recordEvents(rt);
  const spec = replica([{ command: ['sh', '-c', 'exit 1'] }, {}], {
    supervision: {
      strategy: 'one-for-one',
      maxRestarts: 1,
      periodSeconds: 10,
      backoff: { initialSeconds: 0.1, maxSeconds: 0.4 },
    },
  });
  await rt.run(spec);
  await waitFor(() => events.filter((e) => e.type === 'backoff').length >= 4, 10_000, 'four crash loops');
  const delays = events.flatMap((e) => (e.type === 'backoff' ? [e.delayMs] : []));
  t.deepEqual(delays.slice(0, 4), [100, 200, 400, 400]);
  // In CrashLoopBackOff everything is stopped, the healthy sibling included, and it comes back after.
  const sibling = rt.status(spec.id).processes[1];
  t.true((sibling?.restarts ?? 0) >= 3, 'the sibling was stopped and started with each loop');
});
