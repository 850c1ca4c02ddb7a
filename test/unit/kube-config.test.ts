import test from 'ava';
import { Backoff, linkedAbort } from '../../kube/backoff.ts';
import { isConflict, isGone, isNotFound, isRetryable, KubeApiError } from '../../kube/errors.ts';
import { objectKey, splitKey } from '../../kube/types.ts';

test('API errors are classified by status and reason', (t) => {
  const err = (status: number, reason?: string) =>
    new KubeApiError({ status, method: 'GET', path: '/x', body: { kind: 'Status', reason, message: 'm' } });
  t.true(isNotFound(err(404, 'NotFound')));
  t.true(isConflict(err(409, 'Conflict')));
  t.false(isConflict(err(409, 'AlreadyExists')));
  t.true(isGone(err(410, 'Gone')));
  t.true(isGone(err(500, 'Expired')), 'a watch ERROR event may carry reason Expired');
  t.true(isRetryable(err(429)));
  t.true(isRetryable(new Error('ECONNREFUSED')));
  t.false(isRetryable(err(422, 'Invalid')));
  t.is(err(404, 'NotFound').message, 'GET /x failed with HTTP 404 (NotFound): m');
});

test('object keys follow client-go: namespace/name, or name for cluster-scoped objects', (t) => {
  t.is(objectKey({ metadata: { namespace: 'a', name: 'b' } }), 'a/b');
  t.is(objectKey({ metadata: { name: 'host-1' } }), 'host-1');
  t.deepEqual(splitKey('a/b'), { namespace: 'a', name: 'b' });
  t.deepEqual(splitKey('host-1'), { namespace: undefined, name: 'host-1' });
  t.throws(() => objectKey({ metadata: {} }), { message: /no metadata.name/ });
});

test('reconnect backoff grows with jitter up to its cap and resets', (t) => {
  const b = new Backoff(100, 800);
  const caps = [100, 200, 400, 800, 800];
  for (const cap of caps) {
    const d = b.next();
    t.true(d >= cap / 2 && d <= cap, `${d} within [${cap / 2}, ${cap}]`);
  }
  b.reset();
  t.true(b.next() <= 100);
  t.throws(() => new Backoff(0, 10), { instanceOf: TypeError });
});

test('a linked abort follows any of its sources and detaches on dispose', (t) => {
  const a = new AbortController();
  const b = new AbortController();
  const link = linkedAbort(a.signal, undefined, b.signal);
  b.abort('why');
  t.true(link.controller.signal.aborted);
  t.is(link.controller.signal.reason, 'why');
  const c = new AbortController();
  const link2 = linkedAbort(c.signal);
  link2.dispose();
  c.abort();
  t.false(link2.controller.signal.aborted);
});
