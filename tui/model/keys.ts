// Key bindings are data: the help screen and the key bar are drawn from this table, and
// keyName() turns what the terminal sent into the names the reducer (state.ts) takes.

/** What Ink reports of a key press (the fields of its `Key` that matter here). */
export interface KeyPress {
  upArrow?: boolean;
  downArrow?: boolean;
  leftArrow?: boolean;
  rightArrow?: boolean;
  pageUp?: boolean;
  pageDown?: boolean;
  home?: boolean;
  end?: boolean;
  return?: boolean;
  escape?: boolean;
  ctrl?: boolean;
  tab?: boolean;
  backspace?: boolean;
  delete?: boolean;
  meta?: boolean;
}

/**
 * One name per key press: `up`, `down`, `pageup`, `pagedown`, `home`, `end`, `enter`, `esc`,
 * `backspace`, `tab`, `ctrl+d`, or the character typed (`j`, `N`, `/`). A paste arrives as one
 * string of several characters, which only the prompts take.
 */
export function keyName(input: string, key: KeyPress): string {
  if (key.upArrow) return 'up';
  if (key.downArrow) return 'down';
  if (key.leftArrow) return 'left';
  if (key.rightArrow) return 'right';
  if (key.pageUp) return 'pageup';
  if (key.pageDown) return 'pagedown';
  if (key.home) return 'home';
  if (key.end) return 'end';
  if (key.return) return 'enter';
  if (key.escape) return 'esc';
  if (key.tab) return 'tab';
  // Terminals send DEL (0x7f) for the backspace key; Ink reports it as `delete`.
  if (key.backspace || key.delete) return 'backspace';
  if (key.ctrl && input) return `ctrl+${input.toLowerCase()}`;
  if (key.meta && input) return `meta+${input}`;
  return input;
}

/** Control characters inside a chunk of typed text, by the name keyName() gives that key. */
const CONTROL: Record<string, string> = {
  '\r': 'enter',
  '\n': 'enter',
  '\t': 'tab',
  '\u007f': 'backspace',
  '\b': 'backspace',
  '\u001b': 'esc',
};

/**
 * The key names of one read from the terminal. Ink hands over several characters that arrive
 * together as one input (`tmux send-keys ':svc' Enter`, a paste, keys typed during a slow
 * frame): they are split into one key each, so `:svc⏎` works whichever way it came.
 */
export function keyNames(input: string, key: KeyPress): string[] {
  const name = keyName(input, key);
  if (name !== input || [...input].length <= 1) return [name];
  return [...input].map((ch) => {
    if (CONTROL[ch]) return CONTROL[ch];
    const code = ch.codePointAt(0) ?? 0;
    return code > 0 && code < 27 ? `ctrl+${String.fromCharCode(code + 96)}` : ch;
  });
}

export interface Binding {
  /** As the help shows them. */
  readonly keys: string;
  readonly does: string;
}

export interface BindingGroup {
  readonly title: string;
  readonly bindings: readonly Binding[];
}

export const BINDINGS: readonly BindingGroup[] = [
  {
    title: 'Views',
    bindings: [
      {
        keys: ':inst :rep :svc :ep :host :ev',
        does: 'Instances, Replicas, Services, Endpoints, Hosts, Events',
      },
      { keys: ':ns NAME  :ns all', does: 'show one namespace, or all of them' },
      { keys: 'enter', does: 'open: Instance, Service, Host → Replicas → processes' },
      { keys: 'esc', does: 'clear the filter, then back where enter came from' },
      { keys: ':q', does: 'quit' },
    ],
  },
  {
    title: 'Navigation',
    bindings: [
      { keys: 'j k ↓ ↑', does: 'next, previous row' },
      { keys: 'PgDn PgUp ctrl-f ctrl-b', does: 'next, previous page' },
      { keys: 'g G Home End', does: 'first, last row' },
      { keys: '/REGEX  /!REGEX', does: 'keep the rows that match (any case), or the others' },
      { keys: '/-l app=web', does: 'keep the objects whose labels match' },
      { keys: 'Shift+letter', does: 'sort by that column (again: reverse), see below' },
    ],
  },
  {
    title: 'Actions',
    bindings: [
      { keys: 'l', does: "logs of a Replica's first process, or of the process selected" },
      { keys: 'd', does: 'describe: the object as YAML, its recent Events' },
      { keys: 's', does: 'scale an Instance (asks how many replicas)' },
      { keys: 'r', does: 'restart a Replica in place (its processes), after a confirmation' },
      { keys: 'ctrl-d', does: 'delete, after a confirmation' },
    ],
  },
  {
    title: 'Logs',
    bindings: [
      { keys: 'f', does: 'follow the newest lines, or pause (scrolling pauses too)' },
      { keys: 'G End', does: 'to the newest line, following' },
      { keys: 'w', does: 'wrap long lines, or cut them' },
      { keys: 'p', does: 'the previous run (after a restart); again: the current one' },
    ],
  },
  {
    title: 'General',
    bindings: [
      { keys: '?', does: 'this help (esc or q closes it)' },
      { keys: 'q ctrl-c', does: 'quit' },
    ],
  },
];
