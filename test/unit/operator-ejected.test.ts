// The Service controller's view of ejected endpoints (operator/service/ejected.ts): the union
// over the live proxies' Leases of what each has ejected, limited to the Service and to its
// current endpoints, and the sentence the Ready condition carries.
import test from 'ava';
import type { Service } from '../../crds/types.ts';
import type { Lease } from '../../kube/index.ts';
import { liveProxies } from '../../operator/service/controller.ts';
import { ejectedMessage, ejectedOf } from '../../operator/service/ejected.ts';

const NOW = Date.parse('2026-12-06T00:00:10Z');
const LIVE = '2026-12-06T00:00:05.000000Z';
const EXPIRED = '2026-12-05T23:59:00.000000Z';

const service = { metadata: { name: 'web', namespace: 'shop' }, spec: { ports: [] } } as unknown as Service;

const proxy = (name: string, ejected: string | undefined, renewed = LIVE, namespace?: string): Lease => ({
  metadata: {
    name: `proxy-${name}`,
    namespace: 'orrery-system',
    annotations: {
      'orrery.dev/proxy-serves': 'tcp',
      ...(ejected !== undefined ? { 'orrery.dev/proxy-ejected': ejected } : {}),
      ...(namespace ? { 'orrery.dev/proxy-namespace': namespace } : {}),
    },
  },
  spec: { holderIdentity: name, leaseDurationSeconds: 10, renewTime: renewed },
});

const endpoints = new Set(['web-0', 'web-1', 'web-2']);

test('no proxy lists anything: none ejected, no message', (t) => {
  const summary = ejectedOf(service, [proxy('a', ''), proxy('b', undefined)], endpoints);
  t.deepEqual(summary, { endpoints: [], partial: [] });
  t.is(ejectedMessage(summary), '');
});

test('an endpoint ejected by two proxies, on two ports, counts once; other Services and gone replicas do not count', (t) => {
  const summary = ejectedOf(
    service,
    [
      proxy('b', 'shop/web/http=web-1;shop/web/admin=web-1;shop/other/http=web-2;prod/web/http=web-0'),
      proxy('a', 'shop/web/http=web-1,web-9'),
    ],
    endpoints,
  );
  t.deepEqual(summary, {
    endpoints: [{ replica: 'web-1', ports: ['admin', 'http'], proxies: ['proxy-a', 'proxy-b'] }],
    partial: [],
  });
  t.is(
    ejectedMessage(summary),
    '1 ejected by outlier detection: web-1 (ports admin, http, by proxy-a, proxy-b)',
  );
});

test('only live proxies serving the namespace count (liveProxies)', (t) => {
  const leases = [
    proxy('gone', 'shop/web/http=web-0', EXPIRED),
    proxy('elsewhere', 'shop/web/http=web-1', LIVE, 'prod'),
    proxy('mine', 'shop/web/http=web-2', LIVE, 'shop'),
  ];
  const live = liveProxies(service, leases, NOW);
  t.deepEqual(
    live.map((l) => l.metadata?.name),
    ['proxy-mine'],
  );
  t.deepEqual(
    ejectedOf(service, live, endpoints).endpoints.map((e) => e.replica),
    ['web-2'],
  );
});

test('the message names three and counts the rest; a truncated list says there may be more', (t) => {
  const many = new Set(['web-0', 'web-1', 'web-2', 'web-3', 'web-4']);
  const summary = ejectedOf(service, [proxy('a', 'shop/web/http=web-0,web-1,web-2,web-3,web-4;+7')], many);
  t.is(summary.endpoints.length, 5);
  t.deepEqual(summary.partial, ['proxy-a']);
  t.is(
    ejectedMessage(summary),
    '5 ejected by outlier detection: web-0 (port http, by proxy-a), web-1 (port http, by proxy-a), web-2 (port http, by proxy-a) and 2 more, maybe more (proxy-a listed only part of its)',
  );
  t.is(
    ejectedMessage(ejectedOf(service, [proxy('a', '+3'), proxy('b', '+1')], many)),
    '0 ejected by outlier detection, maybe more (proxy-a, proxy-b listed only part of theirs)',
  );
});
