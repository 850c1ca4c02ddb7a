// Runs an end-to-end script (hack/kind-e2e.sh, hack/e2e-checks.sh on the real node) in a process
// group of its own, asynchronously: a synchronous spawn would block the worker's event loop, and
// with it ava's timers, for as long as the script runs. Past its bound the group gets SIGTERM
// (the script's trap cleans up), then SIGKILL.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

export const repoRoot = join(import.meta.dirname, '..', '..');

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** `error` of the spawn (ENOENT when the command is not installed). */
  error?: Error;
  timedOut: boolean;
}

/**
 * Runs a command in a process group of its own; past `timeoutMs` the group gets SIGTERM, and
 * SIGKILL `graceMs` later. `onStart` gets the kill for a teardown.
 */
export function runScript(
  command: string,
  args: string[],
  opts: {
    timeoutMs: number;
    graceMs?: number;
    onStart?: (kill: () => void) => void;
    env?: NodeJS.ProcessEnv;
  },
): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      ...(opts.env ? { env: opts.env } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const signalGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        // the group is gone already
      }
    };
    const stop = () => {
      signalGroup('SIGTERM');
      killTimer ??= setTimeout(() => signalGroup('SIGKILL'), opts.graceMs ?? 5_000);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, opts.timeoutMs);
    opts.onStart?.(stop);
    let error: Error | undefined;
    child.once('error', (err) => {
      error = err;
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      resolve({ code, signal, stdout, stderr, timedOut, ...(error ? { error } : {}) });
    });
  });
}

/** The last `lines` lines of `text`. */
export const tail = (text: string, lines: number) => text.trimEnd().split('\n').slice(-lines).join('\n');
