// A terminal for Ink in a test process: an output of a given size that emits `resize` and keeps
// every frame, and an input in raw mode whose writes Ink reads as typed keys.
import { EventEmitter } from 'node:events';

/** A terminal's output: its size, its resize events, and every frame Ink wrote (debug mode writes whole frames). */
export class FakeStdout extends EventEmitter {
  readonly isTTY = true;
  frames: string[] = [];
  columns: number;
  rows: number;
  constructor(columns: number, rows: number) {
    super();
    this.columns = columns;
    this.rows = rows;
  }
  write(frame: string, callback?: () => void): boolean {
    this.frames.push(frame);
    callback?.();
    return true;
  }
  lastFrame(): string {
    return this.frames[this.frames.length - 1] ?? '';
  }
  resize(columns: number, rows: number): void {
    this.columns = columns;
    this.rows = rows;
    this.emit('resize');
  }
}

/** A terminal's input in raw mode: what is written is read by Ink as typed keys. */
export class FakeStdin extends EventEmitter {
  readonly isTTY = true;
  #chunks: string[] = [];
  setRawMode(): this {
    return this;
  }
  setEncoding(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
  resume(): this {
    return this;
  }
  pause(): this {
    return this;
  }
  read(): string | null {
    return this.#chunks.shift() ?? null;
  }
  type(text: string): void {
    this.#chunks.push(text);
    this.emit('readable');
  }
}
