// The same-host fast path's pure parts (mesh/local-feed.ts): the server-sent events parser, the
// reading of the runtime's events, and the rule of what is down and for how long.
import test from 'ava';
import {
  keyOfRuntimeId,
  LocalDownState,
  reportOf,
  type SseEvent,
  SseParser,
  snapshotOf,
} from '../../mesh/local-feed.ts';

function parse(chunks: string[]): SseEvent[] {
  const out: SseEvent[] = [];
  const p = new SseParser((e) => out.push(e));
  for (const c of chunks) p.push(c);
  return out;
}

test('sse: events, multi-line data, comments, retry, and any line end, however the chunks fall', (t) => {
  const stream =
    'retry: 1000\n\nevent: snapshot\ndata: {"a":1}\n\n: ping\n\nevent: exited\r\ndata:x\r\ndata: y\r\n\r\ndata: plain\r\rfield-only\nevent: late\n';
  const want = [
    { type: 'snapshot', data: '{"a":1}' },
    { type: 'exited', data: 'x\ny' },
    { type: 'message', data: 'plain' },
  ];
  t.deepEqual(parse([stream]), want);
  // Every split point, and one byte at a time: the same events.
  for (let i = 0; i <= stream.length; i++)
    t.deepEqual(parse([stream.slice(0, i), stream.slice(i)]), want, `split at ${i}`);
  t.deepEqual(parse([...stream]), want);
  // CR at the end of a chunk and LF at the start of the next are one line end, not a blank line.
  t.deepEqual(parse(['data: a\r', '\ndata: b\r\n', '\r\n']), [{ type: 'message', data: 'a\nb' }]);
});

test('runtime ids and events: the key is namespace/name; exited and notReady say down', (t) => {
  t.is(keyOfRuntimeId('shop.web-0'), 'shop/web-0');
  t.is(keyOfRuntimeId('shop.api.v2-0'), 'shop/api.v2-0', 'the first dot: namespaces have none');
  t.is(keyOfRuntimeId('nodot'), undefined);
  t.is(keyOfRuntimeId('.x'), undefined);
  const e = { replica: 'shop.web-0', namespace: 'shop', name: 'web-0' };
  t.deepEqual(reportOf('exited', { ...e, process: 'main', signal: 'SIGKILL' }), {
    key: 'shop/web-0',
    what: 'down',
  });
  t.deepEqual(reportOf('notReady', { ...e, replicaReady: false }), { key: 'shop/web-0', what: 'down' });
  t.deepEqual(reportOf('ready', { ...e, replicaReady: true }), { key: 'shop/web-0', what: 'ready' });
  t.deepEqual(reportOf('stopped', e), { key: 'shop/web-0', what: 'stopped' });
  t.deepEqual(reportOf('started', e), { key: 'shop/web-0', what: 'running' });
  t.deepEqual(
    reportOf('exited', { replica: 'shop.web-1' }),
    { key: 'shop/web-1', what: 'down' },
    'from the id',
  );
  t.is(reportOf('restarting', e), undefined);
  t.is(reportOf('backoff', e), undefined);
  t.is(reportOf('exited', { replica: 'foreign' }), undefined, 'an id the agent did not make');
  t.is(reportOf('exited', null), undefined);
  t.deepEqual(
    snapshotOf({
      host: 'h',
      replicas: [
        { id: 'shop.web-0', name: 'web-0', ready: true },
        { id: 'shop.web-1', ready: false },
        { id: 'bad' },
        null,
      ],
    }),
    {
      host: 'h',
      replicas: [
        { key: 'shop/web-0', ready: true },
        { key: 'shop/web-1', ready: false },
      ],
    },
  );
});

function state(holdMs = 10_000) {
  const clock = { now: 0 };
  const s = new LocalDownState({ holdMs, now: () => clock.now });
  return { s, clock };
}

test('down while the runtime says so: from the exit until it reports the replica ready', (t) => {
  const { s } = state();
  t.deepEqual(
    s.snapshot('rt', [
      { key: 'shop/web-0', ready: true },
      { key: 'shop/web-1', ready: true },
    ]),
    new Set(),
  );
  t.deepEqual(s.report('rt', 'shop/web-0', 'down'), new Set(['shop']));
  const set = s.downIn('shop');
  t.deepEqual([...set], ['web-0']);
  t.deepEqual(s.report('rt', 'shop/web-0', 'down'), new Set(), 'notReady after exited: no change');
  t.is(s.downIn('shop'), set, 'the same object while unchanged');
  t.deepEqual(s.report('rt', 'shop/web-0', 'running'), new Set(), 'restarted: still down until ready');
  t.deepEqual(s.report('rt', 'shop/web-0', 'ready'), new Set(['shop']));
  t.is(s.downIn('shop').size, 0);
  // A replica started after the snapshot is down until the runtime calls it ready.
  s.report('rt', 'other/db-0', 'running');
  t.deepEqual([...s.downIn('other')], ['db-0']);
  t.is(s.downIn('shop').size, 0, 'per namespace');
  // Events of a runtime whose stream is not up are not taken.
  t.deepEqual(s.report('elsewhere', 'shop/web-1', 'down'), new Set());
});

test('the snapshot of a reopened stream says what is down now', (t) => {
  const { s } = state();
  s.snapshot('rt', [{ key: 'ns/a', ready: true }]);
  s.report('rt', 'ns/a', 'down');
  t.deepEqual(s.snapshot('rt', [{ key: 'ns/a', ready: true }]), new Set(['ns']));
  t.is(s.down.size, 0);
  t.deepEqual(s.snapshot('rt', [{ key: 'ns/a', ready: false }]), new Set(['ns']));
  t.deepEqual([...s.down], ['ns/a']);
});

test('stopped, or a lost stream: out for holdMs at most, or until a runtime reports it ready', (t) => {
  const { s, clock } = state(10_000);
  s.snapshot('rt', [
    { key: 'ns/a', ready: true },
    { key: 'ns/b', ready: true },
    { key: 'ns/c', ready: true },
  ]);
  // a stops (scaled down): held.
  s.report('rt', 'ns/a', 'stopped');
  t.deepEqual([...s.down], ['ns/a']);
  t.is(s.nextExpiry(), 10_000);
  // b exits, then the stream is lost: b's mark is held too, c (ready) is not down.
  clock.now = 4_000;
  s.report('rt', 'ns/b', 'down');
  s.lost('rt');
  t.deepEqual([...s.down].sort(), ['ns/a', 'ns/b']);
  clock.now = 9_999;
  t.deepEqual(s.expire(), new Set());
  clock.now = 10_000;
  t.deepEqual(s.expire(), new Set(['ns']), "a's hold is over");
  t.deepEqual([...s.down], ['ns/b']);
  t.is(s.nextExpiry(), 14_000);
  // The stream reopens: b is running and ready again there. Its hold ends at once.
  s.snapshot('rt', [
    { key: 'ns/b', ready: true },
    { key: 'ns/c', ready: true },
  ]);
  t.is(s.down.size, 0);
  t.is(s.nextExpiry(), undefined);
  // A replica stopped here and started on another runtime of the host: its ready there ends the hold.
  s.snapshot('rt2', []);
  s.report('rt', 'ns/c', 'stopped');
  t.deepEqual([...s.down], ['ns/c']);
  s.report('rt2', 'ns/c', 'running');
  s.report('rt2', 'ns/c', 'ready');
  t.is(s.down.size, 0);
});

test('a lost stream that never comes back cannot keep a replica out past holdMs', (t) => {
  const { s, clock } = state(10_000);
  s.snapshot('rt', [{ key: 'ns/a', ready: false }]);
  t.deepEqual([...s.down], ['ns/a']);
  clock.now = 1_000;
  s.lost('rt');
  t.deepEqual(s.report('rt', 'ns/a', 'down'), new Set(), 'nothing taken from a lost stream');
  clock.now = 11_000;
  t.deepEqual(s.expire(), new Set(['ns']));
  t.is(s.down.size, 0);
});
