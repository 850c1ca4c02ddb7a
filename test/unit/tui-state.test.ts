// The TUI's keys (tui/model/state.ts, keys.ts) as a pure reducer: key names in, the next state and
// the effects out, with no terminal and no API server.
import test from 'ava';
import { shortError } from '../../tui/model/cluster.ts';
import { keyName, keyNames } from '../../tui/model/keys.ts';
import {
  type Effect,
  initialState,
  type KeyContext,
  reduce,
  selectedRow,
  topFrame,
  type UiState,
} from '../../tui/model/state.ts';
import type { Row } from '../../tui/model/table.ts';
import { type Drill, VIEWS } from '../../tui/model/views.ts';

const rowsOf = (n: number): Row[] =>
  Array.from({ length: n }, (_, i) => ({
    key: `default/web-${i}`,
    cells: [`web-${i}`],
    sortValues: [`web-${i}`],
  }));

function ctx(rows: Row[], extra: Partial<KeyContext> = {}): KeyContext {
  const view = VIEWS.inst;
  return {
    rows,
    columns: view.columns(false),
    pageSize: 10,
    paneLines: 0,
    drill: (key): Drill => ({
      view: 'rep',
      scope: { by: 'instance', namespace: 'default', name: key.split('/')[1] ?? '' },
    }),
    ...extra,
  };
}

/** Press the keys in order; returns the last state and every effect. */
function press(state: UiState, keys: string[], c: KeyContext): { state: UiState; effects: Effect[] } {
  const effects: Effect[] = [];
  for (const key of keys) {
    const r = reduce(state, key, c);
    state = r.state;
    effects.push(...r.effects);
  }
  return { state, effects };
}

const start = (opts: { readonly?: boolean; namespace?: string | undefined } = {}) =>
  initialState({
    namespace: 'namespace' in opts ? opts.namespace : 'default',
    readonly: opts.readonly ?? false,
  });

test('j, k, arrows, pages, g and G move the selection and scroll only as needed', (t) => {
  const c = ctx(rowsOf(35));
  const at = (keys: string[]) => {
    const s = press(start(), keys, c).state;
    return { key: selectedRow(s, c.rows)?.key, offset: topFrame(s).offset };
  };
  t.deepEqual(at([]), { key: 'default/web-0', offset: 0 });
  t.deepEqual(at(['j', 'j', 'down']), { key: 'default/web-3', offset: 0 });
  t.deepEqual(at(['j', 'k', 'up', 'k']), { key: 'default/web-0', offset: 0 }, 'never above the first');
  t.deepEqual(at(['pagedown']), { key: 'default/web-10', offset: 1 });
  t.deepEqual(at(['pagedown', 'pagedown', 'pageup']), { key: 'default/web-10', offset: 10 });
  t.deepEqual(at(['G']), { key: 'default/web-34', offset: 25 });
  t.deepEqual(at(['end', 'j']), { key: 'default/web-34', offset: 25 }, 'never below the last');
  t.deepEqual(at(['G', 'g']), { key: 'default/web-0', offset: 0 });
  t.deepEqual(at(['ctrl+f', 'home']), { key: 'default/web-0', offset: 0 });
});

test('the selection stays on its object when rows come and go', (t) => {
  const s = press(start(), ['j', 'j'], ctx(rowsOf(5))).state;
  t.is(selectedRow(s, rowsOf(5))?.key, 'default/web-2');
  const fewer = rowsOf(5).filter((r) => r.key !== 'default/web-0');
  t.is(selectedRow(s, fewer)?.key, 'default/web-2', 'a row above it went away');
  const without = rowsOf(5).filter((r) => r.key !== 'default/web-2');
  t.is(selectedRow(s, without)?.key, 'default/web-3', 'it went away: the row now at its place');
});

test('enter drills down; esc clears the filter first, then goes back; the root stays', (t) => {
  const c = ctx(rowsOf(3));
  let s = press(start(), ['j', 'enter'], c).state;
  t.is(s.stack.length, 2);
  t.is(topFrame(s).view, 'rep');
  t.deepEqual(topFrame(s).scope, { by: 'instance', namespace: 'default', name: 'web-1' });
  s = press(s, ['/', 'x', 'enter'], c).state;
  t.is(topFrame(s).filter, 'x');
  s = press(s, ['esc'], c).state;
  t.is(topFrame(s).filter, '', 'first esc: the filter');
  t.is(s.stack.length, 2);
  s = press(s, ['esc'], c).state;
  t.is(s.stack.length, 1, 'second esc: back');
  t.is(selectedRow(s, c.rows)?.key, 'default/web-1', 'where it was');
  t.is(press(s, ['esc', 'esc'], c).state.stack.length, 1);
  const noDrill = ctx(rowsOf(3), { drill: () => undefined });
  t.is(press(start(), ['enter'], noDrill).state.stack.length, 1, 'nothing to open: nothing happens');
});

test('/ filters as it is typed; enter keeps it, esc drops it; backspace and pastes edit it', (t) => {
  const c = ctx(rowsOf(3));
  let s = press(start(), ['/', 'w', 'e', 'b'], c).state;
  t.deepEqual(s.mode, { name: 'filter', input: 'web' });
  t.is(topFrame(s).filter, 'web', 'live');
  s = press(s, ['backspace', 'x-[0-9]'], c).state;
  t.is(topFrame(s).filter, 'wex-[0-9]');
  s = press(s, ['enter'], c).state;
  t.deepEqual(s.mode, { name: 'table' });
  t.is(topFrame(s).filter, 'wex-[0-9]');
  t.is(topFrame(press(s, ['/', 'a'], c).state).filter, 'a', '/ starts a new filter');
  t.is(press(s, ['/', 'q', 'esc'], c).state.stack[0]?.filter, '', 'esc in the prompt: no filter');
  const broken = press(start(), ['/', '(', 'enter'], c).state;
  t.is(broken.flash?.error, true, 'a broken expression is said');
  t.is(topFrame(broken).filter, '(');
  t.is(press(broken, ['j'], c).state.flash, undefined, 'a message lasts until the next key');
});

test(': switches views and namespaces; a bad command says what exists', (t) => {
  const c = ctx(rowsOf(3));
  const deep = press(start(), ['enter'], c).state;
  for (const [command, view] of [
    ['inst', 'inst'],
    ['rep', 'rep'],
    ['svc', 'svc'],
    ['osvc', 'svc'],
    ['host', 'host'],
    ['ev', 'ev'],
    ['events', 'ev'],
  ] as const) {
    const s = press(deep, [':', ...command, 'enter'], c).state;
    t.is(s.stack.length, 1, `:${command} starts from its view`);
    t.is(topFrame(s).view, view, `:${command}`);
    t.deepEqual(s.mode, { name: 'table' });
  }
  const ns = press(start(), [':', 'n', 's', ' ', 'k', 'u', 'b', 'e', 'enter'], c);
  t.is(ns.state.namespace, 'kube');
  t.deepEqual(ns.effects, [{ kind: 'namespace', namespace: 'kube' }]);
  const all = press(ns.state, [':', 'ns all', 'enter'], c);
  t.is(all.state.namespace, undefined);
  t.deepEqual(all.effects, [{ kind: 'namespace', namespace: undefined }]);
  t.is(topFrame(all.state).sort.column, 'NAMESPACE', 'all namespaces sort by namespace');
  t.deepEqual(
    press(start(), [':', 'ns default', 'enter'], c).effects,
    [],
    'the same namespace: nothing to do',
  );
  t.regex(press(start(), [':', 'ns Bad_Name', 'enter'], c).state.flash?.text ?? '', /not a namespace name/);
  t.regex(press(start(), [':', 'pods', 'enter'], c).state.flash?.text ?? '', /no view 'pods': try :inst/);
  t.deepEqual(press(start(), [':', 'q', 'enter'], c).effects, [{ kind: 'quit' }]);
  t.deepEqual(
    press(start(), [':', 'backspace'], c).state.mode,
    { name: 'table' },
    'backspace on empty closes',
  );
});

test('Shift+letter sorts by that column, again reverses; an unknown letter is said', (t) => {
  const c = ctx(rowsOf(3));
  let s = press(start(), ['R'], c).state;
  t.deepEqual(topFrame(s).sort, { column: 'READY', descending: false });
  s = press(s, ['R'], c).state;
  t.deepEqual(topFrame(s).sort, { column: 'READY', descending: true });
  s = press(s, ['A'], c).state;
  t.deepEqual(topFrame(s).sort, { column: 'AGE', descending: false });
  t.regex(press(start(), ['Z'], c).state.flash?.text ?? '', /no column sorts with Shift\+Z/);
});

test('ctrl-d asks first; only y deletes', (t) => {
  const c = ctx(rowsOf(3));
  const asked = press(start(), ['j', 'ctrl+d'], c);
  t.deepEqual(asked.state.mode, {
    name: 'confirm-delete',
    target: { view: 'inst', kind: 'instances', key: 'default/web-1' },
  });
  t.deepEqual(asked.effects, []);
  t.deepEqual(press(asked.state, ['y'], c).effects, [
    { kind: 'delete', target: { view: 'inst', kind: 'instances', key: 'default/web-1' } },
  ]);
  const cancelled = press(asked.state, ['n'], c);
  t.deepEqual(cancelled.effects, []);
  t.deepEqual(cancelled.state.mode, { name: 'table' });
  t.deepEqual(press(asked.state, ['enter'], c).effects, [], 'enter is not a yes');
  t.deepEqual(press(start(), ['ctrl+d'], ctx([])).state.mode, { name: 'table' }, 'no row: nothing to delete');
});

test('r asks first, then restarts the Replica selected, or the one whose processes are shown; only y restarts', (t) => {
  const c = ctx(rowsOf(3));
  const onReplicas = press(start(), [':', 'rep', 'enter', 'j', 'r'], c);
  const target = { view: 'rep', kind: 'replicas', key: 'default/web-1' };
  t.deepEqual(onReplicas.state.mode, { name: 'confirm-restart', target });
  t.deepEqual(onReplicas.effects, [], 'nothing before the answer');
  t.deepEqual(press(onReplicas.state, ['y'], c).effects, [{ kind: 'restart', target }]);
  t.deepEqual(press(onReplicas.state, ['Y'], c).effects, [{ kind: 'restart', target }]);
  for (const no of ['n', 'enter', 'esc', 'r']) {
    const cancelled = press(onReplicas.state, [no], c);
    t.deepEqual(cancelled.effects, [], `${no} is not a yes`);
    t.deepEqual(cancelled.state.mode, { name: 'table' });
    t.is(cancelled.state.flash?.text, 'restart cancelled');
  }
  // In a Replica's processes, whichever process is selected: the Replica.
  const procs = ctx(rowsOf(2), {
    drill: (): Drill => ({ view: 'proc', scope: { by: 'replica', namespace: 'ns1', name: 'db-0' } }),
  });
  const inProcs = press(start(), [':', 'rep', 'enter', 'enter', 'j', 'r', 'y'], procs);
  t.is(topFrame(inProcs.state).view, 'proc');
  t.deepEqual(inProcs.effects, [
    { kind: 'restart', target: { view: 'rep', kind: 'replicas', key: 'ns1/db-0' } },
  ]);
  // Nothing to restart elsewhere, or without a row.
  t.deepEqual(press(start(), ['r'], c).state.mode, { name: 'table' }, 'Instances do not restart');
  t.deepEqual(press(start(), [':', 'svc', 'enter', 'r'], c).state.mode, { name: 'table' });
  t.deepEqual(press(start(), [':', 'rep', 'enter', 'r'], ctx([])).state.mode, { name: 'table' }, 'no row');
});

test('s asks for a number of replicas, digits only', (t) => {
  const c = ctx(rowsOf(3));
  const asked = press(start(), ['s'], c).state;
  t.is(asked.mode.name, 'scale');
  const scaled = press(asked, ['1', 'x', '2', 'enter'], c);
  t.deepEqual(scaled.effects, [
    { kind: 'scale', target: { view: 'inst', kind: 'instances', key: 'default/web-0' }, replicas: 12 },
  ]);
  t.deepEqual(press(asked, ['enter'], c).effects, [], 'no number: nothing');
  t.deepEqual(press(asked, ['3', 'esc'], c).effects, []);
  const onReplicas = press(start(), [':', 'rep', 'enter', 's'], c).state;
  t.deepEqual(onReplicas.mode, { name: 'table' }, 'only Instances scale');
});

test('--readonly: no delete, no scale, no restart, and the reason is said', (t) => {
  const c = ctx(rowsOf(3));
  for (const keys of [['ctrl+d'], ['s'], [':', 'rep', 'enter', 'r']]) {
    const r = press(start({ readonly: true }), keys, c);
    t.deepEqual(r.state.mode, { name: 'table' });
    t.deepEqual(r.effects, []);
    t.regex(r.state.flash?.text ?? '', /^read-only: .* is off/);
  }
});

test('q quits from the table, ctrl-c from anywhere; in help and describe q and esc close', (t) => {
  const c = ctx(rowsOf(3), { paneLines: 40 });
  t.deepEqual(press(start(), ['q'], c).effects, [{ kind: 'quit' }]);
  t.deepEqual(press(start(), ['/', 'ctrl+c'], c).effects, [{ kind: 'quit' }]);
  t.deepEqual(press(start(), ['/', 'q'], c).effects, [], 'q is text in a prompt');
  const help = press(start(), ['?'], c).state;
  t.deepEqual(help.mode, { name: 'help', offset: 0 });
  t.deepEqual(press(help, ['j', 'j', 'pagedown'], c).state.mode, { name: 'help', offset: 12 });
  t.deepEqual(press(help, ['G'], c).state.mode, { name: 'help', offset: 30 });
  t.deepEqual(press(help, ['q'], c).state.mode, { name: 'table' });
  t.deepEqual(press(help, ['?'], c).state.mode, { name: 'table' });
  const described = press(start(), ['j', 'd'], c).state;
  t.deepEqual(described.mode, {
    name: 'describe',
    target: { view: 'inst', kind: 'instances', key: 'default/web-1' },
    offset: 0,
  });
  t.deepEqual(press(described, ['esc'], c).state.mode, { name: 'table' });
});

test('key names from what Ink reports, and chunks of typed text split into keys', (t) => {
  t.is(keyName('', { upArrow: true }), 'up');
  t.is(keyName('', { pageDown: true }), 'pagedown');
  t.is(keyName('', { return: true }), 'enter');
  t.is(keyName('', { escape: true }), 'esc');
  t.is(keyName('', { delete: true }), 'backspace');
  t.is(keyName('d', { ctrl: true }), 'ctrl+d');
  t.is(keyName('N', { shift: true } as never), 'N');
  t.deepEqual(keyNames(':svc\r', {}), [':', 's', 'v', 'c', 'enter']);
  t.deepEqual(keyNames('ab\u007f\u0004', {}), ['a', 'b', 'backspace', 'ctrl+d']);
  t.deepEqual(keyNames('j', {}), ['j']);
});

test('an API error in the banner without the request it came from', (t) => {
  t.is(
    shortError('watch /api/v1/namespaces/x/events?resourceVersion=5: connect ECONNREFUSED 127.0.0.1:6443'),
    'connect ECONNREFUSED 127.0.0.1:6443',
  );
  t.is(
    shortError(
      'GET /apis/orrery.dev/v1alpha1/hosts?limit=500 failed with HTTP 403 (Forbidden): hosts is forbidden',
    ),
    'HTTP 403 (Forbidden): hosts is forbidden',
  );
  t.is(shortError('socket hang up'), 'socket hang up');
});
