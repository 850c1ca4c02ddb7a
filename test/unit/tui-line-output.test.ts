// Ink's frames joined as lines (tui/views/line-output.ts) against Ink's own cell-by-cell
// composition: the same screens, cell for cell and style for style, over the UI's frames (views,
// selection, colours, the banner, a pane, wide and invisible characters), and the cases it must
// leave to Ink.
import test from 'ava';

// Colours on (Ink's chalk reads this when it loads), so the styles are compared too.
process.env.FORCE_COLOR = '1';
const { render, Box, Text } = await import('ink');
const { createElement: h } = await import('react');
const { initialState } = await import('../../tui/model/state.ts');
const { keyOf } = await import('../../tui/model/views.ts');
const { App } = await import('../../tui/views/app.ts');
const { lineFrame, lineOutputCounts, lineOutputState, setLineOutput } = await import(
  '../../tui/views/line-output.ts'
);

import type { Instance, Replica } from '../../crds/types.ts';
import type { ClusterHealth, LiveCluster } from '../../tui/model/cluster.ts';
import { FakeStdin, FakeStdout } from '../helpers/terminal.ts';

// Two hours old: the ages read `120m` for a minute, the same in both renders.
const created = new Date(Date.now() - 2 * 3600_000).toISOString();

const instance = (name: string, ready: number, replicas: number, degraded = false): Instance =>
  ({
    metadata: { name, namespace: 'default', uid: name, creationTimestamp: created },
    spec: { replicas },
    status: {
      readyReplicas: ready,
      conditions: degraded
        ? [{ type: 'Degraded', status: 'True', reason: 'CrashLoop' }]
        : [{ type: 'Available', status: 'True', reason: 'MinimumReplicasAvailable' }],
    },
  }) as unknown as Instance;

const replica = (inst: string, ordinal: number, reason?: string): Replica =>
  ({
    metadata: {
      name: `${inst}-${ordinal}`,
      namespace: 'default',
      creationTimestamp: created,
      labels: { 'orrery.dev/instance': inst },
    },
    spec: { instance: inst, ordinal, host: 'a' },
    status: {
      phase: reason ? 'Failed' : 'Running',
      ready: !reason,
      reason,
      processes: [{ name: 'server', ready: !reason }],
    },
  }) as unknown as Replica;

function cluster(health: ClusterHealth): LiveCluster {
  const objects: Record<string, unknown[]> = {
    instances: [
      instance('web', 3, 3),
      instance('api', 1, 2),
      instance('db', 0, 1, true),
      // Wide characters and an emoji take two cells each.
      instance('数据库-🚀', 1, 1),
    ],
    replicas: [replica('web', 0), replica('web', 1), replica('db', 0, 'CrashLoopBackOff: exit 1')],
    services: [],
    hosts: [],
    events: [],
    endpointslices: [],
  };
  return {
    list: (kind: string) => objects[kind] ?? [],
    get: (kind: string, key: string) =>
      (objects[kind] as Parameters<typeof keyOf>[0][]).find((o) => keyOf(o) === key),
    eventsFor: () => [],
    subscribe: () => () => {},
    version: () => 1,
    health: () => health,
    setNamespace: () => {},
    delete: async () => {},
    scale: async () => {},
    restart: async () => {},
  } as unknown as LiveCluster;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The last frame Ink wrote after `keys`, with the line path on or off. */
async function screen(
  lines: boolean,
  columns: number,
  rows: number,
  keys: string[],
  health: ClusterHealth = { synced: true, connected: true, attempts: 0 },
): Promise<string> {
  setLineOutput(lines);
  const stdout = new FakeStdout(columns, rows);
  const stdin = new FakeStdin();
  const app = render(
    h(App, {
      cluster: cluster(health),
      initial: initialState({ namespace: 'default', readonly: false }),
      info: { context: 'test', server: 'https://127.0.0.1:6443', version: '0.0.0' },
      stdout,
    }),
    {
      stdout: stdout as unknown as NodeJS.WriteStream,
      stdin: stdin as unknown as NodeJS.ReadStream,
      debug: true,
      exitOnCtrlC: false,
      patchConsole: false,
    },
  );
  try {
    await sleep(50);
    for (const key of keys) {
      stdin.type(key);
      await sleep(30);
    }
    return stdout.frames.at(-1) ?? '';
  } finally {
    app.unmount();
    setLineOutput(true);
  }
}

const ESC = String.fromCharCode(27);

interface Style {
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
  inverse: boolean;
  strike: boolean;
  fg: string;
  bg: string;
}

const PLAIN: Style = {
  bold: false,
  dim: false,
  italic: false,
  underline: false,
  inverse: false,
  strike: false,
  fg: '',
  bg: '',
};

/** What a terminal shows for one line: each character with the SGR styles in force, blanks at the end left out. */
function cells(line: string): string[] {
  const out: { char: string; style: Style }[] = [];
  let style = { ...PLAIN };
  const sgr = new RegExp(`${ESC}\\[([\\d;]*)m`, 'y');
  let i = 0;
  while (i < line.length) {
    sgr.lastIndex = i;
    const m = sgr.exec(line);
    if (m) {
      const params = (m[1] || '0').split(';').map(Number);
      for (let p = 0; p < params.length; p++) {
        const n = params[p] as number;
        if (n === 0) style = { ...PLAIN };
        else if (n === 1) style.bold = true;
        else if (n === 2) style.dim = true;
        else if (n === 22) style = { ...style, bold: false, dim: false };
        else if (n === 3 || n === 23) style.italic = n === 3;
        else if (n === 4 || n === 24) style.underline = n === 4;
        else if (n === 7 || n === 27) style.inverse = n === 7;
        else if (n === 9 || n === 29) style.strike = n === 9;
        else if (n === 39) style.fg = '';
        else if (n === 49) style.bg = '';
        else if (n === 38 || n === 48) {
          const len = params[p + 1] === 5 ? 2 : 4;
          const value = params.slice(p, p + 1 + len).join(';');
          if (n === 38) style.fg = value;
          else style.bg = value;
          p += len;
        } else if ((n >= 30 && n <= 37) || (n >= 90 && n <= 97)) style.fg = String(n);
        else if ((n >= 40 && n <= 47) || (n >= 100 && n <= 107)) style.bg = String(n);
        else throw new Error(`an SGR code this test does not know: ${n}`);
      }
      i = sgr.lastIndex;
      continue;
    }
    const char = String.fromCodePoint(line.codePointAt(i) as number);
    out.push({ char, style: { ...style } });
    i += char.length;
  }
  const plain = JSON.stringify(PLAIN);
  while (out.length > 0 && out.at(-1)?.char === ' ' && JSON.stringify(out.at(-1)?.style) === plain) out.pop();
  return out.map((c) => `${c.char} ${JSON.stringify(c.style)}`);
}

const asCells = (frame: string) => frame.split('\n').map(cells);

test('the line path is in Ink', (t) => {
  t.is(lineOutputState(), 'installed');
});

const scenarios: [string, number, number, string[], ClusterHealth?][] = [
  ['Instances at 80×24, selection on the second row', 80, 24, ['j']],
  ['Instances at 200×50, sorted by age, reversed', 200, 50, ['A', 'A']],
  ['Replicas, a failed one red', 120, 30, [':rep\r', 'G']],
  ['the help pane', 100, 24, ['?']],
  ['describe', 100, 30, ['d']],
  ['a filter being typed', 100, 24, ['/', 'we']],
  ['the delete question', 100, 24, ['j', '\u0004']],
  [
    'the banner over dimmed rows',
    100,
    24,
    [],
    { synced: true, connected: false, attempts: 2, error: 'connect ECONNREFUSED' },
  ],
];

for (const [what, columns, rows, keys, health] of scenarios) {
  test.serial(`the same screen as Ink's composition: ${what}`, async (t) => {
    const ink = await screen(false, columns, rows, keys, health);
    const before = { ...lineOutputCounts };
    const lines = await screen(true, columns, rows, keys, health);
    t.is(lineOutputCounts.ink, before.ink, 'every frame joined as lines');
    t.true(lineOutputCounts.lines > before.lines);
    t.true(ink.includes(`${ESC}[`), 'the frame has styles to compare');
    t.deepEqual(asCells(lines), asCells(ink));
  });
}

test('frames Ink must compose itself are left to it', (t) => {
  const write = (x: number, y: number, text: string) => ({ type: 'write', x, y, text, transformers: [] });
  t.is(lineFrame([write(0, 0, 'a'), write(0, 1, 'b')], 3), 'a\nb\n');
  t.is(lineFrame([write(1, 0, 'a')], 2), undefined, 'not at column 0');
  t.is(lineFrame([write(0, 0, 'a\nb')], 2), undefined, 'several lines');
  t.is(lineFrame([write(0, 0, 'ab'), write(0, 0, 'c')], 2), undefined, 'two on one line');
  t.is(lineFrame([{ type: 'clip' }, write(0, 0, 'a'), { type: 'unclip' }], 2), undefined, 'a clip');
  t.is(lineFrame([write(0, 0, 'a\u200b')], 1), undefined, 'a character Ink drops');
  t.is(lineFrame([write(0, 5, 'a'), write(0, 0, 'b  ')], 2), 'b\n', 'outside the frame, trailing blanks');
  t.is(
    lineFrame([write(0, 0, `${ESC}[31mred`), write(0, 1, 'plain')], 2),
    `${ESC}[31mred${ESC}[0m\nplain`,
    'a style the text left open is closed at the end of its line, as Ink does',
  );
  const upper = (line: string) => line.toUpperCase();
  t.is(
    lineFrame([{ type: 'write', x: 0, y: 0, text: 'ab', transformers: [upper, (l: string) => `[${l}]`] }], 1),
    '[AB]',
    "the Text's transforms, innermost first",
  );
});

test.serial('a box beside another, a border: composed by Ink as before', async (t) => {
  const before = lineOutputCounts.ink;
  const stdout = new FakeStdout(40, 10);
  const app = render(
    h(
      Box,
      { width: 40 },
      h(Box, { borderStyle: 'single', width: 10 }, h(Text, null, 'left')),
      h(Text, { color: 'red' }, 'right'),
    ),
    { stdout: stdout as unknown as NodeJS.WriteStream, debug: true, patchConsole: false },
  );
  await sleep(50);
  app.unmount();
  const frame = stdout.frames.find((f) => f.includes('right')) ?? '';
  t.true(frame.startsWith(`┌────────┐${ESC}[31mright`));
  t.regex(frame, /\n│left {4}│\n└────────┘/);
  t.true(lineOutputCounts.ink > before, 'left to Ink');
});
