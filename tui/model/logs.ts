// The log a `l` opened: one replica process's output read from its host's runtime (GET
// /v1/replicas/:ns/:name/logs, following the current run, or the previous run once), kept in a
// LineRing. The stream is read as fast as it comes, but listeners hear of it at most once per
// `notifyMs`: a process printing ten thousand lines a second makes ten frames a second, each
// drawing only the lines that fit, so keys are never queued behind log output.
//
// A followed log that ends (the replica stopped, the runtime restarted or cannot be reached) is
// opened again by itself, with back-off (REOPEN_MS), from wherever the replica runs now: a new run
// after a line `--- restarted (pid N) ---`, the same run (its pid unchanged) after
// `--- reconnected ---`, without the lines already shown (the reopened stream's history is matched
// against the last lines shown). A restart while the stream is up needs no reopening: the runtime
// goes on with the new run and puts its own `--- restarted (pid N) ---` between the two
// (`markers=true`).
import { Backoff } from '../../kube/index.ts';
import type { HostTarget, LogQuery } from '../../platform/runtime-api.ts';
import { LineRing, LOG_LINES } from './ring.ts';

/** Whose log. */
export interface LogTarget {
  readonly namespace: string;
  readonly replica: string;
  /** Default: the replica's first process. */
  readonly process?: string | undefined;
}

/** How to reach the runtime a replica runs on, and to read from it. */
export interface RuntimeAccess {
  /** The host of the replica and its runtime's endpoint and token; rejects with a sentence saying what is missing. */
  locate(namespace: string, replica: string): Promise<{ target: HostTarget; token: string }>;
  readLogs(
    target: HostTarget,
    token: string,
    q: LogQuery,
    signal: AbortSignal,
  ): Promise<AsyncIterable<Uint8Array>>;
  /** The pid of the process's current run, as its runtime says (null: not running); for the reopen's marker. */
  processPid?(
    target: HostTarget,
    token: string,
    q: { namespace: string; replica: string; process?: string | undefined },
    signal: AbortSignal,
  ): Promise<number | null>;
}

/** `reconnecting`: a followed log that ended or could not be read, opened again after a back-off. */
export type LogPhase = 'connecting' | 'streaming' | 'reconnecting' | 'ended' | 'failed';

export interface LogStatus {
  readonly phase: LogPhase;
  readonly error?: string | undefined;
  /** The host read from, once known. */
  readonly host?: string | undefined;
  /** Reopenings tried in a row (reconnecting). */
  readonly attempts?: number | undefined;
}

/** Reopening a followed log: the first retry after `initial` ms, doubling to `max`. */
export const REOPEN_MS = { initial: 250, max: 5_000 };
/** The last lines shown that a reopened stream's history must hold to be the same run, resumed. */
const ANCHOR_LINES = 3;
/** A reopened stream's history is taken as sent once nothing came for this long. */
const HISTORY_QUIET_MS = 100;

export interface LogsOptions {
  access: RuntimeAccess;
  /** Lines kept (default LOG_LINES). */
  capacity?: number;
  /** Text held back while paused, at most (default 1 MiB of characters): the oldest goes first. */
  holdChars?: number;
  /** Listeners are told at most once per this many ms (default 100). */
  notifyMs?: number;
  /** Back-off of a followed log's reopening (default REOPEN_MS). */
  reopenMs?: { initial: number; max: number };
}

/** The open log, if any; what the views subscribe to. */
export class LogsModel {
  readonly #opts: Required<Omit<LogsOptions, 'access'>> & { access: RuntimeAccess };
  /** While paused: the text read since, in order, not in the ring yet (which would scroll the paused lines away). */
  #held: string[] | undefined;
  #heldChars = 0;
  #heldLines = 0;
  #heldDropped = 0;
  readonly #listeners = new Set<() => void>();
  #ring: LineRing;
  #status: LogStatus = { phase: 'ended' };
  #abort: AbortController | undefined;
  #version = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: LogsOptions) {
    this.#opts = { capacity: LOG_LINES, notifyMs: 100, holdChars: 1 << 20, reopenMs: REOPEN_MS, ...opts };
    this.#ring = new LineRing(this.#opts.capacity);
  }

  get ring(): LineRing {
    return this.#ring;
  }

  status(): LogStatus {
    return this.#status;
  }

  version(): number {
    return this.#version;
  }

  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Lines read while paused, not in the ring yet. */
  heldLines(): number {
    return this.#heldLines;
  }

  /**
   * Paused (`on`): what is read from now on is held back, so the ring, and the lines a paused
   * pane shows, stay as they are even when a flood would overwrite the whole ring in half a
   * second. Released: the held text goes into the ring, with a line saying how much of it was
   * let go when more came than `holdChars`.
   */
  hold(on: boolean): void {
    if (on) {
      this.#held ??= [];
      return;
    }
    const held = this.#held;
    if (!held) return;
    this.#held = undefined;
    if (this.#heldDropped > 0) this.#ring.push(`… ${this.#heldDropped} lines not kept while paused`);
    for (const text of held) this.#ring.write(text);
    if (this.#status.phase === 'ended' || this.#status.phase === 'failed') this.#ring.flush();
    this.#heldChars = 0;
    this.#heldLines = 0;
    this.#heldDropped = 0;
    this.#bump();
  }

  #take(text: string): void {
    const held = this.#held;
    if (!held) {
      this.#ring.write(text);
      return;
    }
    held.push(text);
    this.#heldChars += text.length;
    const lines = countLines(text);
    this.#heldLines += lines;
    while (this.#heldChars > this.#opts.holdChars && held.length > 1) {
      const gone = held.shift() as string;
      this.#heldChars -= gone.length;
      const n = countLines(gone);
      this.#heldLines -= n;
      this.#heldDropped += n;
    }
  }

  /** Read `target`'s log: the current run followed, or the previous run; whatever was open closes. */
  open(target: LogTarget, previous: boolean): void {
    this.close();
    this.#ring = new LineRing(this.#opts.capacity);
    this.#held = undefined;
    this.#heldChars = 0;
    this.#heldLines = 0;
    this.#heldDropped = 0;
    const abort = new AbortController();
    this.#abort = abort;
    this.#setStatus({ phase: 'connecting' });
    void this.#read(target, previous, abort.signal);
  }

  close(): void {
    this.#abort?.abort();
    this.#abort = undefined;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #read(target: LogTarget, previous: boolean, signal: AbortSignal): Promise<void> {
    if (previous) return this.#readPrevious(target, signal);
    const { initial, max } = this.#opts.reopenMs;
    const backoff = new Backoff(initial, max);
    /** The pid of the run followed, as its runtime said at the last (re)open. */
    let pid: number | null | undefined;
    let opened = false;
    let attempts = 0;
    while (!signal.aborted) {
      let host: string | undefined;
      let why: string;
      try {
        const { target: runtime, token } = await this.#opts.access.locate(target.namespace, target.replica);
        host = runtime.name;
        if (signal.aborted) return;
        const q = { namespace: target.namespace, replica: target.replica, process: target.process };
        const nowPid = await this.#opts.access.processPid?.(runtime, token, q, signal).catch(() => undefined);
        const body = await this.#opts.access.readLogs(
          runtime,
          token,
          { ...q, tail: this.#opts.capacity, follow: true, markers: true },
          signal,
        );
        if (signal.aborted) return;
        this.#setStatus({ phase: 'streaming', host });
        backoff.reset();
        attempts = 0;
        const resume = opened
          ? { anchor: this.#lastLines(ANCHOR_LINES), samePid: nowPid != null && nowPid === pid, pid: nowPid }
          : undefined;
        opened = true;
        if (nowPid != null) pid = nowPid;
        pid = (await this.#stream(body, signal, resume)) ?? pid;
        why = 'the log ended (the replica stopped, or was moved)';
      } catch (err) {
        why = (err as Error).message;
      }
      if (signal.aborted) return;
      if (!this.#held) this.#ring.flush();
      attempts++;
      this.#setStatus({ phase: 'reconnecting', host, error: why, attempts });
      await sleep(backoff.next(), signal);
    }
  }

  /**
   * Reads one stream into the ring. `resume`: it reopens a log already shown, so its history is
   * held back until it was sent (HISTORY_QUIET_MS without a byte, or a ring's worth of lines), then
   * what repeats the last lines shown is skipped, after a marker saying what the reopening found.
   * Returns the pid of the last run marker the runtime sent, if any.
   */
  async #stream(
    body: AsyncIterable<Uint8Array>,
    signal: AbortSignal,
    resume: { anchor: string[]; samePid: boolean; pid: number | null | undefined } | undefined,
  ): Promise<number | undefined> {
    let pid: number | undefined;
    let pending: string[] | undefined = resume ? [] : undefined;
    let pendingLines = 0;
    let quiet: NodeJS.Timeout | undefined;
    const decide = () => {
      clearTimeout(quiet);
      if (!pending || !resume) return;
      const text = pending.join('');
      pending = undefined;
      const lines = text.split('\n');
      const partial = lines.pop() as string;
      const from = resumeAt(lines, resume.anchor);
      const marker =
        from !== undefined
          ? '--- reconnected ---'
          : resume.samePid
            ? '--- reconnected (the lines written meanwhile may be missing) ---'
            : `--- restarted${resume.pid != null ? ` (pid ${resume.pid})` : ''} ---`;
      this.#take(`${marker}\n`);
      this.#take(
        lines
          .slice(from ?? 0)
          .map((l) => `${l}\n`)
          .join('') + partial,
      );
      this.#changed();
    };
    try {
      const decoder = new TextDecoder();
      for await (const chunk of body) {
        if (signal.aborted) return pid;
        const text = decoder.decode(chunk, { stream: true });
        if (text.includes('--- restarted (pid ')) {
          const m = [...text.matchAll(/^--- restarted \(pid (\d+)\) ---$/gm)].at(-1);
          if (m) pid = Number(m[1]);
        }
        if (pending) {
          pending.push(text);
          pendingLines += countLines(text);
          if (pendingLines > this.#opts.capacity + ANCHOR_LINES) decide();
          else {
            clearTimeout(quiet);
            quiet = setTimeout(decide, HISTORY_QUIET_MS);
          }
          continue;
        }
        this.#take(text);
        this.#changed();
      }
      const rest = decoder.decode();
      if (pending) pending.push(rest);
      else this.#take(rest);
    } finally {
      decide();
    }
    return pid;
  }

  /** The last `n` complete lines shown or held, oldest first. */
  #lastLines(n: number): string[] {
    const held = this.#held ? this.#held.join('').split('\n').slice(0, -1) : [];
    const fromRing = Math.max(0, n - held.length);
    return [...this.#ring.slice(this.#ring.end - fromRing, this.#ring.end), ...held].slice(-n);
  }

  /** The previous run, read once. */
  async #readPrevious(target: LogTarget, signal: AbortSignal): Promise<void> {
    let host: string | undefined;
    try {
      const { target: runtime, token } = await this.#opts.access.locate(target.namespace, target.replica);
      host = runtime.name;
      if (signal.aborted) return;
      const body = await this.#opts.access.readLogs(
        runtime,
        token,
        {
          namespace: target.namespace,
          replica: target.replica,
          process: target.process,
          tail: this.#opts.capacity,
          previous: true,
        },
        signal,
      );
      if (signal.aborted) return;
      this.#setStatus({ phase: 'streaming', host });
      const decoder = new TextDecoder();
      for await (const chunk of body) {
        if (signal.aborted) return;
        this.#take(decoder.decode(chunk, { stream: true }));
        this.#changed();
      }
      this.#take(decoder.decode());
      if (!this.#held) this.#ring.flush();
      if (!signal.aborted) this.#setStatus({ phase: 'ended', host });
    } catch (err) {
      if (signal.aborted) return;
      this.#ring.flush();
      this.#setStatus({ phase: 'failed', host, error: (err as Error).message });
    }
  }

  #setStatus(status: LogStatus): void {
    this.#status = status;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#bump();
  }

  /** New lines: one notification per notifyMs, however many arrive. */
  #changed(): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#bump();
    }, this.#opts.notifyMs);
  }

  #bump(): void {
    this.#version++;
    for (const listener of this.#listeners) listener();
  }
}

/**
 * Where a reopened stream's lines go on from what was shown: the index just after the last place
 * they hold `anchor` (the last lines shown), or undefined when they do not hold it (another run,
 * or more was written meanwhile than the history sent).
 */
export function resumeAt(lines: readonly string[], anchor: readonly string[]): number | undefined {
  if (anchor.length === 0) return undefined;
  for (let i = lines.length - anchor.length; i >= 0; i--) {
    let k = 0;
    while (k < anchor.length && lines[i + k] === anchor[k]) k++;
    if (k === anchor.length) return i + anchor.length;
  }
  return undefined;
}

/** setTimeout as a promise, resolved early when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    timer.unref();
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/** Where a log pane is: following the newest line, or paused with `top` (a line number) first. */
export interface LogView {
  readonly follow: boolean;
  readonly top: number;
  readonly wrap: boolean;
}

/** A line cut into pieces of `width` characters (at least one piece). */
function wrapLine(line: string, width: number): string[] {
  const chars = [...line];
  if (chars.length <= width) return [line];
  const out: string[] = [];
  for (let i = 0; i < chars.length; i += width) out.push(chars.slice(i, i + width).join(''));
  return out;
}

/**
 * The rows a log pane of `height`×`width` shows: the newest lines when following, else from line
 * `top` (or the oldest kept, once `top` was overwritten); long lines wrapped or cut.
 */
export function logWindow(ring: LineRing, view: LogView, height: number, width: number): string[] {
  if (height <= 0) return [];
  const w = Math.max(1, width);
  if (view.follow) {
    if (!view.wrap) return ring.slice(ring.end - height, ring.end);
    const rows: string[] = [];
    for (let n = ring.end - 1; n >= ring.first && rows.length < height; n--) {
      rows.unshift(...wrapLine(ring.at(n) ?? '', w));
    }
    return rows.slice(-height);
  }
  const top = Math.max(view.top, ring.first);
  if (!view.wrap) return ring.slice(top, top + height);
  const rows: string[] = [];
  for (let n = top; n < ring.end && rows.length < height; n++) rows.push(...wrapLine(ring.at(n) ?? '', w));
  return rows.slice(0, height);
}
