// The TUI's runtime event streams (tui/model/live.ts) without a runtime: a stream fed by the test,
// what the rows are shown of a Replica while it is up, and what happens when it fails.
import test from 'ava';
import type { Replica } from '../../crds/types.ts';
import { apiStatusFields, RuntimeEventsModel, type RuntimeReplica } from '../../tui/model/live.ts';

const proc = (
  pid: number | null,
  restarts: number,
  lastExit: RuntimeReplica['processes'][number]['lastExit'] = null,
) => ({
  name: 'main',
  pid,
  state: pid === null ? 'Exited' : 'Running',
  ready: pid !== null,
  restarts,
  startedAt: '2026-12-06T10:00:00.000Z',
  lastExit,
});
const status = (pid: number | null, restarts: number, phase = 'Running'): RuntimeReplica => ({
  id: 'ns.web-0',
  phase,
  ready: pid !== null,
  startedAt: '2026-12-06T10:00:00.000Z',
  processes: [proc(pid, restarts)],
});
const replica = (host: string, extra: Partial<NonNullable<Replica['status']>> = {}): Replica =>
  ({
    metadata: { name: 'web-0', namespace: 'ns', uid: 'u' },
    spec: { host, instance: 'web', ordinal: 0, template: { processes: [] } },
    status: {
      phase: 'CrashLoopBackOff',
      reason: 'CrashLoopBackOff',
      message: 'm',
      restarts: 0,
      address: '127.0.0.1',
    },
    ...extra,
  }) as unknown as Replica;

/** A runtime fed by the test: its event stream, and the replica statuses its reads answer. */
function fakeRuntime() {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const reads: string[] = [];
  const answers = new Map<string, RuntimeReplica>();
  let fail: string | undefined;
  let opened = 0;
  const get = async (_t: unknown, token: string, path: string): Promise<Response> => {
    if (token !== 'tok') throw new Error('bad token');
    if (fail) throw new Error(fail);
    if (path === '/v1/events') {
      opened++;
      const body = new ReadableStream<Uint8Array>({
        start: (c) => {
          controller = c;
        },
      });
      return new Response(body);
    }
    reads.push(path);
    const s = answers.get(path);
    if (!s) throw new Error(`host h: ${path} answered 404: gone`);
    return new Response(JSON.stringify({ status: s }));
  };
  const send = (type: string, data: unknown) =>
    controller.enqueue(new TextEncoder().encode(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`));
  return {
    get,
    send,
    opened: () => opened,
    reads,
    answers,
    breakOff: (why: string) => {
      fail = why;
      controller.error(new Error(why));
    },
    heal: () => {
      fail = undefined;
    },
  };
}

const until = async (what: string, ok: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

test('the snapshot, then each event read again from the runtime, overlays the Replica; a failed stream drops it and marks the host', async (t) => {
  const rt = fakeRuntime();
  const live = new RuntimeEventsModel({
    hosts: () => [{ name: 'h', endpoint: 'http://127.0.0.1:1' }],
    token: async () => 'tok',
    get: rt.get as never,
    backoffMs: { initial: 10, max: 20 },
  }).start();
  t.teardown(() => live.stop());
  let told = 0;
  live.subscribe(() => told++);
  await until('the stream', () => rt.opened() === 1);
  rt.send('snapshot', { host: 'h', replicas: [status(100, 0)] });
  await until('connected', () => live.connected('h'));
  t.true(told > 0, 'listeners told');
  const base = replica('h');
  const shown = live.overlay(base);
  t.is(shown.status?.processes?.[0]?.pid, 100);
  t.is(shown.status?.phase, 'Running');
  t.is(shown.status?.reason, undefined, "the API's reason is for its phase, not this one");
  t.is(shown.status?.address, '127.0.0.1', 'what the runtime does not say stays');
  t.is(live.overlay(base), shown, 'the same object while nothing changed');
  const elsewhere = replica('other');
  t.is(live.overlay(elsewhere), elsewhere, 'a Replica bound to another host is as it is');

  // An exit and the restart: each event has the replica read again.
  rt.answers.set('/v1/replicas/ns/web-0', {
    ...status(101, 1),
    processes: [
      proc(101, 1, { code: null, signal: 'SIGKILL', reason: 'Killed', at: '2026-12-06T10:01:00.000Z' }),
    ],
  });
  rt.send('exited', { type: 'exited', replica: 'ns.web-0', namespace: 'ns', name: 'web-0', process: 'main' });
  rt.send('started', {
    type: 'started',
    replica: 'ns.web-0',
    namespace: 'ns',
    name: 'web-0',
    process: 'main',
  });
  await until('the restart', () => live.overlay(base).status?.restarts === 1);
  const after = live.overlay(base).status?.processes?.[0];
  t.is(after?.pid, 101);
  t.deepEqual(after?.lastExit, { reason: 'Killed', signal: 'SIGKILL', at: '2026-12-06T10:01:00.000Z' });
  t.deepEqual(rt.reads, ['/v1/replicas/ns/web-0'], 'one read for the exit and the restart, gathered');

  // stopped: its entry goes.
  rt.send('stopped', { type: 'stopped', replica: 'ns.web-0', namespace: 'ns', name: 'web-0' });
  await until('stopped', () => live.status('ns/web-0') === undefined);
  t.is(live.overlay(base), base);

  // The stream breaks off: the host is marked, and retried until it answers again.
  rt.send('snapshot', { host: 'h', replicas: [status(101, 1)] });
  await until('in again', () => live.status('ns/web-0') !== undefined);
  rt.breakOff('connect ECONNREFUSED');
  await until('marked', () => live.hostError('h') !== undefined);
  t.regex(live.hostError('h') ?? '', /^host h: .*ECONNREFUSED/);
  t.is(live.status('ns/web-0'), undefined, 'its word dropped');
  t.is(live.overlay(base), base);
  const before = rt.opened();
  const toldBefore = told;
  await new Promise((r) => setTimeout(r, 60));
  t.is(rt.opened(), before, 'no stream while the runtime refuses');
  t.truthy(live.hostError('h'), 'still marked');
  t.is(told, toldBefore, 'retries that fail alike tell nobody (no redraw per retry)');
  rt.heal();
  await until('opened again', () => rt.opened() > before);
  rt.send('snapshot', { host: 'h', replicas: [status(101, 1)] });
  await until('connected again', () => live.connected('h'));
  t.is(live.overlay(base).status?.restarts, 1);
});

test('the API fields of a runtime status: restarts summed, nulls left out', (t) => {
  const s = apiStatusFields({
    id: 'ns.a',
    phase: 'CrashLoopBackOff',
    ready: false,
    startedAt: null,
    processes: [
      proc(null, 3, { code: 1, signal: null, reason: 'Error', at: 'x' }),
      { ...proc(7, 2), name: 'b' },
    ],
  });
  t.is(s.restarts, 5);
  t.is(s.startedAt, undefined);
  t.deepEqual(s.processes?.[0], {
    name: 'main',
    state: 'Exited',
    ready: false,
    restarts: 3,
    startedAt: '2026-12-06T10:00:00.000Z',
    lastExit: { reason: 'Error', at: 'x', code: 1 },
  });
  t.is(s.processes?.[1]?.pid, 7);
});
