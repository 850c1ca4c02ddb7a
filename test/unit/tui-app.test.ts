// The TUI's components (tui/views/) rendered by Ink into a terminal of a given size that emits
// `resize`, over an in-memory cluster: what the frame shows, that it always stays below the
// terminal's height, that resizes are debounced, and that keys reach the model.
import test from 'ava';
import { render } from 'ink';
import { createElement as h } from 'react';
import type { Instance, Replica } from '../../crds/types.ts';
import type { CoreEvent, KubeObject } from '../../kube/index.ts';
import type { ClusterHealth, LiveCluster } from '../../tui/model/cluster.ts';
import { LogsModel } from '../../tui/model/logs.ts';
import { initialState } from '../../tui/model/state.ts';
import { type KindId, type KindObjects, keyOf } from '../../tui/model/views.ts';
import { App } from '../../tui/views/app.ts';
import { FakeStdin, FakeStdout } from '../helpers/terminal.ts';

/** The model's surface over plain arrays; writes are recorded. */
class FakeCluster implements LiveCluster {
  #objects: { [K in KindId]: KindObjects[K][] } = {
    instances: [],
    replicas: [],
    services: [],
    hosts: [],
    events: [],
    endpointslices: [],
  };
  #listeners = new Set<() => void>();
  #version = 0;
  #health: ClusterHealth = { synced: true, connected: true, attempts: 0 };
  readonly writes: string[] = [];
  namespaces: (string | undefined)[] = [];

  set<K extends KindId>(kind: K, objects: KindObjects[K][]): void {
    this.#objects[kind] = objects as never;
    this.#bump();
  }
  setHealth(health: ClusterHealth): void {
    this.#health = health;
    this.#bump();
  }
  #bump(): void {
    this.#version++;
    for (const l of this.#listeners) l();
  }
  /** How many times each kind's whole list was read. */
  readonly listed: Partial<Record<KindId, number>> = {};
  list<K extends KindId>(kind: K): readonly KindObjects[K][] {
    this.listed[kind] = (this.listed[kind] ?? 0) + 1;
    return this.#objects[kind];
  }
  get<K extends KindId>(kind: K, key: string): KindObjects[K] | undefined {
    return (this.#objects[kind] as KubeObject[]).find((o) => keyOf(o) === key) as KindObjects[K] | undefined;
  }
  eventsFor(): readonly CoreEvent[] {
    return [];
  }
  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  version(): number {
    return this.#version;
  }
  health(): ClusterHealth {
    return this.#health;
  }
  setNamespace(namespace: string | undefined): void {
    this.namespaces.push(namespace);
  }
  async delete(kind: KindId, key: string): Promise<void> {
    this.writes.push(`delete ${kind} ${key}`);
  }
  async scale(key: string, replicas: number): Promise<void> {
    this.writes.push(`scale ${key} ${replicas}`);
  }
  async restart(key: string): Promise<void> {
    this.writes.push(`restart ${key}`);
  }
}

const instance = (name: string, ready: number, replicas: number): Instance =>
  ({
    metadata: { name, namespace: 'default', uid: name, creationTimestamp: new Date().toISOString() },
    spec: { replicas },
    status: {
      readyReplicas: ready,
      conditions: [{ type: 'Available', status: 'True', reason: 'MinimumReplicasAvailable' }],
    },
  }) as unknown as Instance;

const replica = (inst: string, ordinal: number): Replica =>
  ({
    metadata: { name: `${inst}-${ordinal}`, namespace: 'default', labels: { 'orrery.dev/instance': inst } },
    spec: { instance: inst, ordinal, host: 'a' },
    status: { phase: 'Running', ready: true, processes: [{ name: 'server', ready: true }] },
  }) as unknown as Replica;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, stdout: FakeStdout, cond: (frame: string) => boolean): Promise<string> {
  // Generous: only a failure waits it out, and CI runs many test files at once on two cores.
  const deadline = Date.now() + 15_000;
  while (!cond(stdout.lastFrame())) {
    if (Date.now() > deadline) throw new Error(`no frame with ${what}; last:\n${stdout.lastFrame()}`);
    await sleep(5);
  }
  return stdout.lastFrame();
}

function mount(
  columns: number,
  rows: number,
  opts: { readonly?: boolean; logs?: LogsModel; view?: 'rep' } = {},
) {
  const stdout = new FakeStdout(columns, rows);
  const stdin = new FakeStdin();
  const cluster = new FakeCluster();
  cluster.set('instances', [instance('web', 3, 3), instance('api', 1, 2)]);
  cluster.set('replicas', [replica('web', 0), replica('web', 1), replica('web', 2), replica('api', 0)]);
  const app = render(
    h(App, {
      cluster,
      initial: initialState({ namespace: 'default', readonly: opts.readonly ?? false, view: opts.view }),
      info: { context: 'test', server: 'https://127.0.0.1:6443', version: '0.0.0' },
      stdout,
      resizeDebounceMs: 60,
      logs: opts.logs,
    }),
    {
      stdout: stdout as unknown as NodeJS.WriteStream,
      stdin: stdin as unknown as NodeJS.ReadStream,
      debug: true,
      exitOnCtrlC: false,
      patchConsole: false,
    },
  );
  return { stdout, stdin, cluster, app };
}

const lines = (frame: string) => frame.split('\n');
const widest = (frame: string) => Math.max(...lines(frame).map((l) => [...l].length));

test('80×24: the Instances view fits below the terminal height, every line within the width', async (t) => {
  const { stdout, app } = mount(80, 24);
  t.teardown(() => app.unmount());
  const frame = await until('the instances', stdout, (f) => f.includes('Instances(default)[2]'));
  t.is(lines(frame).length, 23, 'one line less than the terminal');
  t.true(widest(frame) <= 80);
  t.regex(frame, /^ NAME↑ +READY +UP-TO-DATE +AVAILABLE +STATUS +AGE/m);
  t.regex(frame, /^ api +1\/2 +0 +0 +MinimumReplicasAvailable +0s/m, 'sorted by name');
  t.regex(frame, /<\?> help/);
  for (const frame of stdout.frames)
    t.true(lines(frame).length <= 23, 'no frame ever reached the bottom line');
});

test('200×50 uses the room; a resize is followed once the burst is over, and never overflows', async (t) => {
  const { stdout, app } = mount(200, 50);
  t.teardown(() => app.unmount());
  const wide = await until('the instances', stdout, (f) => f.includes('Instances(default)[2]'));
  t.is(lines(wide).length, 49);
  t.is(widest(wide), 200);
  for (let i = 0; i < 5; i++) {
    stdout.resize(200 - i * 30, 50 - i * 6);
    await sleep(10);
  }
  t.is(widest(stdout.lastFrame()), 200, 'still laid out for the old size during the burst');
  const small = await until('the 80×26 layout', stdout, (f) => lines(f).length === 25);
  t.true(widest(small) <= 80);
  stdout.resize(60, 20);
  const tiny = await until('the 60×20 layout', stdout, (f) => lines(f).length === 19);
  t.true(widest(tiny) <= 60);
  t.regex(tiny, / web +3\/3/);
  stdout.resize(30, 6);
  t.regex(await until('the notice', stdout, (f) => f.includes('too small')), /terminal too small \(30×6\)/);
});

test('keys: enter opens the Replicas of the selected Instance, / filters them, esc goes back, : switches', async (t) => {
  const { stdout, stdin, app } = mount(100, 24);
  t.teardown(() => app.unmount());
  await until('the instances', stdout, (f) => f.includes('Instances(default)[2]'));
  stdin.type('j');
  await sleep(20);
  stdin.type('\r');
  let frame = await until('the replicas of web', stdout, (f) => f.includes('Replicas(inst/web)[3]'));
  t.regex(frame, / web-0 +1\/1 +Running/);
  t.notRegex(frame, /api-0/);
  stdin.type('/');
  stdin.type('web-1');
  frame = await until('the filter', stdout, (f) => f.includes('Replicas(inst/web)[1] /web-1'));
  t.regex(frame, / web-1 /);
  t.notRegex(frame, / web-0 /);
  stdin.type('\r');
  stdin.type('\u001b');
  await until('no filter', stdout, (f) => f.includes('Replicas(inst/web)[3] '));
  stdin.type('\u001b');
  await until('back', stdout, (f) => f.includes('Instances(default)[2]'));
  stdin.type(':rep\r');
  await until('all replicas', stdout, (f) => f.includes('Replicas(default)[4]'));
  // One read with several keys (a paste, tmux send-keys): each acts on the screen the one
  // before it made, though that screen was never drawn.
  stdin.type(':inst\rG\r');
  await until('the replicas of web, the last instance', stdout, (f) => f.includes('Replicas(inst/web)[3]'));
  t.pass();
});

test('the model changing redraws; an outage shows the banner over the last rows seen', async (t) => {
  const { stdout, cluster, app } = mount(100, 24);
  t.teardown(() => app.unmount());
  await until('the instances', stdout, (f) => f.includes('Instances(default)[2]'));
  cluster.set('instances', [instance('api', 1, 2)]);
  let frame = await until('one instance', stdout, (f) => f.includes('Instances(default)[1]'));
  t.notRegex(frame, / web /);
  cluster.setHealth({
    synced: true,
    connected: false,
    attempts: 3,
    error: 'connect ECONNREFUSED 127.0.0.1:6443',
  });
  frame = await until('the banner', stdout, (f) => f.includes('reconnecting (3)'));
  t.regex(frame, /API server unreachable, reconnecting \(3\)…: connect ECONNREFUSED/);
  t.regex(frame, / api +1\/2/, 'the rows stay');
  cluster.setHealth({
    synced: true,
    connected: false,
    attempts: 1,
    error: 'HTTP 403 (Forbidden): hosts is forbidden',
  });
  await until('the refusal', stdout, (f) =>
    f.includes('watch refused, reconnecting (1)…: HTTP 403 (Forbidden)'),
  );
  cluster.setHealth({ synced: true, connected: true, attempts: 0 });
  await until('the title again', stdout, (f) => f.includes('Instances(default)[1]'));
  t.pass();
});

test('ctrl-d then y deletes through the model; s scales; --readonly does neither', async (t) => {
  const { stdout, stdin, cluster, app } = mount(100, 24);
  t.teardown(() => app.unmount());
  await until('the instances', stdout, (f) => f.includes('Instances(default)[2]'));
  stdin.type('j');
  await sleep(20);
  stdin.type('\u0004');
  await until('the question', stdout, (f) => f.includes('Delete instance default/web? y deletes'));
  stdin.type('y');
  await until('the message', stdout, (f) => f.includes('deleting instance default/web'));
  stdin.type('s');
  await until('the scale prompt', stdout, (f) =>
    f.includes('Scale instance default/web to how many replicas?'),
  );
  stdin.type('5\r');
  await until('the message', stdout, (f) => f.includes('scaled instance default/web to 5'));
  t.deepEqual(cluster.writes, ['delete instances default/web', 'scale default/web 5']);

  const ro = mount(100, 24, { readonly: true });
  t.teardown(() => ro.app.unmount());
  await until('the instances', ro.stdout, (f) => f.includes('Instances(default)[2]'));
  t.notRegex(ro.stdout.lastFrame(), /<ctrl-d> delete/);
  ro.stdin.type('\u0004');
  await until('the refusal', ro.stdout, (f) => f.includes('read-only: deleting is off'));
  t.deepEqual(ro.cluster.writes, []);
});

test('r then y restarts the Replica through the model; another key cancels; --readonly refuses', async (t) => {
  const { stdout, stdin, cluster, app } = mount(100, 24);
  t.teardown(() => app.unmount());
  await until('the instances', stdout, (f) => f.includes('Instances(default)[2]'));
  stdin.type(':rep\r');
  await until('the replicas', stdout, (f) => f.includes('Replicas(default)[4]') && f.includes('<r> restart'));
  stdin.type('r');
  await until('the question', stdout, (f) =>
    f.includes('Restart replica default/api-0 (its processes, in place)? y restarts'),
  );
  stdin.type('n');
  await until('cancelled', stdout, (f) => f.includes('restart cancelled'));
  t.deepEqual(cluster.writes, []);
  stdin.type('j');
  await sleep(20);
  stdin.type('r');
  await until('the question', stdout, (f) => f.includes('Restart replica default/web-0'));
  stdin.type('y');
  await until('the message', stdout, (f) => f.includes('restarting replica default/web-0'));
  t.deepEqual(cluster.writes, ['restart default/web-0']);

  const ro = mount(100, 24, { readonly: true });
  t.teardown(() => ro.app.unmount());
  await until('the instances', ro.stdout, (f) => f.includes('Instances(default)[2]'));
  ro.stdin.type(':rep\r');
  await until('the replicas', ro.stdout, (f) => f.includes('Replicas(default)[4]'));
  t.notRegex(ro.stdout.lastFrame() ?? '', /<r> restart/);
  ro.stdin.type('r');
  await until('the refusal', ro.stdout, (f) => f.includes('read-only: restarting is off'));
  t.deepEqual(ro.cluster.writes, []);
});

test('q quits', async (t) => {
  const { stdout, stdin, app } = mount(80, 24);
  await until('the instances', stdout, (f) => f.includes('Instances(default)[2]'));
  stdin.type('q');
  await app.waitUntilExit();
  t.pass();
});

test('l at 80×24: the log pane below the terminal height, lines cut or wrapped to the width, paused and followed', async (t) => {
  let push: ((text: string) => void) | undefined;
  const logs = new LogsModel({
    notifyMs: 10,
    access: {
      locate: async (namespace, replica) => {
        t.is(`${namespace}/${replica}`, 'default/api-0');
        return { target: { name: 'a', endpoint: 'http://127.0.0.1:1' }, token: 't' };
      },
      readLogs: async () =>
        (async function* () {
          const queue: string[] = [];
          let wake: (() => void) | undefined;
          push = (text) => {
            queue.push(text);
            wake?.();
          };
          for (;;) {
            const text = queue.shift();
            if (text !== undefined) yield new TextEncoder().encode(text);
            else await new Promise<void>((r) => (wake = r));
          }
        })(),
    },
  });
  const { stdout, stdin, app } = mount(80, 24, { logs, view: 'rep' });
  t.teardown(() => {
    logs.close();
    app.unmount();
  });
  await until('the replicas', stdout, (f) => f.includes('Replicas(default)[4]'));
  stdin.type('l');
  await until('the log pane', stdout, (f) => f.includes('Logs default/api-0 (following)'));
  while (!push) await sleep(5);
  push(
    `${Array.from({ length: 100 }, (_, i) => `line ${i} ${'y'.repeat(i === 99 ? 150 : 10)}`).join('\n')}\n`,
  );
  let frame = await until('the newest lines', stdout, (f) => / line 99 y+…$/m.test(f));
  t.is(lines(frame).length, 23);
  t.true(widest(frame) <= 80);
  t.regex(frame, /lines 82-100 of 100/);
  stdin.type('w');
  frame = await until('wrapped', stdout, (f) => f.includes('(following, wrap)'));
  t.regex(frame, /^ y{79}$/m, 'the long line wrapped at the width');
  t.true(widest(frame) <= 80);
  stdin.type('f');
  await until('paused', stdout, (f) => f.includes('paused, 0 lines below'));
  push('line 100\nline 101\n');
  frame = await until('the lines held', stdout, (f) => f.includes('paused, 2 lines below'));
  t.notRegex(frame, / line 101/);
  stdin.type('G');
  await until('following again', stdout, (f) => / line 101$/m.test(f));
  stdin.type('\u001b');
  await until('the table again', stdout, (f) => f.includes('Replicas(default)[4]'));
  for (const frame of stdout.frames)
    t.true(lines(frame).length <= 23, 'no frame ever reached the bottom line');
});

test('the clock redraws when an age on the page changes: each second for young objects, not for old ones', async (t) => {
  const { stdout, cluster, app } = mount(100, 24);
  t.teardown(() => app.unmount());
  const born = (name: string, msAgo: number): Instance => {
    const inst = instance(name, 1, 1);
    (inst.metadata as { creationTimestamp: string }).creationTimestamp = new Date(
      Date.now() - msAgo,
    ).toISOString();
    return inst;
  };
  cluster.set('instances', [born('young', 0)]);
  // Whatever second it is first seen at (a loaded machine may starve this process for seconds),
  // the age goes on without anything else changing.
  const ageOf = (f: string) => Number(/ young .* (\d+)s$/m.exec(f)?.[1] ?? Number.NaN);
  const first = ageOf(await until('an age in seconds', stdout, (f) => !Number.isNaN(ageOf(f))));
  await until(`an age past ${first}s`, stdout, (f) => ageOf(f) > first);
  // An hour old reads `60m` for a minute: nothing on the page changes second to second.
  cluster.set('instances', [born('old', 3_600_000 + 5_000)]);
  await until('the old one', stdout, (f) => / old .* 60m$/m.test(f));
  const drawn = stdout.frames.length;
  await sleep(2_300);
  t.is(stdout.frames.length, drawn, 'no frame while the page reads the same');
  // Another change draws at once, and the ages it shows are those of now.
  cluster.set('instances', [born('old', 3_600_000 + 5_000), born('new', 119_000)]);
  await until('the new one', stdout, (f) => / new .* 11[89]s$/m.test(f));
  await until('the new one ticking', stdout, (f) => / new .* 2m$/m.test(f));
});

/** 100 Replicas web-0..web-99, all created 30 s ago, on the screen. */
async function hundredReplicas(
  cluster: ReturnType<typeof mount>['cluster'],
  stdout: ReturnType<typeof mount>['stdout'],
) {
  const created = new Date(Date.now() - 30_000).toISOString();
  cluster.set(
    'replicas',
    Array.from({ length: 100 }, (_, i) => {
      const r = replica('web', i);
      r.metadata.creationTimestamp = created;
      return r;
    }),
  );
  await until('the 100 replicas', stdout, (f) => f.includes('Replicas(default)[100]'));
}

test('idle, the clock works out the rows of the page only; G shows the last rows at their current age', async (t) => {
  const { stdout, stdin, cluster, app } = mount(80, 24, { view: 'rep' });
  t.teardown(() => app.unmount());
  await hundredReplicas(cluster, stdout);
  const ageOn = (frame: string, name: string) =>
    Number(new RegExp(`^ ${name} .* (\\d+)s *$`, 'm').exec(frame)?.[1] ?? Number.NaN);
  const listed = cluster.listed.replicas ?? 0;
  const first = ageOn(stdout.lastFrame(), 'web-0');
  // Two ticks of the clock, each moving the ages on the page.
  const later = await until('the ages two seconds on', stdout, (f) => ageOn(f, 'web-0') >= first + 2);
  t.is(cluster.listed.replicas ?? 0, listed, 'no tick read the whole list');
  t.regex(later, / web-1 /);
  t.notRegex(later, / web-99 /, 'web-99 is off the page');
  stdin.type('G');
  const bottom = await until('the last page', stdout, (f) => / web-99 /.test(f));
  t.true(
    ageOn(bottom, 'web-99') >= first + 2,
    `web-99 at its current age, not the first frame's (${first}s)`,
  );
  t.true(ageOn(bottom, 'web-99') >= ageOn(later, 'web-0'));
});

test('describe open: its ages follow the clock, the table under it is not worked out each second', async (t) => {
  const { stdout, stdin, cluster, app } = mount(80, 24, { view: 'rep' });
  t.teardown(() => app.unmount());
  await hundredReplicas(cluster, stdout);
  stdin.type('d');
  await until('describe', stdout, (f) => f.includes('Describe replica default/web-0'));
  const listed = cluster.listed.replicas ?? 0;
  const frames = stdout.frames.length;
  await sleep(2300);
  t.true(stdout.frames.length > frames, 'the pane was drawn again as the time moved');
  t.is(cluster.listed.replicas ?? 0, listed, 'no tick read the whole list');
  stdin.type('q');
  const table = await until('the table', stdout, (f) => f.includes('Replicas(default)[100]'));
  t.regex(table, / web-0 /);
});
