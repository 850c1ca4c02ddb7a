// A parser of server-sent events, shared by the clients of the runtimes' event streams
// (`GET /v1/events`, docs/DESIGN.md §5.8): the mesh proxy's local feed and the TUI.

export interface SseEvent {
  type: string;
  data: string;
}

/**
 * An incremental parser of a `text/event-stream` body (WHATWG HTML, "Server-sent events": lines
 * end in CRLF, LF or CR; `:` starts a comment; `event` and `data` fields; a blank line dispatches
 * an event that has data). `id` and `retry` are not used.
 */
export class SseParser {
  readonly #onEvent: (event: SseEvent) => void;
  #partial = '';
  #type = '';
  #data: string[] = [];
  /** The last chunk ended in CR: a LF opening the next one belongs to that line end. */
  #skipLf = false;

  constructor(onEvent: (event: SseEvent) => void) {
    this.#onEvent = onEvent;
  }

  push(chunk: string): void {
    let start = 0;
    if (this.#skipLf && chunk.charCodeAt(0) === 10) start = 1;
    this.#skipLf = false;
    for (let i = start; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const piece = chunk.slice(start, i);
      const line = this.#partial === '' ? piece : this.#partial + piece;
      this.#partial = '';
      if (c === 13) {
        if (i + 1 === chunk.length) this.#skipLf = true;
        else if (chunk.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
      this.#line(line);
    }
    if (start < chunk.length) this.#partial += chunk.slice(start);
  }

  #line(line: string): void {
    if (line === '') {
      if (this.#data.length > 0)
        this.#onEvent({ type: this.#type || 'message', data: this.#data.join('\n') });
      this.#type = '';
      this.#data = [];
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ':' a comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'event') this.#type = value;
    else if (field === 'data') this.#data.push(value);
  }
}
