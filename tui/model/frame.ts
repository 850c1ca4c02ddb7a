// What the screen shows for a UI state, as pure functions of the cluster's caches, the state and
// the time: the top view's columns and rows (filtered, sorted), the open pane's lines, and the
// context the reducer needs to take a key. The views call them while rendering; the key path
// calls them again for the second key of a chunk, whose screen was never drawn.

import type { KubeObject } from '../../kube/index.ts';
import { describeLines } from './describe.ts';
import { BINDINGS } from './keys.ts';
import type { ScreenLayout } from './screen.ts';
import { type KeyContext, topFrame, type UiState } from './state.ts';
import { type Column, compileFilter, type Row, sortRows } from './table.ts';
import { type ClusterReader, VIEWS } from './views.ts';

export interface FrameRows {
  readonly columns: readonly Column[];
  readonly rows: Row[];
  /**
   * The rows `from` to `to` read the time `at`; the others read an earlier one (their cells kept
   * from before, worked out again when they come on the page: `pageRows`). Absent: all read the
   * time they were worked out at.
   */
  readonly fresh?: { readonly at: number; readonly from: number; readonly to: number } | undefined;
}

/** The top view's columns, and its rows as shown: filtered and sorted. */
export function frameRows(cluster: ClusterReader, state: UiState, now: number): FrameRows {
  const frame = topFrame(state);
  const view = VIEWS[frame.view];
  const allNamespaces = state.namespace === undefined;
  const columns = view.columns(allNamespaces);
  const filter = compileFilter(frame.filter);
  const rows = view.rows(cluster, frame.scope, { now, allNamespaces }).filter(filter.test);
  return { columns, rows: sortRows(rows, columns, frame.sort), fresh: { at: now, from: 0, to: rows.length } };
}

/** Rows `start` to `end` of `rows`: the page of `height` rows from `offset`, cut to the rows there are. */
function pageBounds(rows: readonly Row[], offset: number, height: number): { start: number; end: number } {
  const end = Math.min(rows.length, offset + Math.max(0, height));
  return { start: Math.max(0, Math.min(offset, end)), end };
}

/**
 * The page's rows (`offset` to `offset + height`) worked out again at `now`, every other row of
 * `shown` kept as it is: for when only the time moved since `shown` was worked out for `state`
 * (the same caches, the same view, scope, filter, sort and namespace; the caller knows). The order
 * cannot change then: what depends on the time in a view of objects is its ages, whose sort
 * values all move by the same amount (tui-table.test.ts checks every column of those views).
 * Undefined when it cannot be done in place: with a filter (a cell's text decides which rows are
 * in), in the views whose rows are not one object each (a replica's processes, whose LAST EXIT
 * sorts by its text, and the endpoints), or when an object of the page is gone from the cache.
 */
export function pageRows(
  cluster: ClusterReader,
  state: UiState,
  shown: FrameRows,
  now: number,
  offset: number,
  height: number,
): FrameRows | undefined {
  const frame = topFrame(state);
  const view = VIEWS[frame.view];
  const kind = view.kind;
  if (kind === undefined || frame.filter.trim() !== '') return undefined;
  const { start, end } = pageBounds(shown.rows, offset, height);
  const objects: KubeObject[] = [];
  for (let i = start; i < end; i++) {
    const obj = cluster.get(kind, (shown.rows[i] as Row).key);
    if (!obj) return undefined;
    objects.push(obj);
  }
  // The view's own rows function, over a cache holding only the page's objects, in the page's order.
  const page: ClusterReader = {
    list: (k) => (k === kind ? (objects as never) : cluster.list(k)),
    get: (k, key) => cluster.get(k, key),
    eventsFor: (obj) => cluster.eventsFor(obj),
    usage: cluster.usage,
    mesh: cluster.mesh,
  };
  const built = view.rows(page, frame.scope, { now, allNamespaces: state.namespace === undefined });
  if (built.length !== end - start) return undefined;
  const rows = shown.rows.slice();
  for (let j = 0; j < built.length; j++) {
    const row = built[j] as Row;
    if (row.key !== (rows[start + j] as Row).key) return undefined;
    rows[start + j] = row;
  }
  return { columns: shown.columns, rows, fresh: { at: now, from: start, to: end } };
}

/**
 * `shown` with the page of rows `offset` to `offset + height` reading one time: as it is when
 * every row of the page was worked out at the last time (a key that moved within the page);
 * after a scroll that kept part of the page, with only the rows that came on it worked out, at
 * the time the rest of the page reads (so the page reads one time, as the clock's next tick
 * finds it, and the rows that stayed are the same rows: not drawn again); after a jump (`G`,
 * PgDn) with the page's rows worked out at `now`. All the rows when that cannot be done in place
 * (`pageRows`).
 */
export function freshPage(
  cluster: ClusterReader,
  state: UiState,
  shown: FrameRows,
  now: number,
  offset: number,
  height: number,
): FrameRows {
  const f = shown.fresh;
  const { start, end } = pageBounds(shown.rows, offset, height);
  if (!f || (start >= f.from && end <= f.to)) return shown;
  if (start < f.to && end > f.from) {
    // Scrolled: the rows before the fresh ones, and those after, at the time of the fresh ones.
    let rows = shown;
    if (start < f.from) {
      const before = pageRows(cluster, state, rows, f.at, start, f.from - start);
      if (!before) return frameRows(cluster, state, now);
      rows = before;
    }
    if (end > f.to) {
      const after = pageRows(cluster, state, rows, f.at, f.to, end - f.to);
      if (!after) return frameRows(cluster, state, now);
      rows = after;
    }
    return { ...rows, fresh: { at: f.at, from: Math.min(start, f.from), to: Math.max(end, f.to) } };
  }
  return pageRows(cluster, state, shown, now, offset, height) ?? frameRows(cluster, state, now);
}

/**
 * Whether the page of rows `offset` to `offset + height` reads differently in `next` than in
 * `shown`: another row, or a cell changed (an age that ticked). The clock asks it every second so
 * that a page whose ages did not change is not drawn again.
 */
export function pageChanged(shown: FrameRows, next: FrameRows, offset: number, height: number): boolean {
  if (shown.rows.length !== next.rows.length || shown.columns.length !== next.columns.length) return true;
  for (let c = 0; c < next.columns.length; c++)
    if (shown.columns[c]?.header !== next.columns[c]?.header) return true;
  const end = Math.min(next.rows.length, offset + height);
  for (let i = offset; i < end; i++) {
    const a = shown.rows[i] as Row;
    const b = next.rows[i] as Row;
    if (a.key !== b.key || a.tone !== b.tone || a.cells.length !== b.cells.length) return true;
    for (let c = 0; c < a.cells.length; c++) if (a.cells[c] !== b.cells[c]) return true;
  }
  return false;
}

/** The help pane: the bindings, then the sort letters of the view it was opened from. */
export function helpLines(columns: readonly Column[]): string[] {
  const lines: string[] = [];
  const keysWidth = Math.max(...BINDINGS.flatMap((g) => g.bindings.map((b) => b.keys.length)));
  for (const group of BINDINGS) {
    lines.push(group.title);
    for (const b of group.bindings) lines.push(`  ${b.keys.padEnd(keysWidth)}  ${b.does}`);
    lines.push('');
  }
  lines.push('Sort (this view)');
  // Several to a line, short enough for 80 columns.
  let line = '';
  for (const c of columns) {
    const item = `Shift+${c.sortKey} ${c.header}`;
    if (line && line.length + item.length > 70) {
      lines.push(`  ${line}`);
      line = '';
    }
    line = line ? `${line}   ${item}` : item;
  }
  if (line) lines.push(`  ${line}`);
  return lines;
}

/** The lines of the open pane (help, describe); none when the table shows. */
export function paneLines(
  cluster: ClusterReader,
  state: UiState,
  columns: readonly Column[],
  now: number,
): string[] {
  const mode = state.mode;
  if (mode.name === 'help') return helpLines(columns);
  if (mode.name !== 'describe') return [];
  const obj = cluster.get(mode.target.kind, mode.target.key);
  if (!obj) return [`${VIEWS[mode.target.view].noun} ${mode.target.key} is gone`];
  return describeLines(obj, cluster.eventsFor(obj), now);
}

export function paneOpen(state: UiState): boolean {
  return state.mode.name === 'help' || state.mode.name === 'describe' || state.mode.name === 'logs';
}

/** What reduce() needs to take a key in `state`, from what the screen shows. */
export function keyContext(
  cluster: ClusterReader,
  state: UiState,
  shown: FrameRows,
  pane: readonly string[],
  screen: ScreenLayout,
  log?: { readonly first: number; readonly end: number },
): KeyContext {
  const view = VIEWS[topFrame(state).view];
  return {
    rows: shown.rows,
    columns: shown.columns,
    pageSize: paneOpen(state) ? screen.paneRows : screen.bodyRows,
    paneLines: pane.length,
    drill: (key) => view.drill?.to(cluster, key),
    log,
  };
}
