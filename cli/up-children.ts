// The operator and host agents that `orrery up` runs: spawned in a session of their own, their
// pino output printed as readable prefixed lines, and started again with backoff when they die
// unexpectedly, as a Deployment or a DaemonSet would have them.
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { packagePath } from '../platform/package.ts';

const binary = packagePath('bin', 'orrery.js');

const levelNames: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

function formatFields(record: Record<string, unknown>): string {
  return Object.entries(record)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
}

/**
 * One readable line from a JSON line: `level msg key=value ...` for a pino record, `key=value ...`
 * for other JSON (the agent's endpoint line has no level), any other text as it is.
 */
export function formatLogLine(line: string): string {
  if (!line.startsWith('{')) return line;
  let record: unknown;
  try {
    record = JSON.parse(line);
  } catch {
    return line;
  }
  if (record === null || typeof record !== 'object' || Array.isArray(record)) return line;
  if (!('level' in record)) return formatFields(record as Record<string, unknown>) || line;
  const {
    level,
    msg,
    time: _t,
    pid: _p,
    hostname: _h,
    name: _n,
    ...rest
  } = record as Record<string, unknown>;
  const parts = [(levelNames[Number(level)] ?? String(level)).padEnd(5)];
  if (msg !== undefined) parts.push(typeof msg === 'string' ? msg : JSON.stringify(msg));
  const fields = formatFields(rest);
  if (fields) parts.push(fields);
  return parts.join(' ');
}

/** A child that ran this long before it died starts again after the shortest delay. */
const stableAfterMs = 60_000;

/** 1 s after the first unexpected exit, doubling with each exit in a row, at most 30 s. */
function restartDelayMs(exitsInARow: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, exitsInARow - 1));
}

export interface ChildSpec {
  /** Prefix of its output lines: `operator`, or the host name. */
  name: string;
  /** What it is, in up's own lines: `operator`, `host agent`. */
  role: string;
  /** Arguments of `orrery`. */
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** Each line it prints, raw, before it is printed formatted. */
  onLine?: (line: string) => void;
}

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** It was still running when the grace period of a stop ran out, and got SIGKILL. */
  killed: boolean;
}

interface ChildHooks {
  log: (message: string) => void;
  /** Every spawn, restarts included (the data dir's run record names the pids). */
  onSpawn: (pid: number) => void;
}

/**
 * `orrery <args>` as a supervised child. It runs in its own session (`detached`), so only `up`
 * signals it: a Ctrl-C in the terminal reaches the terminal's process group, and `up` then stops
 * the children in its order. It holds an IPC channel to `up`, which the kernel closes however
 * `up` dies; the child takes that as its stop (cli/signals.ts), so a killed `up` leaves no daemon.
 */
export class SupervisedChild {
  readonly spec: ChildSpec;
  readonly #hooks: ChildHooks;
  #process: ChildProcess | undefined;
  #startedAt = 0;
  #exitsInARow = 0;
  #restarts = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #stopping = false;
  #exited: Promise<ChildExit> = Promise.resolve({ code: null, signal: null, killed: false });
  #killedAfterGrace = false;

  constructor(spec: ChildSpec, hooks: ChildHooks) {
    this.spec = spec;
    this.#hooks = hooks;
  }

  get pid(): number | undefined {
    return this.#process?.pid;
  }

  get running(): boolean {
    const p = this.#process;
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  start(): void {
    const { name, role, args, env, onLine } = this.spec;
    const child = spawn(process.execPath, [binary, ...args], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      detached: true,
      env: env ?? process.env,
    });
    this.#process = child;
    this.#startedAt = performance.now();
    this.#killedAfterGrace = false;
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue; // never: both are pipes
      createInterface({ input: stream }).on('line', (line) => {
        onLine?.(line);
        console.error(`[${name}] ${formatLogLine(line)}`);
      });
    }
    this.#exited = new Promise((resolve) => {
      const ended = (code: number | null, signal: NodeJS.Signals | null, why: string) => {
        resolve({ code, signal, killed: this.#killedAfterGrace });
        if (this.#stopping) console.error(`[${name}] exited (${why})`);
        else this.#scheduleRestart(why);
      };
      child.once('exit', (code, signal) => ended(code, signal, signal ? `signal ${signal}` : `code ${code}`));
      // spawn(2) itself failed (EAGAIN, ENOMEM): no 'exit' comes. Later errors (a kill or an IPC
      // write that failed) change nothing here, but must have a listener.
      child.on('error', (err) => {
        if (child.pid === undefined) ended(null, null, `could not start: ${err.message}`);
      });
    });
    if (child.pid !== undefined) this.#hooks.onSpawn(child.pid);
    if (this.#restarts > 0)
      this.#hooks.log(`restarted ${role} ${name} (pid ${child.pid}, restart ${this.#restarts})`);
  }

  #scheduleRestart(why: string): void {
    const { name, role } = this.spec;
    const ranMs = performance.now() - this.#startedAt;
    if (ranMs >= stableAfterMs) this.#exitsInARow = 0;
    this.#exitsInARow++;
    const delay = restartDelayMs(this.#exitsInARow);
    this.#hooks.log(
      `${role} ${name} exited unexpectedly (${why}, after ${(ranMs / 1000).toFixed(1)} s); restarting it in ${delay / 1000} s`,
    );
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      this.#restarts++;
      this.start();
    }, delay);
  }

  /** The next exit of the current process (resolved at once when none runs). */
  exited(): Promise<ChildExit> {
    return this.#exited;
  }

  /** SIGTERM, and SIGKILL after `graceMs`; no restart after this. */
  async stop(graceMs: number): Promise<ChildExit> {
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    if (!this.running) return { code: this.#process?.exitCode ?? null, signal: null, killed: false };
    const child = this.#process as ChildProcess;
    child.kill('SIGTERM');
    const timer = setTimeout(() => {
      this.#hooks.log(
        `${this.spec.role} ${this.spec.name} still running ${graceMs / 1000} s after SIGTERM; SIGKILL`,
      );
      this.#killedAfterGrace = true;
      child.kill('SIGKILL');
    }, graceMs);
    const exit = await this.#exited;
    clearTimeout(timer);
    return exit;
  }

  /** SIGKILL now; no restart after this. */
  kill(): void {
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    if (this.running) this.#process?.kill('SIGKILL');
  }
}
