// A real terminal for end-to-end tests of `orrery tui`: a tmux session of a given size on a
// tmux server of the test's own (its own socket, so the user's sessions are never touched),
// read with capture-pane and typed into with send-keys. The server is killed when the test
// ends, pass or fail, and when the worker exits.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { eventually } from './wait.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

function run(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('tmux', args, { encoding: 'utf8', timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`tmux ${args.join(' ')}: ${stderr || err.message}`, { cause: err }));
      else resolve(stdout);
    });
  });
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

const SGR = new RegExp(`${String.fromCharCode(27)}\\[([0-9;]*)m`, 'g');

/**
 * The SGR attributes (1 bold, 2 dim, 7 inverse...) in effect where `text` starts on a line of
 * styledScreen(), or undefined when the line does not hold `text`.
 */
export function attributesAt(line: string, text: string): Set<number> | undefined {
  const plainAt = line.indexOf(text);
  if (plainAt < 0) return undefined;
  const attributes = new Set<number>();
  for (const m of line.slice(0, plainAt).matchAll(SGR)) {
    for (const p of (m[1] || '0').split(';').map(Number)) {
      if (p === 0) attributes.clear();
      else if (p < 30 || p > 49) attributes.add(p); // colours are not attributes
    }
  }
  return attributes;
}

/** What the pane shows after the program exits: the primary screen is back, with this line on it. */
export const EXITED = /\[exited with (\d+)\]/;

export interface Terminal {
  /** The screen as text, one string per row (all rows, blank ones included). */
  screen(): Promise<string[]>;
  /** The same with the colours and attributes as SGR escape sequences (`\x1b[2m` is dim). */
  styledScreen(): Promise<string[]>;
  /** Waits until `check` holds for the screen; the failure message carries the last screen. */
  waitFor(what: string, check: (screen: string[]) => boolean, timeoutMs?: number): Promise<string[]>;
  /** Types text literally (`/web`, `:svc`). */
  type(text: string): Promise<void>;
  /** Presses keys by tmux name: `Enter`, `Escape`, `C-d`, `PageDown`. */
  press(...keys: string[]): Promise<void>;
  resize(columns: number, rows: number): Promise<void>;
}

/**
 * Runs `orrery <args>` in a fresh tmux session of columns×rows. When the command exits, the pane
 * stays and shows `[exited with N]`.
 */
export async function orreryInTmux(
  t: ExecutionContext,
  args: string[],
  size: { columns: number; rows: number; ci?: boolean },
): Promise<Terminal> {
  // A socket path of our own (tmux leaves a killed server's socket file behind): removed with its dir.
  const dir = mkdtempSync(join(tmpdir(), 'orrery-tmux-'));
  const socket = join(dir, 'socket');
  const session = 'tui';
  const tmux = (...rest: string[]) => run(['-S', socket, ...rest]);
  const kill = () => {
    try {
      execFileSync('tmux', ['-S', socket, 'kill-server'], { stdio: 'ignore' });
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', kill);
  t.teardown(() => {
    process.off('exit', kill);
    kill();
  });
  // The pane is a user's terminal, whatever runs the tests: CI=true only when asked for (it turns
  // colours off, and Ink would draw nothing until exit if tui/run.ts did not force a live view).
  const ci = size.ci ? ['CI=true'] : ['-u', 'CI', '-u', 'CONTINUOUS_INTEGRATION'];
  const command = ['env', ...ci, process.execPath, join(repoRoot, 'bin', 'orrery.js'), ...args]
    .map(shellQuote)
    .join(' ');
  await tmux(
    'new-session',
    '-d',
    '-s',
    session,
    '-x',
    String(size.columns),
    '-y',
    String(size.rows),
    `${command}; echo "[exited with $?]"; exec sleep 3600`,
  );
  const term: Terminal = {
    async screen() {
      const text = await tmux('capture-pane', '-p', '-t', session);
      return text.replace(/\n$/, '').split('\n');
    },
    async styledScreen() {
      const text = await tmux('capture-pane', '-p', '-e', '-t', session);
      return text.replace(/\n$/, '').split('\n');
    },
    waitFor(what, check, timeoutMs = 15_000) {
      return eventually(
        what,
        async () => {
          const screen = await term.screen();
          if (check(screen)) return screen;
          throw new Error(`the screen:\n${screen.join('\n')}`);
        },
        { timeoutMs, intervalMs: 50 },
      );
    },
    async type(text) {
      await tmux('send-keys', '-t', session, '-l', text);
    },
    async press(...keys) {
      await tmux('send-keys', '-t', session, ...keys);
    },
    async resize(columns, rows) {
      await tmux('resize-window', '-t', session, '-x', String(columns), '-y', String(rows));
    },
  };
  return term;
}
