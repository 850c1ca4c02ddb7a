// The root component. It owns the UI state (model/state.ts), turns key presses into its
// reducer's input, carries out the effects (quit, delete, scale, namespace) and draws the lines
// of the screen from the cluster's caches. It never calls the API while rendering.
import { Box, Text, useApp, useInput } from 'ink';
import { createElement as h, useMemo, useRef, useState } from 'react';
import type { LiveCluster } from '../model/cluster.ts';
import { describeLines } from '../model/describe.ts';
import { truncate } from '../model/format.ts';
import { BINDINGS, keyNames } from '../model/keys.ts';
import { screenLayout } from '../model/screen.ts';
import { type Effect, type KeyContext, reduce, topFrame, type UiState } from '../model/state.ts';
import {
  type Column,
  compileFilter,
  layoutColumns,
  type Row,
  scrollOffset,
  selectedIndex,
  sortRows,
} from '../model/table.ts';
import { VIEWS } from '../model/views.ts';
import { type ClusterInfo, InfoLine, KeyBar, PromptLine, TitleLine } from './bars.ts';
import { type SizedStream, useClusterVersion, useNow, useTerminalSize } from './hooks.ts';
import { Pane, Table } from './table.ts';

export interface AppProps {
  readonly cluster: LiveCluster;
  readonly initial: UiState;
  readonly info: ClusterInfo;
  /** The output stream, for its size and resize events. */
  readonly stdout: SizedStream;
  /** Quiet time after the last resize event before the layout follows (default 100 ms). */
  readonly resizeDebounceMs?: number;
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

function hostsSummary(cluster: LiveCluster): string {
  const hosts = cluster.list('hosts');
  const ready = hosts.filter((h) =>
    h.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
  ).length;
  return `hosts ${ready}/${hosts.length} ready`;
}

export function App(props: AppProps) {
  const { cluster } = props;
  const { exit } = useApp();
  const version = useClusterVersion(cluster);
  const size = useTerminalSize(props.stdout, props.resizeDebounceMs ?? 100);
  const now = useNow(1000);
  const [state, setState] = useState(props.initial);
  // Keys can arrive faster than renders (a paste, key repeat): each one reduces the latest state.
  const stateRef = useRef(state);
  const update = (change: (s: UiState) => UiState) => {
    stateRef.current = change(stateRef.current);
    setState(stateRef.current);
  };

  const screen = screenLayout(size.columns, size.rows);
  const frame = topFrame(state);
  const view = VIEWS[frame.view];
  const allNamespaces = state.namespace === undefined;
  const columns = useMemo(() => view.columns(allNamespaces), [view, allNamespaces]);
  // biome-ignore lint/correctness/useExhaustiveDependencies: `version` and `now` are the reasons to rebuild the rows
  const rows: Row[] = useMemo(() => {
    const filter = compileFilter(frame.filter);
    const all = view.rows(cluster, frame.scope, { now, allNamespaces }).filter(filter.test);
    return sortRows(all, columns, frame.sort);
  }, [cluster, version, now, view, frame.scope, frame.filter, frame.sort, columns, allNamespaces]);
  const layout = useMemo(
    () => layoutColumns(columns, rows, Math.max(1, screen.width - 1)),
    [columns, rows, screen.width],
  );
  const index = selectedIndex(rows, frame.selectedKey, frame.selectedIndex);
  const offset = scrollOffset(frame.offset, index, screen.bodyRows, rows.length);

  const mode = state.mode;
  // biome-ignore lint/correctness/useExhaustiveDependencies: `version` and `now` are the reasons to rebuild the text
  const paneLines = useMemo(() => {
    if (mode.name === 'help') return helpLines(columns);
    if (mode.name !== 'describe') return [];
    const obj = cluster.get(mode.target.kind, mode.target.key);
    if (!obj) return [`${VIEWS[mode.target.view].noun} ${mode.target.key} is gone`];
    return describeLines(obj, cluster.eventsFor(obj), now);
  }, [mode, cluster, version, now, columns]);

  const ctx: KeyContext = {
    rows,
    columns,
    pageSize: mode.name === 'help' || mode.name === 'describe' ? screen.paneRows : screen.bodyRows,
    paneLines: paneLines.length,
    drill: (key) => view.drill?.to(cluster, key),
  };
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
      case 'delete': {
        const what = `${VIEWS[effect.target.view].noun} ${effect.target.key}`;
        cluster.delete(effect.target.kind, effect.target.key).then(
          () => say(`deleting ${what}`),
          (err: Error) => say(`could not delete ${what}: ${err.message}`, true),
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
    for (const name of keyNames(input, key)) {
      const { state: next, effects } = reduce(stateRef.current, name, ctxRef.current);
      if (next !== stateRef.current) update(() => next);
      for (const effect of effects) run(effect);
    }
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
  const paneOpen = mode.name === 'help' || mode.name === 'describe';
  const paneTitle =
    mode.name === 'help'
      ? 'Help'
      : mode.name === 'describe'
        ? `Describe ${VIEWS[mode.target.view].noun} ${mode.target.key}`
        : undefined;
  const where = view.namespaced && state.namespace ? ` in namespace ${state.namespace}` : '';
  return h(
    Box,
    { flexDirection: 'column', width: screen.width, height: screen.height, overflow: 'hidden' },
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
          lines: paneLines,
          offset: mode.offset,
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
      position: paneOpen
        ? `lines ${Math.min(paneLines.length, mode.offset + 1)}-${Math.min(paneLines.length, mode.offset + screen.paneRows)} of ${paneLines.length}`
        : rows.length > 0
          ? `${index + 1}/${rows.length}`
          : '',
    }),
  );
}
