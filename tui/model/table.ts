// The table every view is: columns, rows, and the pure operations on them that the keys drive
// (filter, sort, the visible window) and that the terminal's width drives (column layout).
// No React and no API here: tests drive these alone.
import { codePoints, fitWidth } from './format.ts';

export type Tone = 'error' | 'warn' | 'muted' | undefined;

export interface Column {
  /** Upper case, as kubectl and k9s print headers. */
  readonly header: string;
  /** Shift plus this letter sorts by the column (again: reverse). Never `G`, which is "bottom". */
  readonly sortKey: string;
  readonly align?: 'left' | 'right' | undefined;
  /** The column that takes the room left over, and gives it back first when the terminal is narrow. */
  readonly flex?: boolean | undefined;
  /** Narrow terminals drop columns with a higher number first; 0 (the default) is never dropped. */
  readonly dropOrder?: number | undefined;
  /** A cell is never cut below this width (default: the header's). */
  readonly minWidth?: number | undefined;
  /** Natural width is capped here (default 40). */
  readonly maxWidth?: number | undefined;
}

export interface Row {
  /** Unique in the view: `namespace/name` of the object, or the process name. */
  readonly key: string;
  readonly cells: readonly string[];
  /** Per column, what it sorts by: numbers for counts and ages, strings otherwise. */
  readonly sortValues: readonly (string | number)[];
  readonly tone?: Tone;
  /** The object's labels, for `/-l` filters. */
  readonly labels?: Readonly<Record<string, string>> | undefined;
}

export interface SortOrder {
  /** The column's header. */
  readonly column: string;
  readonly descending: boolean;
}

/** What a filter typed after `/` keeps; `error` says why the text was taken literally. */
export interface CompiledFilter {
  readonly test: (row: Row) => boolean;
  readonly error?: string | undefined;
}

/**
 * The filter typed after `/`: a regular expression matched, case-insensitive, against the whole
 * row (k9s does the same); `!` in front keeps the rows that do not match; `-l` takes a label
 * selector (`app=web,tier!=db,canary,!legacy`). A broken expression is matched as plain text,
 * with the reason in `error`.
 */
export function compileFilter(text: string): CompiledFilter {
  if (text.trim() === '' || text.trim() === '!') return { test: () => true };
  if (text.trimStart().startsWith('-l')) {
    const selector = parseLabelSelector(text.trimStart().slice(2).trim());
    if ('error' in selector) return { test: () => true, error: selector.error };
    return { test: (row) => selector.matches(row.labels ?? {}) };
  }
  // The pattern as typed: a space may be part of it (`^web `).
  const invert = text.startsWith('!');
  const pattern = invert ? text.slice(1) : text;
  let match: (line: string) => boolean;
  let error: string | undefined;
  try {
    const re = new RegExp(pattern, 'i');
    match = (line) => re.test(line);
  } catch (err) {
    error = `not a regular expression, matched as text: ${(err as Error).message}`;
    const needle = pattern.toLowerCase();
    match = (line) => line.toLowerCase().includes(needle);
  }
  return { test: (row) => match(row.cells.join(' ')) !== invert, error };
}

export interface LabelSelector {
  matches(labels: Readonly<Record<string, string>>): boolean;
}

/** Equality-based label selectors as kubectl takes them: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated. */
export function parseLabelSelector(text: string): LabelSelector | { error: string } {
  if (text === '') return { error: 'a label selector is expected after -l, e.g. -l app=web' };
  const terms: ((labels: Readonly<Record<string, string>>) => boolean)[] = [];
  for (const raw of text.split(',')) {
    const term = raw.trim();
    const m = /^(!?)([A-Za-z0-9._/-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*))?$/.exec(term);
    if (!m || (m[1] && m[3])) return { error: `not a label selector term: '${term}'` };
    const [, not, key = '', op, value = ''] = m;
    if (!op) terms.push(not ? (l) => !(key in l) : (l) => key in l);
    else if (op === '!=') terms.push((l) => l[key] !== value);
    else terms.push((l) => l[key] === value);
  }
  return { matches: (labels) => terms.every((t) => t(labels)) };
}

const isDigit = (c: number) => c >= 48 && c <= 57;
const foldCase = (c: number) => (c >= 65 && c <= 90 ? c + 32 : c);

/**
 * Natural order: a run of digits against a run of digits by its value (`web-2` before `web-10`,
 * `07` with `7`), anything else character by character with ASCII letters case-folded (`Web`
 * with `web`); equal that way, the plain code-point order decides, so the order is total. What
 * Intl.Collator's numeric order gives for names, numbers and reasons, without ICU's collation
 * tables (4 MiB of the node binary's pages resident, measured in bench/tui.bench.ts) or its cost
 * per comparison.
 */
export function naturalCompare(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(j);
    if (isDigit(ca) && isDigit(cb)) {
      // The runs without their leading zeros: the longer is the larger, else the first digit that differs.
      while (a.charCodeAt(i) === 48 && isDigit(a.charCodeAt(i + 1))) i++;
      while (b.charCodeAt(j) === 48 && isDigit(b.charCodeAt(j + 1))) j++;
      let ei = i;
      let ej = j;
      while (isDigit(a.charCodeAt(ei))) ei++;
      while (isDigit(b.charCodeAt(ej))) ej++;
      if (ei - i !== ej - j) return ei - i - (ej - j);
      for (; i < ei; i++, j++) {
        const d = a.charCodeAt(i) - b.charCodeAt(j);
        if (d !== 0) return d;
      }
      continue;
    }
    const d = foldCase(ca) - foldCase(cb);
    if (d !== 0) return d;
    i++;
    j++;
  }
  const rest = a.length - i - (b.length - j);
  if (rest !== 0) return rest;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Compare two sort values: numbers numerically, strings naturally (`web-2` before `web-10`). */
function compareValues(a: string | number, b: string | number): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return naturalCompare(String(a), String(b));
}

/**
 * Rows sorted by one column, empty cells last whichever the direction, ties by key, so the order
 * is total and stable. An order naming no column keeps the rows as they are (a replica's
 * processes in the order they start).
 */
export function sortRows(rows: readonly Row[], columns: readonly Column[], order: SortOrder): Row[] {
  const i = columns.findIndex((c) => c.header === order.column);
  if (i < 0) return [...rows];
  const sign = order.descending ? -1 : 1;
  return [...rows].sort((a, b) => {
    const va = a.sortValues[i] ?? '';
    const vb = b.sortValues[i] ?? '';
    if ((va === '') !== (vb === '')) return va === '' ? 1 : -1;
    const c = compareValues(va, vb);
    return c !== 0 ? sign * c : naturalCompare(a.key, b.key);
  });
}

/** The column Shift+`letter` sorts by, or undefined when no column of the view has it. */
export function columnForSortKey(columns: readonly Column[], letter: string): Column | undefined {
  return columns.find((c) => c.sortKey === letter);
}

/** Sorting by `column` again reverses; another column starts ascending. */
export function nextSortOrder(current: SortOrder, column: Column): SortOrder {
  return current.column === column.header
    ? { column: column.header, descending: !current.descending }
    : { column: column.header, descending: false };
}

export interface ColumnLayout {
  /** Indexes into the view's columns of those shown, in order. */
  readonly shown: readonly number[];
  /** Width of each shown column. */
  readonly widths: readonly number[];
}

/** Columns are separated by this many spaces. */
export const GAP = 2;

/**
 * Fit the columns into `width` terminal columns: each takes its natural width (its widest cell,
 * capped at maxWidth); when that is too wide the flex column shrinks to its minimum, then columns
 * are dropped by dropOrder, then the flex column shrinks further, then columns are dropped from
 * the right; when there is room left the flex column takes it.
 */
export function layoutColumns(
  columns: readonly Column[],
  rows: readonly Row[],
  width: number,
  widest: readonly number[] = widestCells(columns, rows).widest,
): ColumnLayout {
  const natural = columns.map((c, i) => {
    const w = Math.max(c.header.length + 1, widest[i] ?? 0); // room for the sort arrow
    return Math.min(w, Math.max(c.maxWidth ?? 40, c.header.length + 1));
  });
  const min = columns.map((c, i) =>
    Math.min(natural[i] ?? 0, Math.max(c.minWidth ?? 0, c.header.length + 1)),
  );
  let shown = columns.map((_, i) => i);
  const widths = [...natural];
  const total = () =>
    shown.reduce((sum, i) => sum + (widths[i] ?? 0), 0) + GAP * Math.max(0, shown.length - 1);
  const flex = columns.findIndex((c) => c.flex);
  if (total() > width && flex >= 0)
    widths[flex] = Math.max(min[flex] ?? 0, (widths[flex] ?? 0) - (total() - width));
  const droppable = columns
    .map((c, i) => ({ i, order: c.dropOrder ?? 0 }))
    .filter((d) => d.order > 0)
    .sort((a, b) => b.order - a.order || b.i - a.i);
  for (const d of droppable) {
    if (total() <= width) break;
    shown = shown.filter((i) => i !== d.i);
  }
  if (total() > width && flex >= 0 && shown.includes(flex)) {
    widths[flex] = Math.max(1, (widths[flex] ?? 0) - (total() - width));
  }
  while (total() > width && shown.length > 1) shown = shown.slice(0, -1);
  const only = shown[0];
  if (total() > width && only !== undefined) widths[only] = Math.max(1, width);
  if (total() < width && flex >= 0 && shown.includes(flex))
    widths[flex] = (widths[flex] ?? 0) + width - total();
  return { shown, widths: shown.map((i) => widths[i] ?? 0) };
}

/** What widestCells() measured: the widest cell per column of the rows off `from`-`to`. */
export interface MeasuredRows {
  readonly rows: readonly Row[];
  readonly from: number;
  readonly to: number;
  readonly rest: readonly number[];
}

function measure(columns: readonly Column[], rows: readonly Row[], from: number, to: number, into: number[]) {
  for (let i = from; i < to; i++) {
    const cells = (rows[i] as Row).cells;
    for (let c = 0; c < columns.length; c++) {
      const w = codePoints(cells[c] ?? '');
      if (w > (into[c] as number)) into[c] = w;
    }
  }
}

/**
 * The widest cell (code points) of each column of `rows`. With `before`, what this measured for
 * an earlier array of the same rows, only the rows `from` to `to` are measured again when every
 * other row is the very row `before` measured: the clock's tick, which works out only the page's
 * rows (frame.ts pageRows), measures the page, not the 1,000 rows, and an age on the page that
 * gets longer still widens its column.
 */
export function widestCells(
  columns: readonly Column[],
  rows: readonly Row[],
  from = 0,
  to = rows.length,
  before?: MeasuredRows,
): { widest: number[]; measured: MeasuredRows } {
  let rest: number[] | undefined;
  if (
    before &&
    before.from === from &&
    before.to === to &&
    before.rows.length === rows.length &&
    before.rest.length === columns.length
  ) {
    rest = [...before.rest];
    for (let i = 0; i < rows.length; i++) {
      if (i === from) i = to;
      if (i < rows.length && before.rows[i] !== rows[i]) {
        rest = undefined;
        break;
      }
    }
  }
  if (!rest) {
    rest = columns.map(() => 0);
    measure(columns, rows, 0, Math.min(from, rows.length), rest);
    measure(columns, rows, Math.min(to, rows.length), rows.length, rest);
  }
  const widest = [...rest];
  measure(columns, rows, Math.min(from, rows.length), Math.min(to, rows.length), widest);
  return { widest, measured: { rows, from, to, rest } };
}

/** One table line: the shown cells, each fit to its width, joined by the gap. */
export function renderLine(
  cells: readonly string[],
  columns: readonly Column[],
  layout: ColumnLayout,
): string {
  return layout.shown
    .map((i, n) => fitWidth(cells[i] ?? '', layout.widths[n] ?? 0, columns[i]?.align))
    .join(' '.repeat(GAP));
}

/** The header line, with ↑ or ↓ after the column the rows are sorted by. */
export function headerCells(columns: readonly Column[], order: SortOrder): string[] {
  return columns.map((c) =>
    c.header === order.column ? `${c.header}${order.descending ? '↓' : '↑'}` : c.header,
  );
}

/** Where the selection is: the row with `key` if it is still there, else the same index, clamped. */
export function selectedIndex(rows: readonly Row[], key: string | undefined, fallback: number): number {
  if (rows.length === 0) return 0;
  if (key !== undefined) {
    const i = rows.findIndex((r) => r.key === key);
    if (i >= 0) return i;
  }
  return Math.min(Math.max(0, fallback), rows.length - 1);
}

/** The first visible row: moved only as far as needed to keep `index` on the page of `height` rows. */
export function scrollOffset(offset: number, index: number, height: number, total: number): number {
  if (height <= 0) return 0;
  let o = Math.min(offset, Math.max(0, total - height));
  if (index < o) o = index;
  if (index >= o + height) o = index - height + 1;
  return Math.max(0, o);
}
