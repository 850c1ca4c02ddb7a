// The TUI's table operations (tui/model/table.ts, format.ts): filters, sorting, column layout
// and the visible window, as pure functions.
import test from 'ava';
import type { KubeObject } from '../../kube/index.ts';
import { codePoints, fitWidth, humanDuration, truncate } from '../../tui/model/format.ts';
import { type FrameRows, frameRows, freshPage, pageChanged, pageRows } from '../../tui/model/frame.ts';
import { initialState, type UiState } from '../../tui/model/state.ts';
import {
  type Column,
  compileFilter,
  layoutColumns,
  naturalCompare,
  nextSortOrder,
  parseLabelSelector,
  type Row,
  renderLine,
  scrollOffset,
  selectedIndex,
  sortRows,
  widestCells,
} from '../../tui/model/table.ts';
import { type ClusterReader, type KindId, keyOf, VIEWS, type ViewId } from '../../tui/model/views.ts';

const row = (
  key: string,
  cells: string[],
  sortValues: (string | number)[] = cells,
  labels?: Record<string, string>,
): Row => ({
  key,
  cells,
  sortValues,
  labels,
});

const rows = [
  row('default/web', ['web', 'Running', '3'], ['web', 'Running', 3], { app: 'web', tier: 'front' }),
  row('default/db', ['db', 'CrashLoopBackOff', '12'], ['db', 'CrashLoopBackOff', 12], { app: 'db' }),
  row('default/web-10', ['web-10', '', '0'], ['web-10', '', 0], { app: 'web' }),
  row('default/web-2', ['web-2', 'Pending', '1'], ['web-2', 'Pending', 1], { app: 'web', canary: 'yes' }),
];
const keys = (list: readonly Row[]) => list.map((r) => r.key.replace('default/', ''));
const kept = (filter: string) => keys(rows.filter(compileFilter(filter).test));

test('a filter is a case-insensitive regular expression over the whole row; ! keeps the rest', (t) => {
  t.deepEqual(kept(''), ['web', 'db', 'web-10', 'web-2'], 'empty: everything');
  t.deepEqual(kept('web'), ['web', 'web-10', 'web-2']);
  t.deepEqual(kept('^web$'), [], 'the row is matched as one line of cells');
  t.deepEqual(kept('^web '), ['web']);
  t.deepEqual(kept('crash'), ['db'], 'any cell, any case');
  t.deepEqual(kept('web-\\d{2}'), ['web-10']);
  t.deepEqual(kept('!web'), ['db']);
  t.deepEqual(kept('!'), ['web', 'db', 'web-10', 'web-2'], 'a lone ! keeps everything while it is typed');
});

test('a broken regular expression is matched as text, and says so', (t) => {
  const filter = compileFilter('web-(');
  t.regex(filter.error ?? '', /not a regular expression, matched as text/);
  t.deepEqual(keys(rows.filter(filter.test)), []);
  t.deepEqual(keys([row('x', ['a web-( b'])].filter(filter.test)), ['x']);
  t.is(compileFilter('web').error, undefined);
});

test('-l filters by label selector: equality, inequality, existence, absence', (t) => {
  t.deepEqual(kept('-l app=web'), ['web', 'web-10', 'web-2']);
  t.deepEqual(kept('-l app==web,canary'), ['web-2']);
  t.deepEqual(kept('-l app!=web'), ['db']);
  t.deepEqual(kept('-l app=web,!canary'), ['web', 'web-10']);
  t.deepEqual(kept('-l tier'), ['web']);
  t.regex(compileFilter('-l').error ?? '', /label selector is expected/);
  t.regex(compileFilter('-l a=b=c').error ?? '', /not a label selector term: 'a=b=c'/);
  t.true('error' in parseLabelSelector('!a=b'), '!key=value is not a term');
});

const columns: Column[] = [
  { header: 'NAME', sortKey: 'N' },
  { header: 'PHASE', sortKey: 'S' },
  { header: 'RESTARTS', sortKey: 'T', align: 'right' },
];

test('sorting: names naturally, numbers as numbers, empty cells last either way, ties by key', (t) => {
  t.deepEqual(keys(sortRows(rows, columns, { column: 'NAME', descending: false })), [
    'db',
    'web',
    'web-2',
    'web-10',
  ]);
  t.deepEqual(keys(sortRows(rows, columns, { column: 'NAME', descending: true })), [
    'web-10',
    'web-2',
    'web',
    'db',
  ]);
  t.deepEqual(keys(sortRows(rows, columns, { column: 'RESTARTS', descending: false })), [
    'web-10',
    'web-2',
    'web',
    'db',
  ]);
  t.deepEqual(keys(sortRows(rows, columns, { column: 'PHASE', descending: false })), [
    'db',
    'web-2',
    'web',
    'web-10',
  ]);
  t.deepEqual(keys(sortRows(rows, columns, { column: 'PHASE', descending: true })), [
    'web',
    'web-2',
    'db',
    'web-10',
  ]);
  const tied = [row('b', ['x']), row('a', ['x'])];
  t.deepEqual(keys(sortRows(tied, columns, { column: 'NAME', descending: true })), ['a', 'b']);
  t.deepEqual(
    keys(sortRows(rows, columns, { column: '', descending: false })),
    keys(rows),
    'no column: as given',
  );
});

test('natural order: digit runs by value, letters case-folded, total', (t) => {
  const sorted = (names: string[]) => [...names].sort(naturalCompare);
  t.deepEqual(sorted(['web-10', 'web-2', 'web', 'web-1', 'db']), ['db', 'web', 'web-1', 'web-2', 'web-10']);
  t.deepEqual(sorted(['app-100', 'app-099', 'app-1000', 'app-0']), [
    'app-0',
    'app-099',
    'app-100',
    'app-1000',
  ]);
  t.deepEqual(sorted(['Web-2', 'api', 'web-1', 'API-3']), ['api', 'API-3', 'web-1', 'Web-2']);
  t.deepEqual(sorted(['10.0.0.12', '10.0.0.9', '9.1.1.1']), ['9.1.1.1', '10.0.0.9', '10.0.0.12']);
  t.deepEqual(sorted(['CrashLoopBackOff', 'Completed', 'ContainerCreating']), [
    'Completed',
    'ContainerCreating',
    'CrashLoopBackOff',
  ]);
  t.true(naturalCompare('web', 'web-0') < 0, 'a prefix first');
  t.true(naturalCompare('7', '07') !== 0 && naturalCompare('a', 'A') !== 0, 'equal values still ordered');
  t.is(Math.sign(naturalCompare('7', '07')), -Math.sign(naturalCompare('07', '7')));
  t.is(naturalCompare('web-2', 'web-2'), 0);
});

test('sorting by the same column again reverses it; another column starts ascending', (t) => {
  const byName = { column: 'NAME', descending: false };
  t.deepEqual(nextSortOrder(byName, columns[0] as Column), { column: 'NAME', descending: true });
  t.deepEqual(nextSortOrder({ column: 'NAME', descending: true }, columns[0] as Column), byName);
  t.deepEqual(nextSortOrder(byName, columns[2] as Column), { column: 'RESTARTS', descending: false });
});

test('columns take their natural width, the flex column the rest', (t) => {
  const cols: Column[] = [
    { header: 'NAME', sortKey: 'N' },
    { header: 'MESSAGE', sortKey: 'M', flex: true },
    { header: 'AGE', sortKey: 'A', align: 'right' },
  ];
  const data = [row('a', ['web-0', 'started', '5s'])];
  const wide = layoutColumns(cols, data, 40);
  t.deepEqual(wide.shown, [0, 1, 2]);
  t.deepEqual(wide.widths, [5, 27, 4], 'NAME: header+arrow; MESSAGE takes what is left; AGE: header+arrow');
  t.is(renderLine(data[0]?.cells ?? [], cols, wide).length, 40);
  t.is(renderLine(data[0]?.cells ?? [], cols, wide), `web-0  started${' '.repeat(20)}    5s`);
});

test('a narrow terminal shrinks the flex column, then drops columns by dropOrder, and never overflows', (t) => {
  const cols: Column[] = [
    { header: 'NAME', sortKey: 'N', minWidth: 8 },
    { header: 'HOST', sortKey: 'H', dropOrder: 1 },
    { header: 'ADDRESS', sortKey: 'I', dropOrder: 2 },
    { header: 'MESSAGE', sortKey: 'M', flex: true, minWidth: 10 },
    { header: 'AGE', sortKey: 'A' },
  ];
  const data = [row('a', ['replica-with-a-long-name', 'host-a', '10.0.0.1', 'x'.repeat(60), '3d'])];
  for (const width of [120, 80, 60, 45, 30, 12]) {
    const layout = layoutColumns(cols, data, width);
    const line = renderLine(data[0]?.cells ?? [], cols, layout);
    t.true(line.length <= width, `${width}: ${line.length} columns`);
    if (width >= 45) t.true(layout.shown.includes(3), `${width}: the message stays`);
  }
  t.deepEqual(layoutColumns(cols, data, 120).shown, [0, 1, 2, 3, 4]);
  t.deepEqual(layoutColumns(cols, data, 60).shown, [0, 1, 2, 3, 4], 'the flex column down to its minimum');
  t.deepEqual(layoutColumns(cols, data, 55).shown, [0, 1, 3, 4], 'ADDRESS goes first');
  t.deepEqual(layoutColumns(cols, data, 45).shown, [0, 3, 4], 'then HOST');
});

test('the selection follows its row by key, else stays at its index, clamped', (t) => {
  t.is(selectedIndex(rows, 'default/db', 0), 1);
  t.is(selectedIndex(rows, 'default/gone', 2), 2);
  t.is(selectedIndex(rows, 'default/gone', 9), 3);
  t.is(selectedIndex([], 'default/db', 3), 0);
});

test('the window scrolls only as far as needed to keep the selection on the page', (t) => {
  t.is(scrollOffset(0, 5, 10, 100), 0);
  t.is(scrollOffset(0, 10, 10, 100), 1, 'one past the bottom: one line');
  t.is(scrollOffset(20, 15, 10, 100), 15, 'above the top: to it');
  t.is(scrollOffset(95, 99, 10, 100), 90, 'never past the last page');
  t.is(scrollOffset(50, 3, 10, 5), 0, 'fewer rows than a page');
  t.is(scrollOffset(3, 0, 0, 5), 0);
});

test('ages read as kubectl prints them', (t) => {
  const s = 1000;
  const cases: [number, string][] = [
    [-5 * s, '0s'],
    [45 * s, '45s'],
    [119 * s, '119s'],
    [200 * s, '3m20s'],
    [5 * 60 * s, '5m'],
    [25 * 60 * s, '25m'],
    [179 * 60 * s, '179m'],
    [(5 * 60 + 12) * 60 * s, '5h12m'],
    [30 * 3600 * s, '30h'],
    [(4 * 24 + 2) * 3600 * s, '4d2h'],
    [200 * 86400 * s, '200d'],
    [(2 * 365 + 10) * 86400 * s, '2y10d'],
    [9 * 365 * 86400 * s, '9y'],
  ];
  for (const [ms, text] of cases) t.is(humanDuration(ms), text, `${ms} ms`);
});

test('truncation cuts with an ellipsis and keeps one row on one line', (t) => {
  t.is(truncate('instance', 20), 'instance');
  t.is(truncate('instance', 5), 'inst…');
  t.is(truncate('line one\nline two', 40), 'line one line two');
  t.is(truncate('abc', 0), '');
  // Widths count code points: an astral character is one, as the terminal draws it.
  t.is(truncate('🚀rocket', 7), '🚀rocket');
  t.is(truncate('🚀rocket', 4), '🚀ro…');
  t.is(fitWidth('🚀ab', 5), '🚀ab  ');
  t.is(fitWidth('7', 3, 'right'), '  7');
  t.is(codePoints('🚀ab'), 3);
  t.is(codePoints('a\ud800b'), 3, 'a lone surrogate is one');
});

test('pageChanged: only the rows of the page count, a cell or a row changed', (t) => {
  const columns = [
    { header: 'NAME', sortKey: 'N' },
    { header: 'AGE', sortKey: 'A' },
  ];
  const rows = (ages: string[]) => ({
    // The views make their columns anew each time: the same headers are the same columns.
    columns: [...columns],
    rows: ages.map((age, i) => ({ key: `r${i}`, cells: [`r${i}`, age], sortValues: [`r${i}`, i] })),
  });
  const shown = rows(['5s', '5m', '1h']);
  t.false(pageChanged(shown, rows(['5s', '5m', '1h']), 0, 3));
  t.true(pageChanged(shown, rows(['6s', '5m', '1h']), 0, 3), 'an age ticked on the page');
  t.false(pageChanged(shown, rows(['6s', '5m', '1h']), 1, 2), 'off the page');
  t.true(pageChanged(shown, rows(['5s', '5m']), 1, 2), 'a row less');
});

// The clock's rows (tui/model/frame.ts): when only the time moved, the page's rows alone are
// worked out again; rows kept from before are worked out when a key brings them on the page.

const T0 = Date.parse('2026-01-01T12:00:00Z');
const at = (secondsBefore: number) => new Date(T0 - secondsBefore * 1000).toISOString();

/** A cache over arrays that counts the objects the rows were built from (each build reads `status` once). */
function countingCluster(objects: Partial<Record<KindId, KubeObject[]>>) {
  const counted = { builds: 0 };
  const wrap = (o: KubeObject) =>
    new Proxy(o, {
      get(target, prop, receiver) {
        if (prop === 'status') counted.builds++;
        return Reflect.get(target, prop, receiver);
      },
    });
  const all = Object.fromEntries(
    Object.entries(objects).map(([kind, list]) => [kind, (list ?? []).map(wrap)]),
  ) as Partial<Record<KindId, KubeObject[]>>;
  const cluster: ClusterReader = {
    list: (kind) => (all[kind] ?? []) as never,
    get: (kind, key) => (all[kind] ?? []).find((o) => keyOf(o) === key) as never,
    eventsFor: () => [],
  };
  return { cluster, counted };
}

/** 300 Replicas, one a second younger than the one before: replica `r-i` is 100 + i seconds old at T0. */
function replicas(count = 300): KubeObject[] {
  return Array.from({ length: count }, (_, i) => ({
    metadata: { name: `r-${i}`, namespace: 'default', creationTimestamp: at(100 + i) },
    spec: { instance: 'r', ordinal: i, host: 'a' },
    status: { phase: 'Running', ready: true, processes: [{ name: 'p', ready: true }] },
  }));
}

/** The age `r-i` shows `later` ms after T0. */
const ageAt = (key: string, later: number) => humanDuration((100 + Number(key.split('-')[1])) * 1000 + later);

const ageOf = (shown: FrameRows, key: string) => {
  const i = shown.columns.findIndex((c) => c.header === 'AGE');
  return shown.rows.find((r) => r.key === key)?.cells[i];
};

test('pageRows: a tick works out the rows of the page only, at the new time, in the same order', (t) => {
  const { cluster, counted } = countingCluster({ replicas: replicas() });
  const state = initialState({ namespace: 'default', view: 'rep' });
  const shown = frameRows(cluster, state, T0);
  t.is(counted.builds, 300);
  counted.builds = 0;
  const next = pageRows(cluster, state, shown, T0 + 1000, 10, 20);
  if (!next) return t.fail('worked out in place');
  t.is(counted.builds, 20, 'the 20 rows of the page, not the 300');
  t.deepEqual(
    next.rows.map((r) => r.key),
    shown.rows.map((r) => r.key),
    'the same order',
  );
  t.deepEqual(next.fresh, { at: T0 + 1000, from: 10, to: 30 });
  const key = (shown.rows[10] as Row).key;
  t.is(ageOf(shown, key), ageAt(key, 0));
  t.is(ageOf(next, key), ageAt(key, 1000), 'the page reads the new time');
  for (const i of [0, 9, 30, 299])
    t.is(next.rows[i], shown.rows[i], `row ${i}, off the page, kept as it was`);
  t.false(pageChanged(shown, next, 40, 20), 'a page of kept rows did not change');
  t.true(pageChanged(shown, next, 10, 20));
});

test('pageRows: by age too the order is the same; a filter, or an object gone, works out all the rows', (t) => {
  const { cluster } = countingCluster({ replicas: replicas() });
  const byAge: UiState = initialState({ namespace: 'default', view: 'rep' });
  const frame = byAge.stack[0];
  if (!frame) return t.fail();
  const sorted: UiState = { ...byAge, stack: [{ ...frame, sort: { column: 'AGE', descending: true } }] };
  const shown = frameRows(cluster, sorted, T0);
  const next = pageRows(cluster, sorted, shown, T0 + 61_000, 0, 20);
  t.deepEqual(
    next?.rows.map((r) => r.key),
    frameRows(cluster, sorted, T0 + 61_000).rows.map((r) => r.key),
  );
  t.is(next?.rows[0]?.key, 'default/r-299', 'the oldest first');
  t.is(ageOf(next as FrameRows, 'default/r-299'), ageAt('default/r-299', 61_000), 'at the new time');
  const filtered: UiState = { ...byAge, stack: [{ ...frame, filter: 'r-1' }] };
  t.is(pageRows(cluster, filtered, frameRows(cluster, filtered, T0), T0 + 1000, 0, 20), undefined);
  const gone = countingCluster({ replicas: replicas().slice(1) }).cluster;
  t.is(pageRows(gone, byAge, frameRows(cluster, byAge, T0), T0 + 1000, 0, 20), undefined);
});

test('freshPage: rows kept from an earlier time are worked out when they come on the page', (t) => {
  const { cluster, counted } = countingCluster({ replicas: replicas() });
  const state = initialState({ namespace: 'default', view: 'rep' });
  const shown = frameRows(cluster, state, T0);
  const ticked = pageRows(cluster, state, shown, T0 + 5000, 0, 20) as FrameRows;
  counted.builds = 0;
  t.is(freshPage(cluster, state, ticked, T0 + 5000, 3, 17), ticked, 'within the page: as it is');
  t.is(counted.builds, 0);
  // `G`: the last page, whose rows were kept from T0.
  const last = freshPage(cluster, state, ticked, T0 + 6000, 280, 20);
  t.is(counted.builds, 20);
  const key = (last.rows[299] as Row).key;
  t.is(ageOf(ticked, key), ageAt(key, 0), 'kept from T0');
  t.is(ageOf(last, key), ageAt(key, 6000), 'on the page: its current age');
  t.deepEqual(last.fresh, { at: T0 + 6000, from: 280, to: 300 });
  // `j` scrolling one row: only the row that came on the page, at the time the page reads.
  counted.builds = 0;
  const scrolled = freshPage(cluster, state, ticked, T0 + 5700, 1, 20);
  t.is(counted.builds, 1);
  const came = (scrolled.rows[20] as Row).key;
  t.is(ageOf(scrolled, came), ageAt(came, 5000), 'the time of the rest of the page');
  for (let i = 1; i < 20; i++) t.is(scrolled.rows[i], ticked.rows[i], `row ${i} stayed, the same row`);
  t.deepEqual(scrolled.fresh, { at: T0 + 5000, from: 0, to: 21 });
  t.is(freshPage(cluster, state, scrolled, T0 + 5800, 0, 20), scrolled, 'and back: nothing to work out');
});

test('every column of the views of objects sorts the same at any time (the clock keeps the order)', (t) => {
  // Objects of every age, some without a timestamp; the names against the ages' order.
  const ages = [undefined, 0, 1, 59, 60, 119, 120, 599, 3599, 86_399, 86_400 * 400];
  const meta = (i: number, s: number | undefined) => ({
    name: `o-${ages.length - i}`,
    namespace: 'default',
    uid: `u${i}`,
    creationTimestamp: s === undefined ? undefined : at(s),
  });
  const objects: Partial<Record<KindId, KubeObject[]>> = {
    instances: ages.map((s, i) => ({ metadata: meta(i, s), spec: { replicas: i }, status: {} })),
    replicas: ages.map((s, i) => ({
      metadata: meta(i, s),
      spec: { host: 'a' },
      status: { restarts: i % 3 },
    })),
    services: ages.map((s, i) => ({ metadata: meta(i, s), spec: {}, status: {} })),
    hosts: ages.map((s, i) => ({ metadata: { ...meta(i, s), namespace: undefined }, status: {} })),
    events: ages.map((s, i) => ({
      metadata: meta(i, s),
      involvedObject: { kind: 'Replica', name: 'x' },
      lastTimestamp: s === undefined ? undefined : at(s),
      count: i % 4,
    })),
  };
  const { cluster } = countingCluster(objects);
  const views: ViewId[] = ['inst', 'rep', 'svc', 'host', 'ev'];
  for (const id of views) {
    for (const namespace of ['default', undefined]) {
      const base = initialState({ namespace, view: id });
      const frame = base.stack[0];
      if (!frame) return t.fail();
      for (const column of VIEWS[id].columns(namespace === undefined))
        for (const descending of [false, true]) {
          const state = { ...base, stack: [{ ...frame, sort: { column: column.header, descending } }] };
          const order = (now: number) => frameRows(cluster, state, now).rows.map((r) => r.key);
          for (const later of [1000, 61_000, 3_600_000, 86_400_000 * 3])
            t.deepEqual(order(T0 + later), order(T0), `${id} by ${column.header}, ${later} ms later`);
        }
    }
  }
});

test('widestCells: after a tick only the page is measured again; a longer age on it widens its column', (t) => {
  const columns: Column[] = [
    { header: 'NAME', sortKey: 'N' },
    { header: 'AGE', sortKey: 'A', align: 'right' },
  ];
  const make = (ages: string[]) => ages.map((age, i) => row(`r${i}`, [`r${i}`, age]));
  const rows = make(['9s', '9s', '9s', '9s', '8m', '9s']);
  const all = widestCells(columns, rows);
  t.deepEqual(all.widest, [2, 2]);
  // A tick: the rows 1-3 (the page) worked out again, the others the very same.
  const tick = (before: Row[], ages: string[]) => {
    const next = [...before];
    ages.forEach((age, j) => {
      next[1 + j] = row(`r${1 + j}`, [`r${1 + j}`, age]);
    });
    return next;
  };
  const first = widestCells(columns, tick(rows, ['10s', '10s', '10s']), 1, 4, all.measured);
  t.deepEqual(first.widest, [2, 3], 'the page widened AGE');
  t.deepEqual(first.measured.rest, [2, 2], 'the rows off the page, measured once');
  // The next tick reuses what the rows off the page measured: a made-up width shows it.
  const rigged = { ...first.measured, rest: [2, 7] };
  const rows2 = tick(first.measured.rows as Row[], ['11s', '11s', '11s']);
  t.deepEqual(widestCells(columns, rows2, 1, 4, rigged).widest, [2, 7], 'not measured again');
  // Another row off the page (a change in the cache), or another page: measured again.
  const changed = [...rows2];
  changed[5] = row('r5', ['r5', '1h']);
  t.deepEqual(widestCells(columns, changed, 1, 4, rigged).widest, [2, 3]);
  t.deepEqual(widestCells(columns, rows2, 2, 5, rigged).widest, [2, 3]);
  t.deepEqual(
    layoutColumns(columns, rows2, 30, widestCells(columns, rows2, 1, 4, first.measured).widest),
    layoutColumns(columns, rows2, 30),
    'the same layout as measuring every row',
  );
});
