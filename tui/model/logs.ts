// The log a `l` opened: one replica process's output read from its host's runtime (GET
// /v1/replicas/:ns/:name/logs, following the current run, or the previous run once), kept in a
// LineRing. The stream is read as fast as it comes, but listeners hear of it at most once per
// `notifyMs`: a process printing ten thousand lines a second makes ten frames a second, each
// drawing only the lines that fit, so keys are never queued behind log output.
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
}

export type LogPhase = 'connecting' | 'streaming' | 'ended' | 'failed';

export interface LogStatus {
  readonly phase: LogPhase;
  readonly error?: string | undefined;
  /** The host read from, once known. */
  readonly host?: string | undefined;
}

export interface LogsOptions {
  access: RuntimeAccess;
  /** Lines kept (default LOG_LINES). */
  capacity?: number;
  /** Text held back while paused, at most (default 1 MiB of characters): the oldest goes first. */
  holdChars?: number;
  /** Listeners are told at most once per this many ms (default 100). */
  notifyMs?: number;
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
    this.#opts = { capacity: LOG_LINES, notifyMs: 100, holdChars: 1 << 20, ...opts };
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
          follow: !previous,
          previous,
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
