// A log as the TUI keeps it: the last `capacity` lines, in a fixed array used as a ring, so a
// process that prints without end costs the same memory after an hour as after a second. Lines
// are numbered from the first one ever added: `first` moves up as old ones are overwritten, and
// a position held while paused stays on its line (or, once that line is gone, on the oldest).

/** Lines kept per log by default. */
export const LOG_LINES = 5_000;
/** A line longer than this is cut: one runaway line cannot hold megabytes. */
export const MAX_LINE_CHARS = 4_096;

export class LineRing {
  readonly capacity: number;
  readonly #lines: string[];
  /** Number of the next line added. */
  #end = 0;
  /** Text after the last newline, not a line yet. */
  #partial = '';

  constructor(capacity = LOG_LINES) {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new TypeError(`capacity must be a whole number above 0, got ${capacity}`);
    this.capacity = capacity;
    this.#lines = new Array<string>(capacity);
  }

  /** Number of the oldest line kept. */
  get first(): number {
    return Math.max(0, this.#end - this.capacity);
  }

  /** Number after the newest line. */
  get end(): number {
    return this.#end;
  }

  /** Lines kept. */
  get length(): number {
    return this.#end - this.first;
  }

  /** Lines overwritten so far. */
  get dropped(): number {
    return this.first;
  }

  push(line: string): void {
    this.#lines[this.#end % this.capacity] =
      line.length > MAX_LINE_CHARS ? `${line.slice(0, MAX_LINE_CHARS)}…` : line;
    this.#end++;
  }

  /** Text as it arrives: complete lines are added, the rest waits for its newline (or flush()). */
  write(text: string): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      const line = text.slice(start, nl);
      this.push(this.#partial ? this.#partial + line : line);
      this.#partial = '';
      start = nl + 1;
    }
    if (start < text.length) {
      this.#partial += text.slice(start);
      if (this.#partial.length > MAX_LINE_CHARS) {
        this.push(this.#partial);
        this.#partial = '';
      }
    }
  }

  /** The text after the last newline, as a line (the stream ended). */
  flush(): void {
    if (this.#partial) this.push(this.#partial);
    this.#partial = '';
  }

  /** Line number `n`, or undefined when it is not kept. */
  at(n: number): string | undefined {
    if (n < this.first || n >= this.#end) return undefined;
    return this.#lines[n % this.capacity];
  }

  /** Lines `from` (inclusive) to `to` (exclusive), clamped to those kept. */
  slice(from: number, to: number): string[] {
    const out: string[] = [];
    for (let n = Math.max(from, this.first); n < Math.min(to, this.#end); n++)
      out.push(this.#lines[n % this.capacity] as string);
    return out;
  }

  clear(): void {
    this.#end = 0;
    this.#partial = '';
    this.#lines.fill('');
  }
}
