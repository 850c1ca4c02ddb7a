// The root component. It owns the UI state (model/state.ts), turns key presses into its
// reducer's input, carries out the effects (quit, delete, scale, namespace) and draws the lines
// of the screen from the cluster's caches. It never calls the API while rendering.
import { Box, Text, useApp, useInput } from 'ink';
import { createElement as h, useEffect, useMemo, useRef, useState } from 'react';
import type { LiveCluster } from '../model/cluster.ts';
import { truncate } from '../model/format.ts';
import {
  type FrameRows,
  frameRows,
  freshPage,
  keyContext,
  pageChanged,
  pageRows,
  paneLines,
} from '../model/frame.ts';
import { keyNames } from '../model/keys.ts';
import { type LogsModel, logWindow } from '../model/logs.ts';
import { screenLayout } from '../model/screen.ts';
import { type Effect, reduce, topFrame, type UiState } from '../model/state.ts';
import {
  layoutColumns,
  type MeasuredRows,
  scrollOffset,
  selectedIndex,
  widestCells,
} from '../model/table.ts';
import { VIEWS } from '../model/views.ts';
import { type ClusterInfo, InfoLine, KeyBar, PromptLine, TitleLine } from './bars.ts';
import { type SizedStream, useClock, useClusterVersion, useLogsVersion, useTerminalSize } from './hooks.ts';
import { Pane, Table } from './table.ts';
// Ink's frames joined as lines, not cell by cell: every line of this screen is one Text at column 0.
import './line-output.ts';

export interface AppProps {
  readonly cluster: LiveCluster;
  readonly initial: UiState;
  readonly info: ClusterInfo;
  /** The output stream, for its size and resize events. */
  readonly stdout: SizedStream;
  /** Quiet time after the last resize event before the layout follows (default 100 ms). */
  readonly resizeDebounceMs?: number;
  /** Where `l` reads logs; without it `l` says logs are not available. */
  readonly logs?: LogsModel | undefined;
}

/** The log pane's title: whose log, which run, and whether it follows. */
function logsTitle(
  mode: Extract<UiState['mode'], { name: 'logs' }>,
  logs: LogsModel | undefined,
  below: number,
): string {
  const t = mode.target;
  const who = `${t.namespace}/${t.replica}${t.process ? `/${t.process}` : ''}`;
  const status = logs?.status();
  let state: string;
  if (!logs) state = 'no runtime access';
  else if (status?.phase === 'connecting') state = 'connecting…';
  else if (status?.phase === 'failed') state = `failed: ${status.error}`;
  else if (status?.phase === 'reconnecting')
    state = `reconnecting (${status.attempts ?? 1})…: ${status.error}`;
  else if (mode.previous) state = 'previous run';
  else if (status?.phase === 'ended') state = 'ended';
  else if (mode.follow) state = 'following';
  else state = `paused, ${below} lines below`;
  const dropped = logs && logs.ring.dropped > 0 ? `, last ${logs.ring.capacity}` : '';
  return `Logs ${who} (${state}${mode.wrap ? ', wrap' : ''}${dropped})`;
}

function hostsSummary(cluster: LiveCluster): string {
  const hosts = cluster.list('hosts');
  const ready = hosts.filter((h) =>
    h.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
  ).length;
  return `hosts ${ready}/${hosts.length} ready`;
}

/** Whether two states show the same rows: the same view, scope, filter, sort and namespace. */
function sameRows(a: ReturnType<typeof topFrame>, b: ReturnType<typeof topFrame>, sa: UiState, sb: UiState) {
  return (
    a.view === b.view &&
    a.scope === b.scope &&
    a.filter === b.filter &&
    a.sort === b.sort &&
    sa.namespace === sb.namespace
  );
}

export function App(props: AppProps) {
  const { cluster } = props;
  const { exit } = useApp();
  const version = useClusterVersion(cluster);
  // The log pane is drawn from the ring as it is at each render; this re-renders as it grows.
  useLogsVersion(props.logs);
  const size = useTerminalSize(props.stdout, props.resizeDebounceMs ?? 100);
  const [state, setState] = useState(props.initial);
  // Keys can arrive faster than renders (a paste, key repeat): each one reduces the latest state.
  const stateRef = useRef(state);
  // The page last drawn (the rows, the caches' version and the state they were worked out for),
  // and the rows the clock worked out when it found that page changed.
  const drawn = useRef<
    { shown: FrameRows; offset: number; height: number; version: number; state: UiState } | undefined
  >(undefined);
  const ahead = useRef<{ now: number; version: number; state: UiState; shown: FrameRows } | undefined>(
    undefined,
  );
  const now = useClock(1000, (t) => {
    const s = stateRef.current;
    const d = drawn.current;
    const v = cluster.version();
    const onlyTime = d && v === d.version && sameRows(topFrame(d.state), topFrame(s), d.state, s);
    // Describe lists its Events with their ages; help and the log pane do not follow the time.
    if (s.mode.name === 'describe') {
      // The table under it is not drawn: its rows stay as they are (the clock's first tick after
      // the pane closes works out the page), not worked out again each second.
      if (d && onlyTime) ahead.current = { now: t, version: v, state: s, shown: d.shown };
      return true;
    }
    if (s.mode.name === 'help' || s.mode.name === 'logs' || !d) return false;
    // Only the time moved: the order stays, so only the page's rows are worked out again.
    const next =
      (onlyTime ? pageRows(cluster, s, d.shown, t, d.offset, d.height) : undefined) ??
      frameRows(cluster, s, t);
    if (!pageChanged(d.shown, next, d.offset, d.height)) return false;
    ahead.current = { now: t, version: v, state: s, shown: next };
    return true;
  });
  const update = (change: (s: UiState) => UiState) => {
    stateRef.current = change(stateRef.current);
    setState(stateRef.current);
  };

  const screen = screenLayout(size.columns, size.rows);
  const frame = topFrame(state);
  const view = VIEWS[frame.view];
  // biome-ignore lint/correctness/useExhaustiveDependencies: the rows follow the cache (`version`), the clock, the top frame and the namespace, not a prompt or a message
  const worked = useMemo(() => {
    // The clock moved because it found the page changed, from these very rows: not worked out twice.
    const a = ahead.current;
    ahead.current = undefined;
    if (a && a.now === now && a.version === version && sameRows(topFrame(a.state), frame, a.state, state))
      return a.shown;
    // Anything else (a change in the cache, a key) reads the ages at the time it happens: the
    // clock moves only when the page it last saw changed.
    return frameRows(cluster, state, Math.max(now, Date.now()));
  }, [cluster, version, now, frame.view, frame.scope, frame.filter, frame.sort, state.namespace]);
  // The selection and the page, from the rows' order (which the time alone does not change).
  const index = selectedIndex(worked.rows, frame.selectedKey, frame.selectedIndex);
  const offset = scrollOffset(frame.offset, index, screen.bodyRows, worked.rows.length);
  // Rows kept from an earlier time (the clock works out only the page's) that a key brought on
  // the page are worked out now; kept for the renders after, as long as the rows are the same.
  const paged = useRef<{ worked: FrameRows; shown: FrameRows } | undefined>(undefined);
  const shown = freshPage(
    cluster,
    state,
    paged.current?.worked === worked ? paged.current.shown : worked,
    Math.max(now, Date.now()),
    offset,
    screen.bodyRows,
  );
  paged.current = { worked, shown };
  const { columns, rows } = shown;
  // The columns' widths: after a tick of the clock, only the page's cells are measured again.
  const measured = useRef<MeasuredRows | undefined>(undefined);
  // biome-ignore lint/correctness/useExhaustiveDependencies: `shown.fresh` comes with `rows`
  const layout = useMemo(() => {
    const w = widestCells(columns, rows, shown.fresh?.from, shown.fresh?.to, measured.current);
    measured.current = w.measured;
    return layoutColumns(columns, rows, Math.max(1, screen.width - 1), w.widest);
  }, [columns, rows, screen.width]);
  drawn.current = { shown, offset, height: screen.bodyRows, version, state };
  const mode = state.mode;
  // biome-ignore lint/correctness/useExhaustiveDependencies: the text follows the cache (`version`), the clock and the mode
  const pane = useMemo(
    () => paneLines(cluster, state, columns, Math.max(now, Date.now())),
    [cluster, version, now, mode, columns],
  );
  // A paused log holds what it reads, so the lines on screen stay (model/logs.ts).
  const paused = mode.name === 'logs' && !mode.follow;
  useEffect(() => props.logs?.hold(paused), [props.logs, paused]);
  const ring = props.logs?.ring;
  const logRange = ring ? { first: ring.first, end: ring.end } : undefined;
  const ctx = keyContext(cluster, state, shown, pane, screen, logRange);
  const ctxRef = useRef(ctx);
  ctxRef.current = ctx;

  const run = (effect: Effect) => {
    const say = (text: string, error = false) => update((s) => ({ ...s, flash: { text, error } }));
    switch (effect.kind) {
      case 'quit':
        exit();
        return;
      case 'namespace':
        cluster.setNamespace(effect.namespace);
        return;
      case 'logs':
        props.logs?.open(effect.target, effect.previous);
        return;
      case 'logs-close':
        props.logs?.close();
        return;
      case 'delete': {
        const what = `${VIEWS[effect.target.view].noun} ${effect.target.key}`;
        cluster.delete(effect.target.kind, effect.target.key).then(
          () => say(`deleting ${what}`),
          (err: Error) => say(`could not delete ${what}: ${err.message}`, true),
        );
        return;
      }
      case 'restart': {
        const what = `replica ${effect.target.key}`;
        cluster.restart(effect.target.key).then(
          () => say(`restarting ${what}`),
          (err: Error) => say(`could not restart ${what}: ${err.message}`, true),
        );
        return;
      }
      case 'scale': {
        const what = `${VIEWS[effect.target.view].noun} ${effect.target.key}`;
        cluster.scale(effect.target.key, effect.replicas).then(
          () => say(`scaled ${what} to ${effect.replicas}`),
          (err: Error) => say(`could not scale ${what}: ${err.message}`, true),
        );
        return;
      }
    }
  };

  useInput((input, key) => {
    keyNames(input, key).forEach((name, i) => {
      // The second key of a chunk acts on a screen that was never drawn: work it out.
      let ctx = ctxRef.current;
      if (i > 0) {
        const s = stateRef.current;
        const now = Date.now();
        const next = frameRows(cluster, s, now);
        const r = props.logs?.ring;
        ctx = keyContext(
          cluster,
          s,
          next,
          paneLines(cluster, s, next.columns, now),
          screen,
          r ? { first: r.first, end: r.end } : undefined,
        );
      }
      const { state: next, effects } = reduce(stateRef.current, name, ctx);
      if (next !== stateRef.current) update(() => next);
      for (const effect of effects) run(effect);
    });
  });

  if (screen.tooSmall) {
    return h(
      Text,
      { wrap: 'truncate-end' },
      truncate(`terminal too small (${size.columns}×${size.rows}): orrery tui needs 40×8`, screen.width),
    );
  }

  const health = cluster.health();
  const stale = !health.connected;
  const paneOpen = mode.name === 'help' || mode.name === 'describe' || mode.name === 'logs';
  // The log's rows are cut from its ring for this frame only: nothing of it is copied per line added.
  const logRows =
    mode.name === 'logs' && ring ? logWindow(ring, mode, screen.paneRows, Math.max(1, screen.width - 1)) : [];
  const logTop =
    mode.name === 'logs' && ring
      ? mode.follow
        ? Math.max(ring.first, ring.end - screen.paneRows)
        : Math.min(Math.max(mode.top, ring.first), Math.max(ring.first, ring.end - screen.paneRows))
      : 0;
  const paneTitle =
    mode.name === 'help'
      ? 'Help'
      : mode.name === 'describe'
        ? `Describe ${VIEWS[mode.target.view].noun} ${mode.target.key}`
        : mode.name === 'logs'
          ? logsTitle(
              mode,
              props.logs,
              Math.max(0, (ring?.end ?? 0) - logTop - screen.paneRows) + (props.logs?.heldLines() ?? 0),
            )
          : undefined;
  const where = view.namespaced && state.namespace ? ` in namespace ${state.namespace}` : '';
  // No overflow clip (Ink would cut every line again, a second pass over each cell of the frame):
  // the Output is exactly this Box's height, and every line is cut to the width by its Text.
  return h(
    Box,
    { flexDirection: 'column', width: screen.width, height: screen.height },
    h(InfoLine, {
      info: props.info,
      namespace: state.namespace,
      width: screen.width,
      hosts: hostsSummary(cluster),
    }),
    h(KeyBar, { state, width: screen.width }),
    h(TitleLine, { state, health, count: rows.length, width: screen.width, title: paneTitle }),
    paneOpen
      ? h(Pane, {
          lines: mode.name === 'logs' ? logRows : pane,
          offset: mode.name === 'logs' ? 0 : mode.offset,
          height: screen.paneRows,
          width: screen.width,
          stale,
        })
      : h(Table, {
          columns,
          layout,
          rows,
          sort: frame.sort,
          selected: index,
          offset,
          height: screen.bodyRows,
          width: screen.width,
          stale,
          empty: health.synced
            ? `no ${view.title.toLowerCase()}${frame.filter ? ' match the filter' : where}`
            : 'loading…',
        }),
    h(PromptLine, {
      state,
      width: screen.width,
      position:
        mode.name === 'logs'
          ? ring && ring.length > 0
            ? `lines ${logTop + 1}-${Math.min(ring.end, logTop + screen.paneRows)} of ${ring.end}`
            : ''
          : paneOpen
            ? `lines ${Math.min(pane.length, mode.offset + 1)}-${Math.min(pane.length, mode.offset + screen.paneRows)} of ${pane.length}`
            : rows.length > 0
              ? `${index + 1}/${rows.length}`
              : '',
    }),
  );
}
