// What the screen shows for a UI state, as pure functions of the cluster's caches, the state and
// the time: the top view's columns and rows (filtered, sorted), the open pane's lines, and the
// context the reducer needs to take a key. The views call them while rendering; the key path
// calls them again for the second key of a chunk, whose screen was never drawn.
import { describeLines } from './describe.ts';
import { BINDINGS } from './keys.ts';
import type { ScreenLayout } from './screen.ts';
import { type KeyContext, topFrame, type UiState } from './state.ts';
import { type Column, compileFilter, type Row, sortRows } from './table.ts';
import { type ClusterReader, VIEWS } from './views.ts';

export interface FrameRows {
  readonly columns: readonly Column[];
  readonly rows: Row[];
}

/** The top view's columns, and its rows as shown: filtered and sorted. */
export function frameRows(cluster: ClusterReader, state: UiState, now: number): FrameRows {
  const frame = topFrame(state);
  const view = VIEWS[frame.view];
  const allNamespaces = state.namespace === undefined;
  const columns = view.columns(allNamespaces);
  const filter = compileFilter(frame.filter);
  const rows = view.rows(cluster, frame.scope, { now, allNamespaces }).filter(filter.test);
  return { columns, rows: sortRows(rows, columns, frame.sort) };
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
