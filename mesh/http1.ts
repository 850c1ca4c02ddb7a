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
  /** The bytes the head is in, and where: [start, end) ends after the blank line. */
  buf: Buffer;
  start: number;
  end: number;
  /** Where the start line ends (its CR). */
  lineEnd: number;
  /**
   * Per field line, five offsets into buf: the line's start, the colon, the value's start and
   * end (without surrounding whitespace), and the line's CR. Strings are made only when asked for.
   */
  offsets: number[];
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: 0 | 1;
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
  /** A Host field is present. */
  hasHost: boolean;
}

export interface ResponseHead extends Head {
  status: number;
}

/** The reason phrase of a response's status line (made only when asked for: HTTP/1.0 answers). */
export function reasonPhrase(res: ResponseHead): string {
  return res.lineEnd - res.start > 13 ? latin1(res.buf, res.start + 13, res.lineEnd) : '';
}

export type Parsed<H> =
  | { ok: true; head: H /** Bytes of the head, the blank line included. */; size: number }
  | { ok: false; incomplete: true }
  | { ok: false; incomplete: false; status: 400 | 431 | 505; reason: string };

const INCOMPLETE = { ok: false, incomplete: true } as const;
const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * Bytes as a latin1 string (one char per byte, so values pass through byte for byte).
 * Buffer#latin1Slice is what toString('latin1') calls, without its argument handling.
 */
const latin1 = (buf: Buffer, from: number, to: number): string =>
  (buf as unknown as { latin1Slice(from: number, to: number): string }).latin1Slice(from, to);

/** tchar (RFC 9110 §5.6.2) by byte. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
  TCHAR[c.charCodeAt(0)] = 1;

/** A non-empty run of tchar: a method or field name. */
function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (TCHAR[s.charCodeAt(i)] !== 1) return false;
  return true;
}

function fail(status: 400 | 431 | 505, reason: string) {
  return { ok: false, incomplete: false, status, reason } as const;
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

/** A control character that may not appear in a start line or field value (HTAB may). */
function isCtl(b: number): boolean {
  return (b < 32 && b !== 9) || b === 127;
}

/** The field name of line k in lower case (only for messages and the rare lookups). */
function nameAt(h: Head, k: number): string {
  const o = h.offsets;
  return latin1(h.buf, o[k] as number, o[k + 1] as number);
}

function valueAt(h: Head, k: number): string {
  const o = h.offsets;
  return latin1(h.buf, o[k + 2] as number, o[k + 3] as number);
}

/** Whether field line k is named `lower` (lower-case ASCII), compared byte by byte. */
function nameIs(h: Head, k: number, lower: string): boolean {
  const o = h.offsets;
  const from = o[k] as number;
  if ((o[k + 1] as number) - from !== lower.length) return false;
  const buf = h.buf;
  for (let i = 0; i < lower.length; i++)
    if (((buf[from + i] as number) | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

/** Whether field line k's value is `lower` (lower-case ASCII, any case in the message). */
function valueIs(h: Head, k: number, lower: string): boolean {
  const o = h.offsets;
  const from = o[k + 2] as number;
  if ((o[k + 3] as number) - from !== lower.length) return false;
  const buf = h.buf;
  for (let i = 0; i < lower.length; i++)
    if (((buf[from + i] as number) | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

/** The fields as strings, [name, value, name, value, …] (tests, logs). */
export function fieldsOf(h: Head): string[] {
  const out: string[] = [];
  for (let k = 0; k < h.offsets.length; k += 5) out.push(nameAt(h, k), valueAt(h, k));
  return out;
}

/** The value of the field `lowerName` (lower case), the first if it is given more than once. */
export function fieldValue(h: Head, lowerName: string): string | undefined {
  for (let k = 0; k < h.offsets.length; k += 5) if (nameIs(h, k, lowerName)) return valueAt(h, k);
  return undefined;
}

/** The value of cookie `name` in the request's Cookie fields (RFC 6265 §5.4: `a=1; b=2`). */
export function cookieValue(h: Head, name: string): string | undefined {
  for (let k = 0; k < h.offsets.length; k += 5) {
    if (!nameIs(h, k, 'cookie')) continue;
    for (const pair of valueAt(h, k).split(';')) {
      const eq = pair.indexOf('=');
      if (eq > 0 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/**
 * Scans the head in buf[s, end) (end after the blank line): the start line's end and five offsets
 * per field line, or the reason it is malformed. CR only before LF, LF only after CR, no other
 * control character, no obsolete line folding, a token and a colon (no space before it) for
 * every field name.
 */
function scan(buf: Buffer, s: number, end: number): { lineEnd: number; offsets: number[] } | string {
  let i = s;
  for (;;) {
    const b = buf[i] as number;
    if (b === 13) break;
    if (b === 10 || isCtl(b)) return 'control character, or CR or LF outside a CRLF';
    i++;
  }
  if (buf[i + 1] !== 10) return 'control character, or CR or LF outside a CRLF';
  const lineEnd = i;
  i += 2;
  const offsets: number[] = [];
  const last = end - 2; // the blank line's CR
  while (i < last) {
    const ls = i;
    const first = buf[i] as number;
    if (first === 32 || first === 9) return 'obsolete line folding';
    while (TCHAR[buf[i] as number] === 1) i++;
    if (buf[i] !== 58) {
      let le = i;
      while (le < last && buf[le] !== 13) le++;
      const line = latin1(buf, ls, le);
      const colon = line.indexOf(':');
      if (colon <= 0) return `field line without a name and colon: ${JSON.stringify(line.slice(0, 40))}`;
      if (/[\r\n]/.test(line)) return 'control character, or CR or LF outside a CRLF';
      return `invalid field name ${JSON.stringify(line.slice(0, colon).slice(0, 40))}`;
    }
    if (i === ls) return 'field line without a name and colon: ":"';
    const colon = i;
    i++;
    while (buf[i] === 32 || buf[i] === 9) i++;
    const vs = i;
    let ve = i;
    for (;;) {
      const b = buf[i] as number;
      if (b === 13) break;
      if (b === 10 || isCtl(b)) return 'control character, or CR or LF outside a CRLF';
      i++;
      if (b !== 32 && b !== 9) ve = i;
    }
    if (buf[i + 1] !== 10) return 'control character, or CR or LF outside a CRLF';
    offsets.push(ls, colon, vs, ve, i);
    i += 2;
  }
  return { lineEnd, offsets };
}

interface Fields {
  contentLength: number | undefined;
  transferEncoding: string | undefined;
  connection: string[];
  upgrade: boolean;
  hosts: number;
}

/** What the framing and the connection depend on, from the fields; a string says what is wrong. */
function classify(h: Head): Fields | string {
  const out: Fields = {
    contentLength: undefined,
    transferEncoding: undefined,
    connection: [],
    upgrade: false,
    hosts: 0,
  };
  const o = h.offsets;
  for (let k = 0; k < o.length; k += 5) {
    switch ((o[k + 1] as number) - (o[k] as number)) {
      case 4:
        if (nameIs(h, k, 'host')) out.hosts++;
        break;
      case 7:
        if (nameIs(h, k, 'upgrade')) out.upgrade = true;
        break;
      case 10:
        if (nameIs(h, k, 'connection')) {
          // The usual values without a string made: one option, keep-alive or close.
          if (valueIs(h, k, 'keep-alive')) out.connection.push('keep-alive');
          else if (valueIs(h, k, 'close')) out.connection.push('close');
          else
            for (const option of valueAt(h, k).split(',')) {
              const v = option.trim().toLowerCase();
              if (v) out.connection.push(v);
            }
        }
        break;
      case 14:
        if (nameIs(h, k, 'content-length')) {
          // A list of equal values is one value (RFC 9110 §8.6); anything else is an error.
          const n = contentLengthOf(h.buf, o[k + 2] as number, o[k + 3] as number);
          if (n === undefined) return `invalid Content-Length ${JSON.stringify(valueAt(h, k).slice(0, 40))}`;
          if (out.contentLength !== undefined && out.contentLength !== n)
            return 'Content-Length given twice with different values';
          out.contentLength = n;
        }
        break;
      case 17:
        if (nameIs(h, k, 'transfer-encoding')) {
          const v = valueAt(h, k);
          out.transferEncoding = out.transferEncoding ? `${out.transferEncoding}, ${v}` : v;
        }
        break;
    }
  }
  return out;
}

/** Digits (up to 15), or a comma-separated list of equal such numbers; undefined otherwise. */
function contentLengthOf(buf: Buffer, from: number, to: number): number | undefined {
  let value: number | undefined;
  let n = 0;
  let digits = 0;
  for (let i = from; i <= to; i++) {
    const b = i < to ? (buf[i] as number) : 44;
    if (b >= 48 && b <= 57) {
      if (++digits > 15) return undefined;
      n = n * 10 + (b - 48);
    } else if (b === 44) {
      if (digits === 0 || (value !== undefined && value !== n)) return undefined;
      value = n;
      n = 0;
      digits = 0;
    } else if (b === 32 || b === 9) {
      // whitespace around list members
    } else return undefined;
  }
  return value;
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

/** Parses the request head at `start` of `buf` (empty lines before it are skipped, RFC 9112 §2.2). */
export function parseRequestHead(buf: Buffer, start = 0): Parsed<RequestHead> {
  let s = start;
  while (buf.length >= s + 2 && buf[s] === 13 && buf[s + 1] === 10) s += 2;
  const end0 = buf.indexOf(CRLFCRLF, s);
  if (end0 < 0) return buf.length - s > MAX_HEAD_BYTES ? fail(431, 'request head over 64 KiB') : INCOMPLETE;
  const end = end0 + 4;
  if (end - s > MAX_HEAD_BYTES) return fail(431, 'request head over 64 KiB');
  const scanned = scan(buf, s, end);
  if (typeof scanned === 'string') return fail(400, scanned);
  const line = latin1(buf, s, scanned.lineEnd);
  const sp1 = line.indexOf(' ');
  const sp2 = line.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 <= sp1 + 1 || line.indexOf(' ', sp2 + 1) >= 0)
    return fail(400, `malformed request line ${JSON.stringify(line.slice(0, 80))}`);
  const method = line.slice(0, sp1);
  const target = line.slice(sp1 + 1, sp2);
  const version = line.slice(sp2 + 1);
  if (!isToken(method)) return fail(400, `invalid method ${JSON.stringify(method.slice(0, 40))}`);
  let minor: 0 | 1;
  if (version === 'HTTP/1.1') minor = 1;
  else if (version === 'HTTP/1.0') minor = 0;
  else if (/^HTTP\/\d\.\d$/.test(version)) return fail(505, `${version} is not served: HTTP/1.1 or 1.0`);
  else return fail(400, `malformed request line ${JSON.stringify(line.slice(0, 80))}`);
  const head: RequestHead = {
    buf,
    start: s,
    end,
    lineEnd: scanned.lineEnd,
    offsets: scanned.offsets,
    minor,
    framing: { kind: 'none' },
    keepAlive: false,
    connectionOptions: [],
    connectionUpgrade: false,
    method,
    target,
    upgrade: false,
    hasHost: false,
  };
  const f = classify(head);
  if (typeof f === 'string') return fail(400, f);
  if (minor === 1 && f.hosts !== 1)
    return fail(400, f.hosts === 0 ? 'HTTP/1.1 request without Host' : 'Host given more than once');
  if (f.hosts > 1) return fail(400, 'Host given more than once');
  if (f.transferEncoding !== undefined) {
    if (f.contentLength !== undefined) return fail(400, 'both Transfer-Encoding and Content-Length');
    if (minor === 0) return fail(400, 'Transfer-Encoding in an HTTP/1.0 request');
    if (lastCoding(f.transferEncoding) !== 'chunked')
      return fail(400, `Transfer-Encoding must end with chunked, got ${JSON.stringify(f.transferEncoding)}`);
    head.framing = { kind: 'chunked' };
  } else if (f.contentLength !== undefined && f.contentLength > 0) {
    head.framing = { kind: 'length', length: f.contentLength };
  }
  const c = connectionOf(minor, f.connection);
  head.keepAlive = c.keepAlive;
  head.connectionOptions = c.others;
  head.connectionUpgrade = c.upgrade;
  head.upgrade = c.upgrade && f.upgrade;
  head.hasHost = f.hosts === 1;
  return { ok: true, size: end - start, head };
}

const NO_BODY = { kind: 'none' } as const;
const TO_CLOSE = { kind: 'close' } as const;
const CHUNKED = { kind: 'chunked' } as const;

/**
 * Parses the response head at `start` of `buf`, to a request with `method`. Errors are the
 * upstream's (the proxy answers 502 for them), so their status is only a hint.
 */
export function parseResponseHead(buf: Buffer, start: number, method: string): Parsed<ResponseHead> {
  const end0 = buf.indexOf(CRLFCRLF, start);
  if (end0 < 0)
    return buf.length - start > MAX_HEAD_BYTES ? fail(400, 'response head over 64 KiB') : INCOMPLETE;
  const end = end0 + 4;
  if (end - start > MAX_HEAD_BYTES) return fail(400, 'response head over 64 KiB');
  const scanned = scan(buf, start, end);
  if (typeof scanned === 'string') return fail(400, scanned);
  // HTTP/1.1 200 OK; the reason phrase may be empty, with or without its space.
  const lineEnd = scanned.lineEnd;
  const ok =
    lineEnd - start >= 12 &&
    buf[start] === 72 &&
    buf[start + 1] === 84 &&
    buf[start + 2] === 84 &&
    buf[start + 3] === 80 &&
    buf[start + 4] === 47 &&
    buf[start + 5] === 49 &&
    buf[start + 6] === 46 &&
    (buf[start + 7] === 48 || buf[start + 7] === 49) &&
    buf[start + 8] === 32 &&
    isDigit(buf[start + 9]) &&
    isDigit(buf[start + 10]) &&
    isDigit(buf[start + 11]) &&
    (lineEnd - start === 12 || buf[start + 12] === 32);
  if (!ok)
    return fail(
      400,
      `malformed status line ${JSON.stringify(latin1(buf, start, Math.min(lineEnd, start + 80)))}`,
    );
  const minor = buf[start + 7] === 49 ? 1 : 0;
  const status =
    ((buf[start + 9] as number) - 48) * 100 +
    ((buf[start + 10] as number) - 48) * 10 +
    ((buf[start + 11] as number) - 48);
  const head: ResponseHead = {
    buf,
    start,
    end,
    lineEnd,
    offsets: scanned.offsets,
    minor,
    framing: NO_BODY,
    keepAlive: false,
    connectionOptions: [],
    connectionUpgrade: false,
    status,
  };
  const f = classify(head);
  if (typeof f === 'string') return fail(400, f);
  const c = connectionOf(minor, f.connection);
  let keepAlive = c.keepAlive;
  let framing: BodyFraming;
  if (method === 'HEAD' || (status >= 100 && status < 200) || status === 204 || status === 304) {
    framing = NO_BODY;
  } else if (f.transferEncoding !== undefined) {
    if (f.contentLength !== undefined) return fail(400, 'both Transfer-Encoding and Content-Length');
    if (lastCoding(f.transferEncoding) === 'chunked') framing = CHUNKED;
    else {
      framing = TO_CLOSE;
      keepAlive = false;
    }
  } else if (f.contentLength !== undefined) {
    framing = f.contentLength > 0 ? { kind: 'length', length: f.contentLength } : NO_BODY;
  } else {
    framing = TO_CLOSE;
    keepAlive = false;
  }
  head.framing = framing;
  head.keepAlive = keepAlive;
  head.connectionOptions = c.others;
  head.connectionUpgrade = c.upgrade;
  return { ok: true, size: end - start, head };
}

function isDigit(b: number | undefined): boolean {
  return b !== undefined && b >= 48 && b <= 57;
}

/** Hop-by-hop fields (RFC 9110 §7.6.1): never forwarded; Transfer-Encoding is, since bodies pass unchanged. */
function isHopByHop(h: Head, k: number): boolean {
  const o = h.offsets;
  switch ((o[k + 1] as number) - (o[k] as number)) {
    case 2:
      if (nameIs(h, k, 'te')) return true;
      break;
    case 7:
      if (nameIs(h, k, 'trailer') || nameIs(h, k, 'upgrade')) return true;
      break;
    case 10:
      if (nameIs(h, k, 'connection') || nameIs(h, k, 'keep-alive')) return true;
      break;
    case 16:
      if (nameIs(h, k, 'proxy-connection')) return true;
      break;
  }
  const options = h.connectionOptions;
  return options.length > 0 && options.includes(nameAt(h, k).toLowerCase());
}

/**
 * Copies the head's field lines into a new buffer, leaving out those `drop` says, between a start
 * line and extra lines given as latin1 strings, with `room` bytes free at the end (for a body the
 * caller copies in). Runs of kept lines are copied as one range.
 */
function rebuild(
  h: Head,
  startLine: string | undefined,
  drop: (k: number) => boolean,
  extra: string,
  room: number,
): { buf: Buffer; size: number } {
  const o = h.offsets;
  const ranges: number[] = [];
  let from = -1;
  let to = -1;
  for (let k = 0; k < o.length; k += 5) {
    if (drop(k)) continue;
    const ls = o[k] as number;
    const le = (o[k + 4] as number) + 2;
    if (ls === to) to = le;
    else {
      if (from >= 0) ranges.push(from, to);
      from = ls;
      to = le;
    }
  }
  if (from >= 0) ranges.push(from, to);
  const lineBytes = startLine === undefined ? h.lineEnd + 2 - h.start : startLine.length;
  let size = lineBytes + extra.length + 2;
  for (let r = 0; r < ranges.length; r += 2) size += (ranges[r + 1] as number) - (ranges[r] as number);
  const out = Buffer.allocUnsafe(size + room);
  let at =
    startLine === undefined ? h.buf.copy(out, 0, h.start, h.lineEnd + 2) : out.write(startLine, 0, 'latin1');
  for (let r = 0; r < ranges.length; r += 2)
    at += h.buf.copy(out, at, ranges[r] as number, ranges[r + 1] as number);
  if (extra.length > 0) at += out.write(extra, at, 'latin1');
  out[at] = 13;
  out[at + 1] = 10;
  return { buf: out, size };
}

/**
 * The head to send upstream: the request line as HTTP/1.1, the end-to-end fields as they came,
 * the client's address appended to X-Forwarded-For, X-Forwarded-Proto when absent, Host when the
 * client (an HTTP/1.0 one) gave none, and the Upgrade fields for a tunnelled upgrade.
 */
export function encodeRequestHead(req: RequestHead, clientAddress: string, defaultHost: string): Buffer {
  let forwardedFor: string | undefined;
  let proto = false;
  const o = req.offsets;
  for (let k = 0; k < o.length; k += 5) {
    const len = (o[k + 1] as number) - (o[k] as number);
    if (len === 15 && nameIs(req, k, 'x-forwarded-for')) {
      const v = valueAt(req, k);
      forwardedFor = forwardedFor === undefined ? v : `${forwardedFor}, ${v}`;
    } else if (len === 17 && nameIs(req, k, 'x-forwarded-proto')) proto = true;
  }
  let extra = '';
  if (!req.hasHost) extra += `host: ${defaultHost}\r\n`;
  extra += `x-forwarded-for: ${forwardedFor ? `${forwardedFor}, ${clientAddress}` : clientAddress}\r\n`;
  if (!proto) extra += 'x-forwarded-proto: http\r\n';
  if (req.upgrade) extra += 'connection: upgrade\r\n';
  const startLine = req.minor === 1 ? undefined : `${req.method} ${req.target} HTTP/1.1\r\n`;
  const drop = (k: number) => {
    const len = (o[k + 1] as number) - (o[k] as number);
    if (len === 15 && nameIs(req, k, 'x-forwarded-for')) return true;
    if (len === 7 && req.upgrade && nameIs(req, k, 'upgrade')) return false;
    return isHopByHop(req, k);
  };
  return rebuild(req, startLine, drop, extra, 0).buf;
}

/**
 * The head to send the client, with `room` bytes free after it for the body bytes that came with
 * it: the status line as HTTP/1.1, the end-to-end fields as they came, and the proxy's own
 * Connection field (close when the client connection ends after this response, keep-alive for an
 * HTTP/1.0 client that keeps it).
 */
export function encodeResponseHead(
  res: ResponseHead,
  connection: 'close' | 'keep-alive' | undefined,
  room = 0,
): { buf: Buffer; size: number } {
  const startLine = res.minor === 1 ? undefined : `HTTP/1.1 ${res.status} ${reasonPhrase(res)}\r\n`;
  return rebuild(
    res,
    startLine,
    (k) => isHopByHop(res, k),
    connection ? `connection: ${connection}\r\n` : '',
    room,
  );
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
