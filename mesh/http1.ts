/**
 * HTTP/1.1 message framing for the proxy's `http` ports (docs/DESIGN.md §6.1), after RFC 9110 and
 * RFC 9112. Pure: buffers in, parsed heads and framing decisions out, no sockets. The proxy
 * parses only what it must to forward a message: the start line, the header fields, the body's
 * framing and the connection options; bodies pass through untouched (chunked stays chunked), so
 * the framing state machines below only find where a body ends.
 *
 * Strict where leniency lets two parties disagree on where a message ends (request smuggling):
 * CR and LF only as CRLF, no obsolete line folding, no space before a field's colon, one
 * Content-Length, never Content-Length beside Transfer-Encoding, chunked last or nothing.
 */

/** A request or response head larger than this is refused (431 for a request, 502 for a response). */
export const MAX_HEAD_BYTES = 64 * 1024;
/** The longest chunk-size line (with extensions) and trailer section accepted. */
const MAX_CHUNK_LINE = 4096;
const MAX_TRAILERS = 16 * 1024;

export type BodyFraming =
  | { kind: 'none' }
  | { kind: 'length'; length: number }
  | { kind: 'chunked' }
  /** Response only: the body ends when the upstream closes the connection. */
  | { kind: 'close' };

interface Head {
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: 0 | 1;
  /** Field names as sent and values without surrounding whitespace: [name, value, name, value, …]. */
  fields: string[];
  framing: BodyFraming;
  /** The connection persists after this message (by version and the Connection field). */
  keepAlive: boolean;
  /** Lower-case names listed in Connection (close, keep-alive and upgrade left out). */
  connectionOptions: string[];
  /** Connection lists `upgrade`. */
  connectionUpgrade: boolean;
}

export interface RequestHead extends Head {
  method: string;
  target: string;
  /** An Upgrade request (Connection: upgrade with an Upgrade field): tunnelled, never retried. */
  upgrade: boolean;
  /** The Host field, when present. */
  host: string | undefined;
}

export interface ResponseHead extends Head {
  status: number;
  reason: string;
}

export type Parsed<H> =
  | { ok: true; head: H /** Bytes of the head, the blank line included. */; size: number }
  | { ok: false; incomplete: true }
  | { ok: false; incomplete: false; status: 400 | 431 | 501 | 505; reason: string };

const INCOMPLETE = { ok: false, incomplete: true } as const;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Control characters other than HTAB, and CR or LF that are not a CRLF pair. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const BAD_CHARS = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n/;
const CRLFCRLF = Buffer.from('\r\n\r\n');
const DIGITS = /^\d{1,15}$/;

function fail(status: 400 | 431 | 501 | 505, reason: string) {
  return { ok: false, incomplete: false, status, reason } as const;
}

/** The value of the field `lowerName` (lower case), the first if it is given more than once. */
export function fieldValue(head: { fields: string[] }, lowerName: string): string | undefined {
  const f = head.fields;
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i] as string;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) return f[i + 1];
  }
  return undefined;
}

/** The value of cookie `name` in the request's Cookie fields (RFC 6265 §5.4: `a=1; b=2`). */
export function cookieValue(head: { fields: string[] }, name: string): string | undefined {
  const f = head.fields;
  for (let i = 0; i < f.length; i += 2) {
    if ((f[i] as string).length !== 6 || (f[i] as string).toLowerCase() !== 'cookie') continue;
    for (const pair of (f[i + 1] as string).split(';')) {
      const eq = pair.indexOf('=');
      if (eq > 0 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/** The methods RFC 9110 §9.2.2 calls idempotent: a request of one may be sent twice. */
export function isIdempotent(method: string): boolean {
  switch (method) {
    case 'GET':
    case 'HEAD':
    case 'OPTIONS':
    case 'TRACE':
    case 'PUT':
    case 'DELETE':
      return true;
    default:
      return false;
  }
}

/**
 * Finds the end of a head that starts at `start` in `buf`: the index after its blank line, or -1
 * when it is not all there yet.
 */
function headEnd(buf: Buffer, start: number): number {
  const i = buf.indexOf(CRLFCRLF, start);
  return i < 0 ? -1 : i + 4;
}

interface Fields {
  fields: string[];
  contentLength: number | undefined;
  transferEncoding: string | undefined;
  connection: string[];
  upgrade: boolean;
  host: string | undefined;
  hosts: number;
}

/** Parses the field lines of a head (lines[1..]); a string is the reason it is malformed. */
function parseFields(lines: string[]): Fields | string {
  const out: Fields = {
    fields: [],
    contentLength: undefined,
    transferEncoding: undefined,
    connection: [],
    upgrade: false,
    host: undefined,
    hosts: 0,
  };
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line === '') continue; // the blank line that ends the head
    const first = line.charCodeAt(0);
    if (first === 32 || first === 9) return 'obsolete line folding';
    const colon = line.indexOf(':');
    if (colon <= 0) return `field line without a name and colon: ${JSON.stringify(line.slice(0, 40))}`;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return `invalid field name ${JSON.stringify(name.slice(0, 40))}`;
    const value = line.slice(colon + 1).trim();
    out.fields.push(name, value);
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === 'host') {
          out.host = value;
          out.hosts++;
        }
        break;
      case 7:
        if (name.toLowerCase() === 'upgrade') out.upgrade = true;
        break;
      case 10:
        if (name.toLowerCase() === 'connection') {
          for (const option of value.split(',')) {
            const o = option.trim().toLowerCase();
            if (o) out.connection.push(o);
          }
        }
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') {
          // A list of equal values is one value (RFC 9110 §8.6); anything else is an error.
          for (const part of value.split(',')) {
            const v = part.trim();
            if (!DIGITS.test(v)) return `invalid Content-Length ${JSON.stringify(value.slice(0, 40))}`;
            const n = Number(v);
            if (out.contentLength !== undefined && out.contentLength !== n)
              return 'Content-Length given twice with different values';
            out.contentLength = n;
          }
        }
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding')
          out.transferEncoding = out.transferEncoding ? `${out.transferEncoding}, ${value}` : value;
        break;
    }
  }
  return out;
}

/** The last transfer coding, lower-case. */
function lastCoding(te: string): string {
  const parts = te.split(',');
  return (parts[parts.length - 1] as string).trim().toLowerCase();
}

function connectionOf(minor: 0 | 1, options: string[]) {
  let close = false;
  let keepAlive = false;
  let upgrade = false;
  const others: string[] = [];
  for (const o of options) {
    if (o === 'close') close = true;
    else if (o === 'keep-alive') keepAlive = true;
    else if (o === 'upgrade') upgrade = true;
    else others.push(o);
  }
  return { keepAlive: !close && (minor === 1 || keepAlive), upgrade, others };
}

function splitHead(buf: Buffer, start: number, end: number): string[] | string {
  // latin1: one char per byte, so field values pass through byte for byte.
  const text = buf.toString('latin1', start, end - 4);
  if (BAD_CHARS.test(text)) return 'control character, or CR or LF outside a CRLF';
  return text.split('\r\n');
}

/** Parses the request head at `start` of `buf` (empty lines before it are skipped, RFC 9112 §2.2). */
export function parseRequestHead(buf: Buffer, start = 0): Parsed<RequestHead> {
  let s = start;
  while (buf.length >= s + 2 && buf[s] === 13 && buf[s + 1] === 10) s += 2;
  const end = headEnd(buf, s);
  if (end < 0) return buf.length - s > MAX_HEAD_BYTES ? fail(431, 'request head over 64 KiB') : INCOMPLETE;
  if (end - s > MAX_HEAD_BYTES) return fail(431, 'request head over 64 KiB');
  const lines = splitHead(buf, s, end);
  if (typeof lines === 'string') return fail(400, lines);
  const line = lines[0] as string;
  const sp1 = line.indexOf(' ');
  const sp2 = line.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 <= sp1 + 1 || line.indexOf(' ', sp2 + 1) >= 0)
    return fail(400, `malformed request line ${JSON.stringify(line.slice(0, 80))}`);
  const method = line.slice(0, sp1);
  const target = line.slice(sp1 + 1, sp2);
  const version = line.slice(sp2 + 1);
  if (!TOKEN.test(method)) return fail(400, `invalid method ${JSON.stringify(method.slice(0, 40))}`);
  let minor: 0 | 1;
  if (version === 'HTTP/1.1') minor = 1;
  else if (version === 'HTTP/1.0') minor = 0;
  else if (/^HTTP\/\d\.\d$/.test(version)) return fail(505, `${version} is not served: HTTP/1.1 or 1.0`);
  else return fail(400, `malformed request line ${JSON.stringify(line.slice(0, 80))}`);
  const f = parseFields(lines);
  if (typeof f === 'string') return fail(400, f);
  if (minor === 1 && f.hosts !== 1)
    return fail(400, f.hosts === 0 ? 'HTTP/1.1 request without Host' : 'Host given more than once');
  if (f.hosts > 1) return fail(400, 'Host given more than once');
  let framing: BodyFraming = { kind: 'none' };
  if (f.transferEncoding !== undefined) {
    if (f.contentLength !== undefined) return fail(400, 'both Transfer-Encoding and Content-Length');
    if (minor === 0) return fail(400, 'Transfer-Encoding in an HTTP/1.0 request');
    if (lastCoding(f.transferEncoding) !== 'chunked')
      return fail(400, `Transfer-Encoding must end with chunked, got ${JSON.stringify(f.transferEncoding)}`);
    framing = { kind: 'chunked' };
  } else if (f.contentLength !== undefined && f.contentLength > 0) {
    framing = { kind: 'length', length: f.contentLength };
  }
  const c = connectionOf(minor, f.connection);
  return {
    ok: true,
    size: end - start,
    head: {
      method,
      target,
      minor,
      fields: f.fields,
      framing,
      keepAlive: c.keepAlive,
      connectionOptions: c.others,
      connectionUpgrade: c.upgrade,
      upgrade: c.upgrade && f.upgrade,
      host: f.host,
    },
  };
}

/**
 * Parses the response head at `start` of `buf`, to a request with `method`. Errors are the
 * upstream's (the proxy answers 502 for them), so their status is only a hint.
 */
export function parseResponseHead(buf: Buffer, start: number, method: string): Parsed<ResponseHead> {
  const end = headEnd(buf, start);
  if (end < 0)
    return buf.length - start > MAX_HEAD_BYTES ? fail(400, 'response head over 64 KiB') : INCOMPLETE;
  if (end - start > MAX_HEAD_BYTES) return fail(400, 'response head over 64 KiB');
  const lines = splitHead(buf, start, end);
  if (typeof lines === 'string') return fail(400, lines);
  const line = lines[0] as string;
  // HTTP/1.1 200 OK; the reason phrase may be empty, with or without its space.
  const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(line);
  if (!m) return fail(400, `malformed status line ${JSON.stringify(line.slice(0, 80))}`);
  const minor = m[1] === '1' ? 1 : 0;
  const status = Number(m[2]);
  const f = parseFields(lines);
  if (typeof f === 'string') return fail(400, f);
  const c = connectionOf(minor, f.connection);
  let framing: BodyFraming;
  let keepAlive = c.keepAlive;
  if (method === 'HEAD' || (status >= 100 && status < 200) || status === 204 || status === 304) {
    framing = { kind: 'none' };
  } else if (f.transferEncoding !== undefined) {
    if (f.contentLength !== undefined) return fail(400, 'both Transfer-Encoding and Content-Length');
    if (lastCoding(f.transferEncoding) === 'chunked') framing = { kind: 'chunked' };
    else {
      framing = { kind: 'close' };
      keepAlive = false;
    }
  } else if (f.contentLength !== undefined) {
    framing = f.contentLength > 0 ? { kind: 'length', length: f.contentLength } : { kind: 'none' };
  } else {
    framing = { kind: 'close' };
    keepAlive = false;
  }
  return {
    ok: true,
    size: end - start,
    head: {
      status,
      reason: m[3] ?? '',
      minor,
      fields: f.fields,
      framing,
      keepAlive,
      connectionOptions: c.others,
      connectionUpgrade: c.upgrade,
    },
  };
}

/** Hop-by-hop fields (RFC 9110 §7.6.1): never forwarded; Transfer-Encoding is, since bodies pass unchanged. */
function isHopByHop(lower: string, options: readonly string[]): boolean {
  switch (lower) {
    case 'connection':
    case 'keep-alive':
    case 'proxy-connection':
    case 'te':
    case 'trailer':
    case 'upgrade':
      return true;
    default:
      return options.length > 0 && options.includes(lower);
  }
}

/**
 * A field name in lower case when it may be one the proxy drops or rewrites (by its length: TE,
 * Trailer, Upgrade, Connection, Keep-Alive, X-Forwarded-For, Proxy-Connection,
 * X-Forwarded-Proto, or one Connection names), else undefined: most fields cost no copy.
 */
function lowerIfSpecial(name: string, options: readonly string[]): string | undefined {
  switch (name.length) {
    case 2:
    case 7:
    case 10:
    case 15:
    case 16:
    case 17:
      return name.toLowerCase();
    default:
      return options.length > 0 ? name.toLowerCase() : undefined;
  }
}

/**
 * The head to send upstream: the request line as HTTP/1.1, the end-to-end fields, the client's
 * address appended to X-Forwarded-For, X-Forwarded-Proto when absent, Host when the client (an
 * HTTP/1.0 one) gave none, and the Upgrade fields for a tunnelled upgrade.
 */
export function upstreamRequestHead(req: RequestHead, clientAddress: string, defaultHost: string): string {
  let out = `${req.method} ${req.target} HTTP/1.1\r\n`;
  let forwardedFor: string | undefined;
  let proto = false;
  const f = req.fields;
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i] as string;
    const value = f[i + 1] as string;
    const lower = lowerIfSpecial(name, req.connectionOptions);
    if (lower === undefined) {
      out += `${name}: ${value}\r\n`;
      continue;
    }
    if (lower === 'x-forwarded-for') {
      forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`;
      continue;
    }
    if (lower === 'upgrade' && req.upgrade) {
      out += `${name}: ${value}\r\n`;
      continue;
    }
    if (isHopByHop(lower, req.connectionOptions)) continue;
    if (lower === 'x-forwarded-proto') proto = true;
    out += `${name}: ${value}\r\n`;
  }
  if (req.host === undefined) out += `host: ${defaultHost}\r\n`;
  out += `x-forwarded-for: ${forwardedFor ? `${forwardedFor}, ${clientAddress}` : clientAddress}\r\n`;
  if (!proto) out += 'x-forwarded-proto: http\r\n';
  if (req.upgrade) out += 'connection: upgrade\r\n';
  // A 1.0 client's body without framing has none; 1.1 keeps the connection by default.
  return `${out}\r\n`;
}

/**
 * The head to send the client: the status line as HTTP/1.1, the end-to-end fields, and the
 * proxy's own Connection field (close when the client connection ends after this response,
 * keep-alive for an HTTP/1.0 client that keeps it).
 */
export function downstreamResponseHead(
  res: ResponseHead,
  connection: 'close' | 'keep-alive' | undefined,
): string {
  let out = `HTTP/1.1 ${res.status} ${res.reason}\r\n`;
  const f = res.fields;
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i] as string;
    const lower = lowerIfSpecial(name, res.connectionOptions);
    if (lower !== undefined && isHopByHop(lower, res.connectionOptions)) continue;
    out += `${name}: ${f[i + 1] as string}\r\n`;
  }
  if (connection) out += `connection: ${connection}\r\n`;
  return `${out}\r\n`;
}

/** A response the proxy makes itself (no endpoint, overflow, timeout, bad request). */
export function localResponse(
  status: number,
  reason: string,
  body: string,
  opts: { close: boolean; headers?: Record<string, string> },
): string {
  let out = `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`;
  for (const [k, v] of Object.entries(opts.headers ?? {})) out += `${k}: ${v}\r\n`;
  if (opts.close) out += 'connection: close\r\n';
  return `${out}\r\n${body}`;
}

/**
 * Where a body ends, fed one buffer at a time. feed() returns the index in `buf` just after the
 * body's last byte, or -1 when all of buf[start..] belongs to the body and more is to come;
 * `error` is set (and -1 returned) for a malformed chunked body.
 */
export interface BodyEnd {
  feed(buf: Buffer, start: number): number;
  error: string | undefined;
  /** The body ended. */
  done: boolean;
}

export function bodyEnd(framing: BodyFraming): BodyEnd {
  switch (framing.kind) {
    case 'none':
      return { feed: (_b, start) => start, error: undefined, done: true };
    case 'length':
      return new LengthEnd(framing.length);
    case 'chunked':
      return new ChunkedEnd();
    case 'close':
      return { feed: () => -1, error: undefined, done: false };
  }
}

class LengthEnd implements BodyEnd {
  #left: number;
  error = undefined;
  done = false;
  constructor(length: number) {
    this.#left = length;
  }
  feed(buf: Buffer, start: number): number {
    const available = buf.length - start;
    if (available < this.#left) {
      this.#left -= available;
      return -1;
    }
    const end = start + this.#left;
    this.#left = 0;
    this.done = true;
    return end;
  }
}

/** States of the chunked parser. */
const C = {
  Size: 0,
  Ext: 1,
  SizeLf: 2,
  Data: 3,
  DataCr: 4,
  DataLf: 5,
  Trailer: 6,
  TrailerLf: 7,
} as const;

/** The chunked coding (RFC 9112 §7.1): size line, data, CRLF; a zero size, trailers, blank line. */
class ChunkedEnd implements BodyEnd {
  error: string | undefined = undefined;
  done = false;
  #state: number = C.Size;
  #size = 0;
  #digits = 0;
  #lineBytes = 0;
  #trailerBytes = 0;
  /** Bytes in the current trailer line (0 at the start of one). */
  #trailerLine = 0;

  feed(buf: Buffer, start: number): number {
    let i = start;
    const n = buf.length;
    while (i < n) {
      switch (this.#state) {
        case C.Data: {
          const take = Math.min(this.#size, n - i);
          this.#size -= take;
          i += take;
          if (this.#size === 0) this.#state = C.DataCr;
          continue;
        }
        case C.Size: {
          const b = buf[i] as number;
          const d = hexValue(b);
          if (d >= 0) {
            if (++this.#digits > 12) return this.#fail('chunk size too large');
            this.#size = this.#size * 16 + d;
          } else if (this.#digits === 0) {
            return this.#fail('chunk size expected');
          } else if (b === 13) {
            this.#state = C.SizeLf;
          } else if (b === 59 /* ; */ || b === 32 || b === 9) {
            this.#state = C.Ext;
          } else {
            return this.#fail('invalid chunk size line');
          }
          break;
        }
        case C.Ext: {
          const b = buf[i] as number;
          if (b === 13) this.#state = C.SizeLf;
          else if (b === 10 || (b < 32 && b !== 9) || b === 127) return this.#fail('invalid chunk extension');
          break;
        }
        case C.SizeLf: {
          if (buf[i] !== 10) return this.#fail('CR without LF after the chunk size');
          this.#digits = 0;
          this.#lineBytes = 0;
          if (this.#size === 0) {
            this.#state = C.Trailer;
            this.#trailerLine = 0;
          } else this.#state = C.Data;
          break;
        }
        case C.DataCr:
          if (buf[i] !== 13) return this.#fail('chunk data longer than its size');
          this.#state = C.DataLf;
          break;
        case C.DataLf:
          if (buf[i] !== 10) return this.#fail('CR without LF after chunk data');
          this.#state = C.Size;
          this.#size = 0;
          break;
        case C.Trailer: {
          const b = buf[i] as number;
          if (++this.#trailerBytes > MAX_TRAILERS) return this.#fail('trailer section too large');
          if (b === 13) this.#state = C.TrailerLf;
          else if (b === 10) return this.#fail('LF without CR in the trailer section');
          else this.#trailerLine++;
          break;
        }
        case C.TrailerLf: {
          if (buf[i] !== 10) return this.#fail('CR without LF in the trailer section');
          if (this.#trailerLine === 0) {
            this.done = true;
            return i + 1;
          }
          this.#trailerLine = 0;
          this.#state = C.Trailer;
          break;
        }
      }
      if (this.#state !== C.Data && ++this.#lineBytes > MAX_CHUNK_LINE && this.#state !== C.Trailer)
        return this.#fail('chunk size line too long');
      i++;
    }
    return -1;
  }

  #fail(reason: string): number {
    this.error = reason;
    return -1;
  }
}

function hexValue(b: number): number {
  if (b >= 48 && b <= 57) return b - 48;
  if (b >= 97 && b <= 102) return b - 87;
  if (b >= 65 && b <= 70) return b - 55;
  return -1;
}
