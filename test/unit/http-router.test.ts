import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import test from 'ava';
import { HttpError, Router, sendJson } from '../../platform/http-router.ts';

async function serve(router: Router): Promise<{ url: string; server: Server }> {
  const server = createServer(router.listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

function router(errors: Error[] = []): Router {
  return new Router({
    notFound: (req, res) => sendJson(res, { error: `nothing at ${req.path}` }, 404),
    onServerError: (err) => errors.push(err),
  })
    .use((req, res) => {
      if (req.header('X-Block') === undefined) return false;
      sendJson(res, { blocked: true }, 403, { 'X-Why': 'blocked' });
      return true;
    })
    .get('/v1/things', (req, res) => sendJson(res, { all: true, q: req.query.getAll('q') }))
    .get('/v1/things/:ns/:name', (req, res) => sendJson(res, { params: req.params }))
    .get('/v1/fail', () => {
      throw new HttpError(409, 'taken', { 'Retry-After': '2' });
    })
    .get('/v1/reject', async () => {
      await Promise.resolve();
      throw new Error('broken inside');
    });
}

test('routes match by segment, decode their parameters and ignore a trailing slash', async (t) => {
  const { url, server } = await serve(router());
  t.teardown(() => server.close());
  t.deepEqual(await (await fetch(`${url}/v1/things/`)).json(), { all: true, q: [] });
  t.deepEqual(await (await fetch(`${url}/v1/things?q=a&q=b`)).json(), { all: true, q: ['a', 'b'] });
  t.deepEqual(await (await fetch(`${url}/v1/things/a%2Fb/c`)).json(), { params: { ns: 'a/b', name: 'c' } });
  const miss = await fetch(`${url}/v1/things/a`);
  t.is(miss.status, 404);
  t.deepEqual(await miss.json(), { error: 'nothing at /v1/things/a' });
  t.is((await fetch(`${url}/v1/things/%E0%A4%A/x`)).status, 404, 'a malformed escape matches nothing');
  t.is((await fetch(`${url}/v1/things`, { method: 'POST' })).status, 404, 'GET routes only');
  const head = await fetch(`${url}/v1/things`, { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(await head.text(), '');
});

test('middleware answers first; errors carry their status and headers; a rejection is a 500', async (t) => {
  const errors: Error[] = [];
  const { url, server } = await serve(router(errors));
  t.teardown(() => server.close());
  const blocked = await fetch(`${url}/v1/things`, { headers: { 'x-block': '1' } });
  t.is(blocked.status, 403);
  t.is(blocked.headers.get('x-why'), 'blocked');
  const fail = await fetch(`${url}/v1/fail`);
  t.is(fail.status, 409);
  t.is(fail.headers.get('retry-after'), '2');
  t.deepEqual(await fail.json(), { error: 'taken' });
  t.deepEqual(errors, [], 'a 4xx is not a server error');
  const rejected = await fetch(`${url}/v1/reject`);
  t.is(rejected.status, 500);
  t.deepEqual(await rejected.json(), { error: 'broken inside' });
  t.deepEqual(
    errors.map((e) => e.message),
    ['broken inside'],
  );
});
