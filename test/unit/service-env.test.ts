import test from 'ava';
import { serviceEnv } from '../../crds/service-env.ts';
import type { Service } from '../../crds/types.ts';

const service = (name: string, ports: [string, number][], virtualIP?: string): Service =>
  ({
    metadata: { name, namespace: 'ns' },
    spec: { selector: { app: name }, ports: ports.map(([n, port]) => ({ name: n, port, targetPort: n })) },
    ...(virtualIP ? { status: { virtualIP } } : {}),
  }) as unknown as Service;

test('kubelet-style variables: host, first port, and one per named port, names upper-cased', (t) => {
  t.deepEqual(
    serviceEnv([
      service(
        'web-api',
        [
          ['http', 80],
          ['admin', 81],
        ],
        '127.77.0.5',
      ),
      service('db', [['pg', 5432]], '127.77.0.9'),
    ]),
    [
      { name: 'DB_SERVICE_HOST', value: '127.77.0.9' },
      { name: 'DB_SERVICE_PORT', value: '5432' },
      { name: 'DB_SERVICE_PORT_PG', value: '5432' },
      { name: 'WEB_API_SERVICE_HOST', value: '127.77.0.5' },
      { name: 'WEB_API_SERVICE_PORT', value: '80' },
      { name: 'WEB_API_SERVICE_PORT_HTTP', value: '80' },
      { name: 'WEB_API_SERVICE_PORT_ADMIN', value: '81' },
    ],
  );
});

test('a Service without a virtual IP yet gives no variables', (t) => {
  t.deepEqual(serviceEnv([service('web', [['http', 80]])]), []);
});
