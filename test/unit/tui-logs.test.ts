// The TUI's logs and sparklines as pure parts: the bounded line ring, the window a log pane shows
// (following, paused, wrapped), the log keys of the reducer, the stream's coalesced
// notifications, sparklines with gaps, and the usage series a failed read leaves a gap in.
import test from 'ava';
import type { HostSample, LogQuery } from '../../platform/runtime-api.ts';
import { LogsModel, logWindow, type RuntimeAccess, resumeAt } from '../../tui/model/logs.ts';
import { LineRing, MAX_LINE_CHARS } from '../../tui/model/ring.ts';
import { usageCells } from '../../tui/model/rows.ts';
import { appendSample, SERIES_LENGTH, sparkline } from '../../tui/model/sparkline.ts';
import { type Effect, initialState, type KeyContext, reduce, type UiState } from '../../tui/model/state.ts';
import { UsageModel } from '../../tui/model/usage.ts';
import { VIEWS } from '../../tui/model/views.ts';

test('the ring keeps the last lines, numbered from the first ever, and joins lines split across writes', (t) => {
  const ring = new LineRing(3);
  ring.write('a\nb');
  t.deepEqual(ring.slice(0, 10), ['a']);
  ring.write('c\nd\ne\n');
  t.is(ring.end, 4);
  t.is(ring.first, 1);
  t.is(ring.dropped, 1);
  t.deepEqual(ring.slice(0, 10), ['bc', 'd', 'e']);
  t.is(ring.at(0), undefined, 'overwritten');
  t.is(ring.at(1), 'bc');
  ring.write('tail without newline');
  t.is(ring.length, 3);
  ring.flush();
  t.deepEqual(ring.slice(ring.first, ring.end), ['d', 'e', 'tail without newline']);
});

test('the ring stays bounded: 100,000 lines in a ring of 5,000, a runaway line cut', (t) => {
  const ring = new LineRing(5_000);
  for (let i = 0; i < 100; i++) {
    ring.write(Array.from({ length: 1_000 }, (_, k) => `line ${i * 1_000 + k}\n`).join(''));
  }
  t.is(ring.length, 5_000);
  t.is(ring.at(ring.end - 1), 'line 99999');
  t.is(ring.at(ring.first), 'line 95000');
  ring.write('x'.repeat(MAX_LINE_CHARS * 3));
  t.is(ring.length, 5_000);
  t.true((ring.at(ring.end - 1) ?? '').length <= MAX_LINE_CHARS + 1, 'cut, not held whole');
});

test('the log window: the newest lines when following, from `top` when paused, wrapped or cut', (t) => {
  const ring = new LineRing(100);
  for (let i = 0; i < 10; i++) ring.push(`l${i}`);
  t.deepEqual(logWindow(ring, { follow: true, top: 0, wrap: false }, 3, 80), ['l7', 'l8', 'l9']);
  t.deepEqual(logWindow(ring, { follow: false, top: 2, wrap: false }, 3, 80), ['l2', 'l3', 'l4']);
  ring.push('abcdefgh');
  t.deepEqual(logWindow(ring, { follow: true, top: 0, wrap: true }, 3, 3), ['abc', 'def', 'gh']);
  t.deepEqual(logWindow(ring, { follow: true, top: 0, wrap: true }, 4, 3), ['l9', 'abc', 'def', 'gh']);
  t.deepEqual(logWindow(ring, { follow: false, top: 9, wrap: true }, 2, 3), ['l9', 'abc']);
  const small = new LineRing(2);
  for (let i = 0; i < 5; i++) small.push(`s${i}`);
  t.deepEqual(
    logWindow(small, { follow: false, top: 0, wrap: false }, 5, 80),
    ['s3', 's4'],
    'a paused top that was overwritten: the oldest kept',
  );
});

function logCtx(first: number, end: number): KeyContext {
  return {
    rows: [{ key: 'web/api-0', cells: ['api-0'], sortValues: ['api-0'] }],
    columns: VIEWS.rep.columns(false),
    pageSize: 10,
    paneLines: 0,
    drill: () => undefined,
    log: { first, end },
  };
}

function press(state: UiState, keys: string[], c: KeyContext): { state: UiState; effects: Effect[] } {
  const effects: Effect[] = [];
  for (const key of keys) {
    const r = reduce(state, key, c);
    state = r.state;
    effects.push(...r.effects);
  }
  return { state, effects };
}

test('l opens the log of the Replica selected; f pauses and follows, scrolling pauses, G follows, w wraps, p the previous run, esc closes', (t) => {
  const rep = { ...initialState({ view: 'rep', namespace: 'web' }) };
  const c = logCtx(100, 200);
  let { state, effects } = press(rep, ['l'], c);
  t.deepEqual(effects, [{ kind: 'logs', target: { namespace: 'web', replica: 'api-0' }, previous: false }]);
  t.like(state.mode, { name: 'logs', follow: true, wrap: false, previous: false });
  ({ state } = press(state, ['f'], c));
  t.like(state.mode, { follow: false, top: 190 }, 'paused on the last page');
  ({ state } = press(state, ['f'], c));
  t.like(state.mode, { follow: true });
  ({ state } = press(state, ['k', 'k'], c));
  t.like(state.mode, { follow: false, top: 188 }, 'scrolling up pauses');
  ({ state } = press(state, ['g'], c));
  t.like(state.mode, { top: 100 }, 'the oldest line kept');
  ({ state } = press(state, ['G', 'w'], c));
  t.like(state.mode, { follow: true, wrap: true });
  ({ state, effects } = press(state, ['p'], c));
  t.like(state.mode, { previous: true });
  t.deepEqual(effects, [{ kind: 'logs', target: { namespace: 'web', replica: 'api-0' }, previous: true }]);
  ({ state, effects } = press(state, ['esc'], c));
  t.is(state.mode.name, 'table');
  t.deepEqual(effects, [{ kind: 'logs-close' }]);
});

test('l on a process opens that process’s log; in views without logs it does nothing', (t) => {
  const proc = {
    ...initialState({ namespace: 'web' }),
    stack: [
      {
        view: 'proc' as const,
        scope: { by: 'replica' as const, namespace: 'web', name: 'api-0' },
        filter: '',
        sort: { column: '', descending: false },
        selectedIndex: 0,
        offset: 0,
      },
    ],
  };
  const c = { ...logCtx(0, 0), rows: [{ key: 'sidecar', cells: ['sidecar'], sortValues: ['sidecar'] }] };
  t.deepEqual(press(proc, ['l'], c).effects, [
    { kind: 'logs', target: { namespace: 'web', replica: 'api-0', process: 'sidecar' }, previous: false },
  ]);
  t.deepEqual(press(initialState({ namespace: 'web' }), ['l'], c).effects, []);
});

test('a stream of 200,000 lines: the ring keeps 5,000, listeners hear of it once per period, not per chunk', async (t) => {
  const chunks = 2_000;
  const access: RuntimeAccess = {
    locate: async () => ({ target: { name: 'a', endpoint: 'http://127.0.0.1:1' }, token: 't' }),
    readLogs: async () =>
      (async function* () {
        for (let c = 0; c < chunks; c++) {
          yield new TextEncoder().encode(
            Array.from({ length: 100 }, (_, k) => `line ${c * 100 + k}\n`).join(''),
          );
          if (c % 100 === 0) await new Promise((r) => setTimeout(r, 5));
        }
      })(),
  };
  // Not reopened during the test: the stream's end is where the count stops.
  const logs = new LogsModel({ access, notifyMs: 50, reopenMs: { initial: 60_000, max: 60_000 } });
  let notified = 0;
  logs.subscribe(() => notified++);
  const t0 = performance.now();
  logs.open({ namespace: 'web', replica: 'api-0' }, false);
  while (logs.status().phase !== 'reconnecting') await new Promise((r) => setTimeout(r, 5));
  const ms = performance.now() - t0;
  t.is(logs.ring.length, 5_000);
  t.is(logs.ring.at(logs.ring.end - 1), 'line 199999');
  t.true(notified <= Math.ceil(ms / 50) + 4, `${notified} notifications in ${ms.toFixed(0)} ms`);
  logs.close();
});

test('paused, a log holds what it reads: the ring stays, and gets it all on release, or says how much was let go', async (t) => {
  let push: ((text: string) => void) | undefined;
  let end: (() => void) | undefined;
  const access: RuntimeAccess = {
    locate: async () => ({ target: { name: 'a', endpoint: 'http://127.0.0.1:1' }, token: 't' }),
    readLogs: async () =>
      (async function* () {
        const queue: string[] = [];
        let done = false;
        let wake: (() => void) | undefined;
        push = (text) => {
          queue.push(text);
          wake?.();
        };
        end = () => {
          done = true;
          wake?.();
        };
        for (;;) {
          const text = queue.shift();
          if (text !== undefined) yield new TextEncoder().encode(text);
          else if (done) return;
          else await new Promise<void>((r) => (wake = r));
        }
      })(),
  };
  const logs = new LogsModel({ access, capacity: 10, holdChars: 20, notifyMs: 1 });
  logs.open({ namespace: 'web', replica: 'api-0' }, false);
  while (!push) await new Promise((r) => setTimeout(r, 1));
  const settle = () => new Promise((r) => setTimeout(r, 5));
  push('a\nb\n');
  await settle();
  logs.hold(true);
  push('c\nd\n');
  await settle();
  t.deepEqual(logs.ring.slice(0, 100), ['a', 'b'], 'the ring stays while paused');
  t.is(logs.heldLines(), 2);
  logs.hold(false);
  t.deepEqual(logs.ring.slice(0, 100), ['a', 'b', 'c', 'd']);
  logs.hold(true);
  for (const text of ['e1234567\n', 'f1234567\n', 'g1234567\n']) push(text);
  await settle();
  t.is(logs.heldLines(), 2, 'bounded: the oldest held text goes');
  logs.hold(false);
  t.deepEqual(logs.ring.slice(0, 100), [
    'a',
    'b',
    'c',
    'd',
    '… 1 lines not kept while paused',
    'f1234567',
    'g1234567',
  ]);
  end?.();
  logs.close();
});

test('a log that cannot be read says why, and is tried again with back-off', async (t) => {
  let tries = 0;
  const logs = new LogsModel({
    reopenMs: { initial: 20, max: 40 },
    access: {
      locate: async () => {
        tries++;
        throw new Error('replica web/api-0 is not bound to a host yet (Pending)');
      },
      readLogs: async () => (async function* () {})(),
    },
  });
  t.teardown(() => logs.close());
  logs.open({ namespace: 'web', replica: 'api-0' }, false);
  while (logs.status().phase === 'connecting') await new Promise((r) => setTimeout(r, 1));
  t.deepEqual(logs.status(), {
    phase: 'reconnecting',
    host: undefined,
    error: 'replica web/api-0 is not bound to a host yet (Pending)',
    attempts: 1,
  });
  while (tries < 4) await new Promise((r) => setTimeout(r, 5));
  t.true((logs.status().attempts ?? 0) >= 3);
  logs.close();
  const after = tries;
  await new Promise((r) => setTimeout(r, 100));
  t.is(tries, after, 'closed: no more tries');
  // The previous run is read once: a failure is final.
  const previous = new LogsModel({
    access: {
      locate: async () => {
        throw new Error('gone');
      },
      readLogs: async () => (async function* () {})(),
    },
  });
  previous.open({ namespace: 'web', replica: 'api-0' }, true);
  while (previous.status().phase === 'connecting') await new Promise((r) => setTimeout(r, 1));
  t.deepEqual(previous.status(), { phase: 'failed', host: undefined, error: 'gone' });
});

/** A runtime whose log streams the test writes: each open() of a stream is one entry of `streams`. */
function scriptedRuntime() {
  const streams: { push(text: string): void; end(): void; query: LogQuery }[] = [];
  let pid: number | null = 7;
  let refuse: string | undefined;
  const access: RuntimeAccess = {
    locate: async () => {
      if (refuse) throw new Error(refuse);
      return { target: { name: 'a', endpoint: 'http://127.0.0.1:1' }, token: 't' };
    },
    processPid: async () => pid,
    readLogs: async (_target, _token, query) => {
      const queue: string[] = [];
      let done = false;
      let wake: (() => void) | undefined;
      streams.push({
        query,
        push: (text) => {
          queue.push(text);
          wake?.();
        },
        end: () => {
          done = true;
          wake?.();
        },
      });
      return (async function* () {
        for (;;) {
          const text = queue.shift();
          if (text !== undefined) yield new TextEncoder().encode(text);
          else if (done) return;
          else await new Promise<void>((r) => (wake = r));
        }
      })();
    },
  };
  return {
    access,
    streams,
    setPid: (p: number | null) => {
      pid = p;
    },
    refuse: (why: string | undefined) => {
      refuse = why;
    },
  };
}

const until = async (what: string, ok: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
};

test('a followed log that ends is opened again: the same run resumed without repeats, a new run after a marker with its pid', async (t) => {
  const rt = scriptedRuntime();
  const logs = new LogsModel({ access: rt.access, notifyMs: 1, reopenMs: { initial: 10, max: 40 } });
  t.teardown(() => logs.close());
  const all = () => logs.ring.slice(0, 1000);
  logs.open({ namespace: 'web', replica: 'api-0' }, false);
  await until('the stream', () => rt.streams.length === 1);
  t.like(rt.streams[0]?.query, { follow: true, markers: true, tail: 5000 });
  rt.streams[0]?.push('one\ntwo\nthree\n');
  await until('three lines', () => logs.ring.length === 3);

  // The runtime restarts: the same process (pid 7) goes on; the reopened stream repeats its history.
  rt.refuse('connect ECONNREFUSED 127.0.0.1:1');
  rt.streams[0]?.end();
  await until(
    'reconnecting',
    () => logs.status().phase === 'reconnecting' && (logs.status().attempts ?? 0) >= 2,
  );
  t.regex(logs.status().error ?? '', /ECONNREFUSED/);
  rt.refuse(undefined);
  await until('reopened', () => rt.streams.length === 2);
  rt.streams[1]?.push('one\ntwo\nthree\nfour\n');
  await until('resumed', () => all().includes('four'));
  rt.streams[1]?.push('five\n');
  await until('five', () => all().includes('five'));
  t.deepEqual(all(), ['one', 'two', 'three', '--- reconnected ---', 'four', 'five']);
  t.is(logs.status().phase, 'streaming');

  // The replica stopped and runs again (pid 9): the stream ends, the new run follows a marker.
  rt.setPid(9);
  rt.streams[1]?.end();
  await until('reopened again', () => rt.streams.length === 3);
  rt.streams[2]?.push('fresh start\n');
  await until('the new run', () => all().includes('fresh start'));
  t.deepEqual(all().slice(-2), ['--- restarted (pid 9) ---', 'fresh start']);

  // A restart while the stream is up: the runtime's own marker; then a reopening knows the new pid.
  rt.streams[2]?.push('--- restarted (pid 11) ---\nsecond run\n');
  await until('second run', () => all().includes('second run'));
  rt.setPid(11);
  rt.streams[2]?.end();
  await until('reopened a third time', () => rt.streams.length === 4);
  rt.streams[3]?.push('unrelated\n');
  await until('lines', () => all().includes('unrelated'));
  t.deepEqual(
    all().slice(-2),
    ['--- reconnected (the lines written meanwhile may be missing) ---', 'unrelated'],
    'same pid, history not found: said so',
  );
});

test('resumeAt: just after the last place the anchor is found', (t) => {
  t.is(resumeAt(['a', 'b', 'c', 'd'], ['b', 'c']), 3);
  t.is(resumeAt(['x', 'y', 'x', 'y', 'z'], ['x', 'y']), 4, 'the last occurrence');
  t.is(resumeAt(['a', 'b'], ['b', 'c']), undefined);
  t.is(resumeAt(['a'], []), undefined);
  t.is(resumeAt([], ['a']), undefined);
});

test('sparklines: scaled to the largest sample, a gap as a space, never as the lowest block', (t) => {
  t.is(sparkline([0, 1, 2, 4, 8], 5), '▁▂▃▅█');
  t.is(sparkline([8, undefined, 8], 3), '█ █');
  t.is(sparkline([5], 4), '   █', 'a short series padded on the left');
  t.is(sparkline([0, 0], 2), '▁▁', 'zeros are the lowest block');
  t.is(sparkline([1, 2, 3, 4], 2), '▇█', 'the newest samples');
  let series: (number | undefined)[] = [];
  for (let i = 0; i < 100; i++) series = appendSample(series, i);
  t.is(series.length, SERIES_LENGTH);
  t.is(series[0], 40);
});

test('usage series: CPU as a rate between reads, a failed read a gap and the host marked, a restart no rate', async (t) => {
  const answers: (HostSample | Error)[] = [
    {
      host: 'a',
      at: 1_000,
      replicas: [
        { namespace: 'web', name: 'api-0', cpuUsageNanos: 0, memoryCurrentBytes: 10 << 20, pids: 1 },
      ],
    },
    {
      host: 'a',
      at: 2_000,
      replicas: [
        { namespace: 'web', name: 'api-0', cpuUsageNanos: 500e6, memoryCurrentBytes: 12 << 20, pids: 1 },
      ],
    },
    new Error('host a: connect ECONNREFUSED'),
    {
      host: 'a',
      at: 4_000,
      replicas: [
        { namespace: 'web', name: 'api-0', cpuUsageNanos: 100e6, memoryCurrentBytes: 12 << 20, pids: 1 },
      ],
    },
  ];
  const usage = new UsageModel({
    hosts: () => [{ name: 'a', endpoint: 'http://127.0.0.1:1' }],
    token: async () => 't',
    scrape: async () => {
      const next = answers.shift();
      if (next instanceof Error) throw next;
      return next as HostSample;
    },
  });
  await usage.poll();
  await usage.poll();
  t.deepEqual(usage.series('web/api-0')?.cpu, [undefined, 500]);
  t.is(usage.hostError('a'), undefined);
  t.regex(usageCells(usage.series('web/api-0'), undefined).cells[0], /^ +█ +500m$/);
  await usage.poll();
  t.deepEqual(usage.series('web/api-0')?.cpu, [undefined, 500, undefined], 'a gap, not a zero');
  t.is(usage.hostError('a'), 'host a: connect ECONNREFUSED');
  const marked = usageCells(usage.series('web/api-0'), usage.hostError('a'));
  t.true(marked.unreachable);
  t.regex(marked.cells[0], /unreachable$/);
  await usage.poll();
  t.deepEqual(
    usage.series('web/api-0')?.cpu,
    [undefined, 500, undefined, undefined],
    'the counter went down: a new cgroup',
  );
  t.deepEqual(usage.series('web/api-0')?.memory, [10 << 20, 12 << 20, undefined, 12 << 20]);
});

test('usage: a read that changes nothing (no host, no series) tells no one; a host read does', async (t) => {
  let hosts: { name: string; endpoint: string }[] = [];
  const usage = new UsageModel({
    hosts: () => hosts,
    token: async () => 't',
    scrape: async () => ({
      host: 'a',
      at: 1_000,
      replicas: [{ namespace: 'web', name: 'api-0', cpuUsageNanos: 1, memoryCurrentBytes: 1, pids: 1 }],
    }),
  });
  let notified = 0;
  usage.subscribe(() => notified++);
  await usage.poll();
  await usage.poll();
  t.is(notified, 0, 'nothing to read: no redraw');
  hosts = [{ name: 'a', endpoint: 'http://127.0.0.1:1' }];
  await usage.poll();
  t.is(notified, 1);
  hosts = [];
  await usage.poll();
  t.is(notified, 2, 'the host gone: its series get a gap');
});
