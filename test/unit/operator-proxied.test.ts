import test from 'ava';
import type { Service } from '../../crds/types.ts';
import type { Lease } from '../../kube/index.ts';
import { proxiedCondition } from '../../operator/service/controller.ts';

const NOW = Date.parse('2026-12-06T00:00:10Z');

const service = (protocols: ('tcp' | 'http')[]): Service =>
  ({
    metadata: { name: 'web', namespace: 'ns' },
    spec: {
      selector: {},
      ports: protocols.map((protocol, i) => ({ name: `p${i}`, port: 80 + i, targetPort: 1, protocol })),
    },
  }) as unknown as Service;

const proxy = (
  name: string,
  renewed: string,
  annotations: Record<string, string> = { 'orrery.dev/proxy-serves': 'tcp' },
): Lease => ({
  metadata: { name: `proxy-${name}`, namespace: 'orrery-system', annotations },
  spec: { holderIdentity: name, leaseDurationSeconds: 10, renewTime: renewed },
});

test('no live proxy: NoMeshProxy, and nothing to come back for', (t) => {
  const { condition, expiresAt } = proxiedCondition(
    service(['tcp']),
    [proxy('a', '2026-12-05T23:59:00.000000Z')],
    NOW,
  );
  t.like(condition, { status: 'False', reason: 'NoMeshProxy' });
  t.is(expiresAt, undefined);
});

test('a live proxy serving tcp: tcp Services are Proxied; http ports are named as not served', (t) => {
  const live = [proxy('a', '2026-12-06T00:00:05.000000Z')];
  const tcp = proxiedCondition(service(['tcp']), live, NOW);
  t.like(tcp.condition, { status: 'True', reason: 'Proxied', message: 'served by proxy-a' });
  t.is(tcp.expiresAt, Date.parse('2026-12-06T00:00:15Z'), 'come back when its Lease would expire');
  const mixed = proxiedCondition(service(['tcp', 'http']), live, NOW);
  t.like(mixed.condition, { status: 'False', reason: 'ProtocolNotProxied' });
  t.regex(
    mixed.condition.message ?? '',
    /^ports p1 \(http\) are not served: the running proxies \(proxy-a\) serve tcp only$/,
  );
});

test('a proxy limited to another namespace does not count', (t) => {
  const other = proxy('b', '2026-12-06T00:00:05.000000Z', {
    'orrery.dev/proxy-serves': 'tcp',
    'orrery.dev/proxy-namespace': 'elsewhere',
  });
  t.like(proxiedCondition(service(['tcp']), [other], NOW).condition, { reason: 'NoMeshProxy' });
  const mine = proxy('c', '2026-12-06T00:00:05.000000Z', {
    'orrery.dev/proxy-serves': 'tcp',
    'orrery.dev/proxy-namespace': 'ns',
  });
  t.like(proxiedCondition(service(['tcp']), [other, mine], NOW).condition, { status: 'True' });
});
