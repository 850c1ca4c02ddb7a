// HTTP/1.1 framing of the proxy's http ports (mesh/http1.ts): what is accepted, what is refused
// with which status, where bodies end however the bytes are split, and what is forwarded.
import test from 'ava';
import { hashKey } from '../../mesh/http.ts';
import {
  bodyEnd,
  cookieValue,
  encodeRequestHead,
  encodeResponseHead,
  fieldsOf,
  fieldValue,
  isIdempotent,
  MAX_HEAD_BYTES,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
} from '../../mesh/http1.ts';

const b = (s: string) => Buffer.from(s, 'latin1');

function request(text: string): RequestHead {
  const r = parseRequestHead(b(text));
  if (!r.ok) throw new Error(r.incomplete ? 'incomplete' : `${r.status} ${r.reason}`);
  return r.head;
}

function refused(text: string): { status: number; reason: string } {
  const r = parseRequestHead(b(text));
  if (r.ok || r.incomplete) throw new Error(`accepted: ${text}`);
  return { status: r.status, reason: r.reason };
}

test('a request head: method, target, fields, framing, keep-alive, and its size', (t) => {
  const text = 'POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Y:  z  \r\n\r\nhello';
  const r = parseRequestHead(b(text));
  t.true(r.ok);
  if (!r.ok) return;
  t.is(r.size, text.length - 5);
  t.is(r.head.method, 'POST');
  t.is(r.head.target, '/a?b=1');
  t.deepEqual(r.head.framing, { kind: 'length', length: 5 });
  t.true(r.head.keepAlive);
  t.deepEqual(fieldsOf(r.head), ['Host', 'x', 'Content-Length', '5', 'X-Y', 'z']);
});

test('incomplete until the blank line; empty lines before a request are skipped', (t) => {
  t.deepEqual(parseRequestHead(b('GET / HTTP/1.1\r\nHost: x\r\n')), { ok: false, incomplete: true });
  const r = parseRequestHead(b('\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  t.true(r.ok);
  if (r.ok) t.is(r.size, 4 + 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'.length);
});

test('keep-alive by version and Connection; Upgrade needs both fields', (t) => {
  t.false(request('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n').keepAlive);
  t.false(request('GET / HTTP/1.0\r\n\r\n').keepAlive);
  t.true(request('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n').keepAlive);
  const ws = request(
    'GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n',
  );
  t.true(ws.upgrade);
  t.false(request('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n').upgrade);
});

test('malformed requests are refused with 400 and a reason; a head over 64 KiB with 431', (t) => {
  const cases: [string, RegExp][] = [
    ['GET /\r\n\r\n', /request line/],
    ['GET  / HTTP/1.1\r\nHost: x\r\n\r\n', /request line/],
    ['G(T / HTTP/1.1\r\nHost: x\r\n\r\n', /method/],
    ['GET / HTTP/1.1\r\n\r\n', /without Host/],
    ['GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', /more than once/],
    ['GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n', /field name/],
    ['GET / HTTP/1.1\r\nHost: x\r\nName : v\r\n\r\n', /field name/],
    ['GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n folded\r\n\r\n', /folding/],
    ['GET / HTTP/1.1\r\nHost: x\r\nA: b\nB: c\r\n\r\n', /CR or LF/],
    ['GET / HTTP/1.1\r\nHost: x\r\nA: b\x00c\r\n\r\n', /control character/],
    ['GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n', /colon/],
  ];
  for (const [text, reason] of cases) {
    const r = refused(text);
    t.is(r.status, 400, JSON.stringify(text));
    t.regex(r.reason, reason, JSON.stringify(text));
  }
  t.is(refused('GET / HTTP/2.0\r\nHost: x\r\n\r\n').status, 505);
  const big = `GET / HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(MAX_HEAD_BYTES)}\r\n\r\n`;
  t.is(refused(big).status, 431);
  // Too large even before the blank line arrives: no need to wait for more.
  t.is(refused(`GET / HTTP/1.1\r\nX: ${'a'.repeat(MAX_HEAD_BYTES)}`).status, 431);
});

test('request smuggling: Content-Length beside Transfer-Encoding, differing lengths, chunked not last', (t) => {
  t.regex(
    refused('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n').reason,
    /both/,
  );
  t.regex(
    refused('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n').reason,
    /different/,
  );
  t.regex(refused('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n').reason, /Content-Length/);
  t.regex(refused('POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n').reason, /chunked/);
  t.regex(refused('POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n').reason, /1\.0/);
  // Equal values listed are one value.
  t.deepEqual(request('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n').framing, {
    kind: 'length',
    length: 3,
  });
  t.deepEqual(request('POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n').framing, {
    kind: 'chunked',
  });
});

test('response framing: none for HEAD, 1xx, 204, 304; chunked; length; else to the close', (t) => {
  const frame = (text: string, method = 'GET') => {
    const r = parseResponseHead(b(text), 0, method);
    if (!r.ok) throw new Error('refused');
    return { framing: r.head.framing, keepAlive: r.head.keepAlive, status: r.head.status };
  };
  t.deepEqual(frame('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n', 'HEAD').framing, { kind: 'none' });
  t.deepEqual(frame('HTTP/1.1 204 No Content\r\n\r\n').framing, { kind: 'none' });
  t.deepEqual(frame('HTTP/1.1 304 Not Modified\r\n\r\n').framing, { kind: 'none' });
  t.deepEqual(frame('HTTP/1.1 100 Continue\r\n\r\n').framing, { kind: 'none' });
  t.deepEqual(frame('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n').framing, { kind: 'chunked' });
  t.deepEqual(frame('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n').framing, { kind: 'none' });
  const close = frame('HTTP/1.1 200 OK\r\n\r\n');
  t.deepEqual(close.framing, { kind: 'close' });
  t.false(close.keepAlive, 'a body read to the close ends the connection');
  t.deepEqual(frame('HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n').keepAlive, false);
  t.deepEqual(frame('HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n').status, 200, 'no reason phrase');
  t.false(parseResponseHead(b('HTTP/1.1 2000 OK\r\n\r\n'), 0, 'GET').ok);
  t.false(
    parseResponseHead(
      b('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n'),
      0,
      'GET',
    ).ok,
  );
});

test('a chunked body ends where it ends, however the bytes are split', (t) => {
  const body = '5;ext=1\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: v\r\n\r\n';
  const after = 'GET /next';
  const all = b(body + after);
  for (let split = 0; split <= all.length; split++) {
    const end = bodyEnd({ kind: 'chunked' });
    const first = all.subarray(0, split);
    const second = all.subarray(split);
    let at = end.feed(first, 0);
    if (at >= 0) {
      t.is(at, body.length, `split at ${split}`);
      continue;
    }
    at = end.feed(second, 0);
    t.is(split + at, body.length, `split at ${split}`);
    t.true(end.done);
    t.is(end.error, undefined);
  }
});

test('malformed chunked bodies are errors, not guesses', (t) => {
  for (const bad of ['zz\r\n', '5\r\nhelloX\r\n', '5\nhello', '1234567890abc\r\n', '0\r\nA: b\nB\r\n\r\n']) {
    const end = bodyEnd({ kind: 'chunked' });
    t.is(end.feed(b(bad), 0), -1, bad);
    t.truthy(end.error, JSON.stringify(bad));
  }
});

test('a length body ends after its bytes, split or not; an offset start counts from there', (t) => {
  const end = bodyEnd({ kind: 'length', length: 10 });
  t.is(end.feed(b('xx12345'), 2), -1);
  t.is(end.feed(b('67890rest'), 0), 5);
  t.true(end.done);
});

test('forwarded request: hop-by-hop fields dropped, X-Forwarded-For appended, Host for HTTP/1.0', (t) => {
  const head = request(
    'GET /p HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\nTE: trailers\r\nProxy-Connection: x\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\r\n',
  );
  const out = encodeRequestHead(head, '127.0.0.9', '127.77.0.1:80').toString('latin1');
  t.is(
    out,
    'GET /p HTTP/1.1\r\nHost: web\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1, 127.0.0.9\r\nx-forwarded-proto: http\r\n\r\n',
  );
  const old = encodeRequestHead(request('GET / HTTP/1.0\r\n\r\n'), '127.0.0.9', '127.77.0.1:80').toString(
    'latin1',
  );
  t.regex(old, /^GET \/ HTTP\/1\.1\r\n/);
  t.regex(old, /\r\nhost: 127\.77\.0\.1:80\r\n/);
  const ws = encodeRequestHead(
    request('GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'),
    '127.0.0.9',
    'v',
  ).toString('latin1');
  t.regex(ws, /\r\nUpgrade: websocket\r\n/);
  t.regex(ws, /\r\nconnection: upgrade\r\n/);
});

test('forwarded response: hop-by-hop fields dropped, the proxy says its own Connection', (t) => {
  const r = parseResponseHead(
    b(
      'HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=75\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\n',
    ),
    0,
    'GET',
  );
  if (!r.ok) return t.fail('refused');
  t.is(
    encodeResponseHead(r.head, undefined).buf.toString('latin1'),
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n',
  );
  t.is(
    encodeResponseHead(r.head, 'close').buf.toString('latin1'),
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nconnection: close\r\n\r\n',
  );
});

test('idempotent methods are those RFC 9110 names', (t) => {
  for (const m of ['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']) t.true(isIdempotent(m), m);
  for (const m of ['POST', 'PATCH', 'CONNECT', 'get']) t.false(isIdempotent(m), m);
});

test('ring-hash keys: a header (any case), a cookie among others, else the client address', (t) => {
  const head = request(
    'GET / HTTP/1.1\r\nHost: x\r\nX-User: alice\r\nCookie: a=1; session=s-42; b=2\r\n\r\n',
  );
  t.is(fieldValue(head, 'x-user'), 'alice');
  t.is(cookieValue(head, 'session'), 's-42');
  t.is(cookieValue(head, 'sess'), undefined);
  t.is(hashKey({ hashOn: { header: 'x-user' } }, head, '127.0.0.1'), 'alice');
  t.is(hashKey({ hashOn: { cookie: 'session' } }, head, '127.0.0.1'), 's-42');
  t.is(hashKey({ hashOn: { header: 'x-none' } }, head, '127.0.0.9'), '127.0.0.9');
  t.is(hashKey({ hashOn: undefined }, head, '127.0.0.9'), '127.0.0.9');
});
