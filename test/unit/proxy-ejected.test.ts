// The format of a mesh proxy's ejected endpoints in its Lease (crds/proxy-ejected.ts): written
// sorted and deduplicated, read back the same, bounded in size with a count of what was left out,
// and read leniently.
import test from 'ava';
import {
  decodeEjected,
  type EjectedPort,
  encodeEjected,
  PROXY_EJECTED_MAX_BYTES,
} from '../../crds/proxy-ejected.ts';

const port = (namespace: string, service: string, p: string, replicas: string[]): EjectedPort => ({
  namespace,
  service,
  port: p,
  replicas,
});

test('nothing ejected: an empty value, which reads back as nothing', (t) => {
  t.is(encodeEjected([]), '');
  t.is(encodeEjected([port('ns', 'web', 'http', [])]), '');
  t.deepEqual(decodeEjected(''), { ports: [], omitted: 0 });
  t.deepEqual(decodeEjected(undefined), { ports: [], omitted: 0 });
});

test('ports sorted by namespace/service/port, replicas sorted and each once; read back as written', (t) => {
  const value = encodeEjected([
    port('shop', 'web', 'http', ['web-2', 'web-0', 'web-2']),
    port('app', 'db', 'main', ['db-1']),
    port('shop', 'web', 'admin', ['web-2']),
    port('shop', 'web', 'http', ['web-1']),
  ]);
  t.is(value, 'app/db/main=db-1;shop/web/admin=web-2;shop/web/http=web-0,web-1,web-2');
  t.deepEqual(decodeEjected(value), {
    ports: [
      port('app', 'db', 'main', ['db-1']),
      port('shop', 'web', 'admin', ['web-2']),
      port('shop', 'web', 'http', ['web-0', 'web-1', 'web-2']),
    ],
    omitted: 0,
  });
});

test('too many: cut at the bound, whole names only, with +n counting the endpoints left out', (t) => {
  const replicas = Array.from(
    { length: 500 },
    (_, i) => `replica-with-a-longish-name-${String(i).padStart(3, '0')}`,
  );
  const value = encodeEjected([
    port('ns', 'svc', 'main', replicas.slice(0, 250)),
    port('ns', 'two', 'p', replicas.slice(250)),
  ]);
  t.true(Buffer.byteLength(value) <= PROXY_EJECTED_MAX_BYTES, `${Buffer.byteLength(value)} bytes`);
  const { ports, omitted } = decodeEjected(value);
  const listed = ports.flatMap((p) => p.replicas);
  t.true(listed.length > 50, `${listed.length} listed`);
  t.is(listed.length + omitted, 500);
  t.deepEqual(listed, replicas.slice(0, 250).slice(0, listed.length), 'the first in order, none cut');
  t.regex(value, /;\+\d+$/);

  // A tight bound: exactly what fits, and the count.
  const small = encodeEjected([port('a', 'b', 'c', ['r1', 'r2', 'r3'])], 13);
  t.is(small, 'a/b/c=r1;+2');
  t.is(
    encodeEjected([port('a', 'b', 'c', ['r1', 'r2', 'r3'])], 5),
    '+3',
    'not even one fits: only the count',
  );
  t.deepEqual(decodeEjected('+3'), { ports: [], omitted: 3 });
  // A bound that fits the whole value exactly keeps it whole.
  const whole = 'a/b/c=r1,r2,r3';
  t.is(encodeEjected([port('a', 'b', 'c', ['r1', 'r2', 'r3'])], whole.length), whole);
});

test('items that do not parse are skipped, the others read', (t) => {
  t.deepEqual(decodeEjected('garbage;a/b=r1;a/b/c/d=r2;x/y/z=;;ns/svc/p=r3,,r4;+x;+2;/b/c=r5'), {
    ports: [port('ns', 'svc', 'p', ['r3', 'r4'])],
    omitted: 2,
  });
});
