// What the user is doing, as a value: the stack of views opened with `enter`, the prompt or pane
// that is open, the namespace. reduce() takes one key name (keys.ts) and returns the next state
// and the effects for the app to carry out (quit, delete, restart, scale, switch namespace). It is pure:
// tests drive it with key names and rows, without a terminal or an API server.

import type { LogTarget } from './logs.ts';
import {
  type Column,
  columnForSortKey,
  compileFilter,
  nextSortOrder,
  type Row,
  type SortOrder,
  scrollOffset,
  selectedIndex,
} from './table.ts';
import { type Drill, type KindId, type Scope, VIEWS, type ViewId, viewByAlias } from './views.ts';

export interface Frame {
  readonly view: ViewId;
  readonly scope?: Scope | undefined;
  /** The text typed after `/`. */
  readonly filter: string;
  readonly sort: SortOrder;
  /** The selected row's key; the index is where it was, for when it goes away. */
  readonly selectedKey?: string | undefined;
  readonly selectedIndex: number;
  /** The first row shown. */
  readonly offset: number;
}

/** An object a key acts on. */
export interface Target {
  readonly view: ViewId;
  readonly kind: KindId;
  readonly key: string;
}

export type Mode =
  | { readonly name: 'table' }
  | { readonly name: 'command'; readonly input: string }
  | { readonly name: 'filter'; readonly input: string }
  | { readonly name: 'help'; readonly offset: number }
  | { readonly name: 'describe'; readonly target: Target; readonly offset: number }
  | { readonly name: 'confirm-delete'; readonly target: Target }
  /** `r`: restart a Replica (its `target.key`), after a question only `y` answers. */
  | { readonly name: 'confirm-restart'; readonly target: Target }
  | { readonly name: 'scale'; readonly target: Target; readonly input: string }
  | {
      readonly name: 'logs';
      readonly target: LogTarget;
      /** The run before the current one (read once), else the current one, followed. */
      readonly previous: boolean;
      /** The newest lines stay in view; off: paused, `top` is the first line shown. */
      readonly follow: boolean;
      readonly top: number;
      readonly wrap: boolean;
    };

export interface Flash {
  readonly text: string;
  readonly error: boolean;
}

export interface UiState {
  /** Never empty: the view `:` opened, then one frame per `enter`. */
  readonly stack: readonly Frame[];
  readonly mode: Mode;
  /** The namespace shown; undefined for all. */
  readonly namespace: string | undefined;
  readonly readonly: boolean;
  /** A one-line message under the table until the next key. */
  readonly flash?: Flash | undefined;
}

export type Effect =
  | { readonly kind: 'quit' }
  | { readonly kind: 'delete'; readonly target: Target }
  | { readonly kind: 'restart'; readonly target: Target }
  | { readonly kind: 'scale'; readonly target: Target; readonly replicas: number }
  | { readonly kind: 'namespace'; readonly namespace: string | undefined }
  | { readonly kind: 'logs'; readonly target: LogTarget; readonly previous: boolean }
  | { readonly kind: 'logs-close' };

/** What the reducer needs to know of the screen as it is drawn. */
export interface KeyContext {
  /** The top frame's rows, filtered and sorted as shown. */
  readonly rows: readonly Row[];
  /** The top frame's columns. */
  readonly columns: readonly Column[];
  /** Table rows (or pane lines) that fit on one page. */
  readonly pageSize: number;
  /** Lines of the open pane (describe or help), for scrolling it. */
  readonly paneLines: number;
  /** Where `enter` on a row goes (from the view's drill and the cache). */
  readonly drill: (key: string) => Drill | undefined;
  /** The open log's line numbers: the oldest kept, and one past the newest. */
  readonly log?: { readonly first: number; readonly end: number } | undefined;
}

export interface Reduced {
  readonly state: UiState;
  readonly effects: readonly Effect[];
}

export function frameFor(view: ViewId, allNamespaces: boolean, scope?: Scope): Frame {
  return {
    view,
    scope,
    filter: '',
    sort: VIEWS[view].defaultSort(allNamespaces),
    selectedIndex: 0,
    offset: 0,
  };
}

export function initialState(opts: {
  view?: ViewId;
  namespace: string | undefined;
  readonly?: boolean;
}): UiState {
  return {
    stack: [frameFor(opts.view ?? 'inst', opts.namespace === undefined)],
    mode: { name: 'table' },
    namespace: opts.namespace,
    readonly: opts.readonly ?? false,
  };
}

export function topFrame(state: UiState): Frame {
  return state.stack[state.stack.length - 1] as Frame;
}

const QUIET: readonly Effect[] = [];

function withTop(state: UiState, change: Partial<Frame>): UiState {
  return { ...state, stack: [...state.stack.slice(0, -1), { ...topFrame(state), ...change }] };
}

function done(state: UiState, ...effects: Effect[]): Reduced {
  return { state, effects: effects.length > 0 ? effects : QUIET };
}

function flash(state: UiState, text: string, error = false): Reduced {
  return done({ ...state, flash: { text, error } });
}

/** The row selected now, as drawn. */
export function selectedRow(state: UiState, rows: readonly Row[]): Row | undefined {
  const frame = topFrame(state);
  return rows[selectedIndex(rows, frame.selectedKey, frame.selectedIndex)];
}

/** Move the selection to `index` (clamped), scrolling only as far as needed. */
function select(state: UiState, ctx: KeyContext, index: number): UiState {
  const frame = topFrame(state);
  const total = ctx.rows.length;
  const i = Math.min(Math.max(0, index), Math.max(0, total - 1));
  return withTop(state, {
    selectedIndex: i,
    selectedKey: ctx.rows[i]?.key,
    offset: scrollOffset(frame.offset, i, ctx.pageSize, total),
  });
}

/** The next offset of a pane of `lines` lines scrolled by `key`, or undefined when the key does not scroll. */
function scrollPane(key: string, offset: number, lines: number, page: number): number | undefined {
  const last = Math.max(0, lines - page);
  let next: number;
  if (key === 'j' || key === 'down') next = offset + 1;
  else if (key === 'k' || key === 'up') next = offset - 1;
  else if (key === 'pagedown' || key === 'ctrl+f' || key === ' ') next = offset + page;
  else if (key === 'pageup' || key === 'ctrl+b') next = offset - page;
  else if (key === 'g' || key === 'home') next = 0;
  else if (key === 'G' || key === 'end') next = last;
  else return undefined;
  return Math.min(Math.max(0, next), last);
}

/** The names keyName() gives keys that type nothing. */
const NAMED_KEYS = new Set([
  'up',
  'down',
  'left',
  'right',
  'pageup',
  'pagedown',
  'home',
  'end',
  'enter',
  'esc',
  'tab',
  'backspace',
]);

/** Printable text a prompt takes: single characters and pastes, without control characters. */
function printable(key: string): string | undefined {
  if (NAMED_KEYS.has(key) || key.startsWith('ctrl+') || key.startsWith('meta+')) return undefined;
  const text = key.replace(/\p{Cc}/gu, '');
  return text.length > 0 ? text : undefined;
}

/** Edit a prompt's input; undefined when the key is not an edit. */
function edit(input: string, key: string): string | undefined {
  if (key === 'backspace') return [...input].slice(0, -1).join('');
  if (key === 'ctrl+u') return '';
  const text = printable(key);
  return text === undefined ? undefined : input + text;
}

export function reduce(state: UiState, key: string, ctx: KeyContext): Reduced {
  if (key === 'ctrl+c') return done(state, { kind: 'quit' });
  const s = state.flash ? { ...state, flash: undefined } : state;
  switch (s.mode.name) {
    case 'table':
      return tableKey(s, key, ctx);
    case 'command':
      return commandKey(s, s.mode.input, key);
    case 'filter':
      return filterKey(s, s.mode.input, key);
    case 'help':
    case 'describe': {
      if (key === 'esc' || key === 'q' || (key === '?' && s.mode.name === 'help')) {
        return done({ ...s, mode: { name: 'table' } });
      }
      const offset = scrollPane(key, s.mode.offset, ctx.paneLines, ctx.pageSize);
      return offset === undefined ? done(s) : done({ ...s, mode: { ...s.mode, offset } });
    }
    case 'confirm-delete':
      if (key === 'y' || key === 'Y') {
        return done({ ...s, mode: { name: 'table' } }, { kind: 'delete', target: s.mode.target });
      }
      return flash({ ...s, mode: { name: 'table' } }, 'delete cancelled');
    case 'confirm-restart':
      if (key === 'y' || key === 'Y') {
        return done({ ...s, mode: { name: 'table' } }, { kind: 'restart', target: s.mode.target });
      }
      return flash({ ...s, mode: { name: 'table' } }, 'restart cancelled');
    case 'scale':
      return scaleKey(s, s.mode.target, s.mode.input, key);
    case 'logs':
      return logsKey(s, s.mode, key, ctx);
  }
}

type LogsMode = Extract<Mode, { name: 'logs' }>;

/** The log pane: esc/q close, f follow or pause, w wrap, p the previous run (again: the current), scrolling pauses, G follows. */
function logsKey(state: UiState, mode: LogsMode, key: string, ctx: KeyContext): Reduced {
  const first = ctx.log?.first ?? 0;
  const end = ctx.log?.end ?? 0;
  const page = Math.max(1, ctx.pageSize);
  const lastTop = Math.max(first, end - page);
  // Where the pane is now: following shows the last page.
  const top = mode.follow ? lastTop : Math.min(Math.max(mode.top, first), lastTop);
  const set = (change: Partial<LogsMode>) => done({ ...state, mode: { ...mode, ...change } });
  switch (key) {
    case 'esc':
    case 'q':
      return done({ ...state, mode: { name: 'table' } }, { kind: 'logs-close' });
    case 'f':
      return set(mode.follow ? { follow: false, top } : { follow: true });
    case 'w':
      return set({ wrap: !mode.wrap });
    case 'p': {
      const previous = !mode.previous;
      return done(
        { ...state, mode: { ...mode, previous, follow: true, top: 0 } },
        { kind: 'logs', target: mode.target, previous },
      );
    }
    case 'G':
    case 'end':
      return set({ follow: true });
  }
  const next = scrollPane(key, top - first, end - first, page);
  if (next === undefined) return done(state);
  return set({ follow: false, top: first + next });
}

function tableKey(state: UiState, key: string, ctx: KeyContext): Reduced {
  const frame = topFrame(state);
  const view = VIEWS[frame.view];
  const index = selectedIndex(ctx.rows, frame.selectedKey, frame.selectedIndex);
  const row = ctx.rows[index];
  switch (key) {
    case 'j':
    case 'down':
      return done(select(state, ctx, index + 1));
    case 'k':
    case 'up':
      return done(select(state, ctx, index - 1));
    case 'pagedown':
    case 'ctrl+f':
      return done(select(state, ctx, index + ctx.pageSize));
    case 'pageup':
    case 'ctrl+b':
      return done(select(state, ctx, index - ctx.pageSize));
    case 'g':
    case 'home':
      return done(select(state, ctx, 0));
    case 'G':
    case 'end':
      return done(select(state, ctx, ctx.rows.length - 1));
    case 'q':
      return done(state, { kind: 'quit' });
    case '?':
      return done({ ...state, mode: { name: 'help', offset: 0 } });
    case ':':
      return done({ ...state, mode: { name: 'command', input: '' } });
    case '/':
      // A new filter, as less and k9s start one; it applies as it is typed.
      return done(withTop({ ...state, mode: { name: 'filter', input: '' } }, { filter: '' }));
    case 'esc':
      if (frame.filter !== '') return done(withTop(state, { filter: '' }));
      if (state.stack.length > 1) return done({ ...state, stack: state.stack.slice(0, -1) });
      return done(state);
    case 'enter': {
      if (!row || !view.drill) return done(state);
      const drill = ctx.drill(row.key);
      if (!drill) return done(state);
      const next = frameFor(drill.view, state.namespace === undefined, drill.scope);
      return done({ ...state, stack: [...state.stack, next] });
    }
    case 'd':
      if (!row || !view.kind) return done(state);
      return done({
        ...state,
        mode: { name: 'describe', target: { view: view.id, kind: view.kind, key: row.key }, offset: 0 },
      });
    case 's':
      if (!view.scalable || !view.kind || !row) return done(state);
      if (state.readonly) return flash(state, 'read-only: scaling is off (started with --readonly)', true);
      return done({
        ...state,
        mode: { name: 'scale', target: { view: view.id, kind: view.kind, key: row.key }, input: '' },
      });
    case 'l': {
      const target = logTarget(frame.scope, view.id, row?.key);
      if (!target) return done(state);
      return done(
        { ...state, mode: { name: 'logs', target, previous: false, follow: true, top: 0, wrap: false } },
        { kind: 'logs', target, previous: false },
      );
    }
    case 'r': {
      const target = restartTarget(frame.scope, view.id, row?.key);
      if (!target) return done(state);
      if (state.readonly) return flash(state, 'read-only: restarting is off (started with --readonly)', true);
      return done({ ...state, mode: { name: 'confirm-restart', target } });
    }
    case 'ctrl+d':
      if (!view.kind || !row) return done(state);
      if (state.readonly) return flash(state, 'read-only: deleting is off (started with --readonly)', true);
      return done({
        ...state,
        mode: { name: 'confirm-delete', target: { view: view.id, kind: view.kind, key: row.key } },
      });
  }
  if (/^[A-Z]$/.test(key)) {
    const column = columnForSortKey(ctx.columns, key);
    if (!column) return flash(state, `no column sorts with Shift+${key} here`, true);
    return done(withTop(state, { sort: nextSortOrder(frame.sort, column) }));
  }
  return done(state);
}

/** Whose log `l` opens: a Replica's first process, or the process selected in a Replica's processes. */
function logTarget(scope: Scope | undefined, view: ViewId, key: string | undefined): LogTarget | undefined {
  if (key === undefined) return undefined;
  if (view === 'rep') {
    const [namespace = '', replica = ''] = key.split('/');
    return namespace && replica ? { namespace, replica } : undefined;
  }
  if (view === 'proc' && scope?.by === 'replica') {
    return { namespace: scope.namespace, replica: scope.name, process: key };
  }
  return undefined;
}

/** Which Replica `r` restarts: the one selected (Replicas), or the one whose processes are shown. */
function restartTarget(scope: Scope | undefined, view: ViewId, key: string | undefined): Target | undefined {
  if (view === 'rep' && key !== undefined) return { view: 'rep', kind: 'replicas', key };
  if (view === 'proc' && scope?.by === 'replica') {
    return { view: 'rep', kind: 'replicas', key: `${scope.namespace}/${scope.name}` };
  }
  return undefined;
}

function commandKey(state: UiState, input: string, key: string): Reduced {
  if (key === 'esc') return done({ ...state, mode: { name: 'table' } });
  if (key === 'enter') return runCommand({ ...state, mode: { name: 'table' } }, input.trim());
  if (key === 'backspace' && input === '') return done({ ...state, mode: { name: 'table' } });
  const next = edit(input, key);
  return next === undefined ? done(state) : done({ ...state, mode: { name: 'command', input: next } });
}

/** `:inst`, `:rep`, `:svc`, `:host`, `:ev` (and their long names), `:ns NAME`, `:ns all`, `:q`. */
export function runCommand(state: UiState, text: string): Reduced {
  if (text === '') return done(state);
  const [word = '', ...args] = text.split(/\s+/);
  const name = word.toLowerCase();
  if (name === 'q' || name === 'q!' || name === 'quit') return done(state, { kind: 'quit' });
  if (name === 'ns' || name === 'namespace') {
    const target = args[0];
    if (target === undefined) return flash(state, 'usage: :ns NAME, or :ns all', true);
    const namespace = target === 'all' || target === '-A' || target === '*' ? undefined : target;
    if (namespace !== undefined && !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) {
      return flash(state, `not a namespace name: '${namespace}'`, true);
    }
    const all = namespace === undefined;
    const root = state.stack[0] as Frame;
    const view = VIEWS[root.view];
    return done(
      { ...state, namespace, stack: [frameFor(view.id, all)] },
      ...(namespace === state.namespace ? [] : [{ kind: 'namespace', namespace } as const]),
    );
  }
  const view = viewByAlias(name);
  if (!view) return flash(state, `no view '${word}': try :inst :rep :svc :ep :host :ev :ns`, true);
  return done({ ...state, stack: [frameFor(view.id, state.namespace === undefined)] });
}

function filterKey(state: UiState, input: string, key: string): Reduced {
  if (key === 'esc') return done(withTop({ ...state, mode: { name: 'table' } }, { filter: '' }));
  if (key === 'enter') {
    const error = compileFilter(input).error;
    const next = withTop({ ...state, mode: { name: 'table' } }, { filter: input });
    return error ? flash(next, error, true) : done(next);
  }
  const next = edit(input, key);
  if (next === undefined) return done(state);
  // The rows follow the filter as it is typed.
  return done(withTop({ ...state, mode: { name: 'filter', input: next } }, { filter: next }));
}

function scaleKey(state: UiState, target: Target, input: string, key: string): Reduced {
  if (key === 'esc') return flash({ ...state, mode: { name: 'table' } }, 'scale cancelled');
  if (key === 'enter') {
    if (!/^\d+$/.test(input))
      return flash({ ...state, mode: { name: 'table' } }, `not a number of replicas: '${input}'`, true);
    return done({ ...state, mode: { name: 'table' } }, { kind: 'scale', target, replicas: Number(input) });
  }
  const next = edit(input, key);
  if (next === undefined) return done(state);
  if (!/^\d{0,6}$/.test(next)) return done(state); // digits only
  return done({ ...state, mode: { name: 'scale', target, input: next } });
}
