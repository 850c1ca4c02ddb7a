// The lines around the table: the info line, the key bar, the title (or the reconnect banner),
// and the prompt line at the bottom. Each is one terminal line, cut to the width.

import { Text } from 'ink';
import { createElement as h, type ReactNode } from 'react';
import type { ClusterHealth } from '../model/cluster.ts';
import { truncate } from '../model/format.ts';
import { type Mode, topFrame, type UiState } from '../model/state.ts';
import { scopeTitle, VIEWS } from '../model/views.ts';

export interface ClusterInfo {
  readonly context: string;
  readonly server: string;
  readonly version: string;
}

export function InfoLine(props: {
  info: ClusterInfo;
  namespace: string | undefined;
  width: number;
  hosts: string;
}) {
  const { info, namespace, width } = props;
  // Most useful first: a narrow terminal cuts the end.
  const text = ` namespace ${namespace ?? 'all'} │ context ${info.context} │ ${props.hosts} │ ${info.server} │ orrery ${info.version}`;
  return h(Text, { wrap: 'truncate-end', dimColor: true }, truncate(text, width));
}

/** The keys that do something here, as `<key> what` pairs. */
export function keyHints(state: UiState): [string, string][] {
  const mode = state.mode.name;
  if (mode === 'logs') {
    return [
      ['esc', 'back'],
      ['f', state.mode.name === 'logs' && state.mode.follow ? 'pause' : 'follow'],
      ['w', 'wrap'],
      ['p', state.mode.name === 'logs' && state.mode.previous ? 'current run' : 'previous run'],
      ['j/k', 'scroll'],
      ['G', 'follow'],
    ];
  }
  if (mode === 'help' || mode === 'describe') {
    return [
      ['esc', 'back'],
      ['j/k', 'scroll'],
      ['PgDn/PgUp', 'page'],
      ['g/G', 'top/bottom'],
    ];
  }
  const view = VIEWS[topFrame(state).view];
  // Cut from the end when narrow: help comes first, so what is cut can be found there.
  const hints: [string, string][] = [['?', 'help']];
  if (view.drill) hints.push(['enter', view.drill.label]);
  if (view.id === 'rep' || view.id === 'proc') hints.push(['l', 'logs']);
  if (view.kind) hints.push(['d', 'describe']);
  if (view.scalable && !state.readonly) hints.push(['s', 'scale']);
  if ((view.id === 'rep' || view.id === 'proc') && !state.readonly) hints.push(['r', 'restart']);
  if (view.kind && !state.readonly) hints.push(['ctrl-d', 'delete']);
  if (state.stack.length > 1) hints.push(['esc', 'back']);
  hints.push(['/', 'filter'], [':', 'view'], ['q', 'quit']);
  return hints;
}

export function KeyBar(props: { state: UiState; width: number }) {
  const parts: ReactNode[] = [' '];
  let used = 1;
  for (const [key, what] of keyHints(props.state)) {
    const len = key.length + what.length + 5;
    if (used + len > props.width) break;
    parts.push(h(Text, { key, color: 'cyan' }, `<${key}>`), ` ${what}  `);
    used += len;
  }
  return h(Text, { wrap: 'truncate-end' }, ...parts);
}

/**
 * The title: `Instances(default)[3] /web`, filled with a rule to the width; while the API server
 * is unreachable, the banner instead: the rows below are the last ones seen.
 */
export function TitleLine(props: {
  state: UiState;
  health: ClusterHealth;
  count: number;
  width: number;
  title?: string | undefined;
}) {
  const { state, health, width } = props;
  if (!health.connected) {
    const why = health.error ? `: ${health.error}` : '';
    // An HTTP status is an answer (403, 500...): the server is there, the watch is refused.
    const what = /^HTTP \d{3}/.test(health.error ?? '') ? 'watch refused' : 'API server unreachable';
    const text = ` ${what}, reconnecting (${health.attempts})…${why} (rows as last seen)`;
    return h(
      Text,
      { wrap: 'truncate-end', backgroundColor: 'red', color: 'white', bold: true },
      truncate(text, width).padEnd(width),
    );
  }
  const frame = topFrame(state);
  const view = VIEWS[frame.view];
  const where = frame.scope ? scopeTitle(frame.scope) : view.namespaced ? (state.namespace ?? 'all') : '';
  let title = props.title ?? `${view.title}${where ? `(${where})` : ''}[${props.count}]`;
  if (!props.title && frame.filter) title += ` /${frame.filter}`;
  if (!health.synced) title += ' loading…';
  const text = truncate(` ${title} `, width);
  return h(
    Text,
    { wrap: 'truncate-end' },
    h(Text, { color: 'cyan', bold: true }, text),
    h(Text, { dimColor: true }, '─'.repeat(Math.max(0, width - [...text].length))),
  );
}

function promptText(
  mode: Mode,
  describeTarget: (key: string) => string,
): { text: string; color?: string } | undefined {
  switch (mode.name) {
    case 'command':
      return { text: `:${mode.input}█` };
    case 'filter':
      return { text: `/${mode.input}█` };
    case 'confirm-delete':
      return {
        text: `Delete ${describeTarget(mode.target.key)}? y deletes, any other key cancels`,
        color: 'red',
      };
    case 'confirm-restart':
      return {
        text: `Restart replica ${mode.target.key} (its processes, in place)? y restarts, any other key cancels`,
        color: 'red',
      };
    case 'scale':
      return {
        text: `Scale ${describeTarget(mode.target.key)} to how many replicas? ${mode.input}█ (enter: scale, esc: cancel)`,
        color: 'yellow',
      };
    default:
      return undefined;
  }
}

export function PromptLine(props: { state: UiState; width: number; position: string }) {
  const { state, width } = props;
  const view = VIEWS[topFrame(state).view];
  const prompt = promptText(state.mode, (key) => `${view.noun} ${key}`);
  if (prompt)
    return h(Text, { wrap: 'truncate-end', color: prompt.color, bold: true }, truncate(prompt.text, width));
  if (state.flash) {
    return h(
      Text,
      { wrap: 'truncate-end', color: state.flash.error ? 'red' : 'green' },
      truncate(` ${state.flash.text}`, width),
    );
  }
  const left = state.readonly ? ' [read-only]' : '';
  const right = `${props.position} `;
  return h(
    Text,
    { wrap: 'truncate-end', dimColor: true },
    truncate(left.padEnd(Math.max(0, width - right.length)) + right, width),
  );
}
