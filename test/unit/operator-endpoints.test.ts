import test from 'ava';
import type { EndpointSlice, Replica, Service, ServiceEndpoint } from '../../crds/types.ts';
import { endpointsOf, planSlices } from '../../operator/service/endpoints.ts';

const service = (ports: { name: string; port: number; targetPort: number | string }[]): Service =>
  ({
    metadata: { name: 'web', namespace: 'ns' },
    spec: { selector: { app: 'web' }, ports },
  }) as unknown as Service;

function replica(
  name: string,
  opts: { ready?: boolean; deleting?: boolean; app?: string; ports?: Record<string, number> } = {},
): Replica {
  return {
    metadata: {
      name,
      namespace: 'ns',
      uid: `uid-${name}`,
      labels: { app: opts.app ?? 'web' },
      ...(opts.deleting ? { deletionTimestamp: '2026-12-06T00:00:00Z' } : {}),
    },
    spec: { instance: 'web', ordinal: 0, host: 'h1', template: {} },
    status: {
      phase: 'Running',
      ready: opts.ready ?? true,
      address: '127.0.0.1',
      ports: Object.entries(opts.ports ?? { http: 20000 }).map(([n, port]) => ({
        name: n,
        process: 'main',
        port,
        protocol: 'http',
      })),
    },
  } as unknown as Replica;
}

test('endpoints: selected replicas at their own port numbers; ready, serving and terminating', (t) => {
  const svc = service([{ name: 'web', port: 80, targetPort: 'http' }]);
  const { endpoints, unresolved } = endpointsOf(svc, [
    replica('web-1', { ports: { http: 20001 } }),
    replica('web-0', { ports: { http: 20000 } }),
    replica('web-2', { ready: false }),
    replica('web-3', { deleting: true }),
    replica('other-0', { app: 'other' }),
  ]);
  t.deepEqual(unresolved, []);
  t.deepEqual(
    endpoints.map((e) => [e.replica, e.ports[0]?.port, e.ready, e.serving, e.terminating]),
    [
      ['web-0', 20000, true, true, false],
      ['web-1', 20001, true, true, false],
      ['web-2', 20000, false, false, false],
      ['web-3', 20000, false, true, true],
    ],
  );
  t.like(endpoints[0], { host: 'h1', address: '127.0.0.1', uid: 'uid-web-0' });
});

test('endpoints: a numeric targetPort is taken as it is; a name no replica declares is reported', (t) => {
  const svc = service([
    { name: 'web', port: 80, targetPort: 8080 },
    { name: 'admin', port: 81, targetPort: 'admin' },
  ]);
  const { endpoints, unresolved } = endpointsOf(svc, [replica('web-0')]);
  t.deepEqual(endpoints, [], 'an endpoint needs every port of the Service');
  t.deepEqual(unresolved, ['admin']);
  t.deepEqual(endpointsOf(svc, []).unresolved, [], 'nothing selected: nothing to report about ports');
});

const ep = (name: string): ServiceEndpoint => ({
  replica: name,
  address: '127.0.0.1',
  ports: [{ name: 'web', port: 1 }],
  ready: true,
  serving: true,
  terminating: false,
});
const slice = (name: string, names: string[]): EndpointSlice =>
  ({ metadata: { name }, service: 'web', endpoints: names.map(ep) }) as unknown as EndpointSlice;

test('slices: at most the capacity each; an endpoint stays in its slice; new ones fill gaps', (t) => {
  const fresh = planSlices(['a', 'b', 'c', 'd', 'e'].map(ep), [], 2);
  t.deepEqual(
    fresh.keep.map((s) => [s.name, s.endpoints.map((e) => e.replica)]),
    [
      [undefined, ['a', 'b']],
      [undefined, ['c', 'd']],
      [undefined, ['e']],
    ],
  );
  // b went away and f came: f takes b's place; the other slices are untouched.
  const next = planSlices(
    ['a', 'c', 'd', 'e', 'f'].map(ep),
    [slice('s1', ['a', 'b']), slice('s2', ['c', 'd']), slice('s3', ['e'])],
    2,
  );
  t.deepEqual(
    next.keep.map((s) => [s.name, s.endpoints.map((e) => e.replica)]),
    [
      ['s1', ['a', 'f']],
      ['s2', ['c', 'd']],
      ['s3', ['e']],
    ],
  );
  t.deepEqual(next.remove, []);
});

test('slices: emptied slices go, and a Service without endpoints keeps one empty slice', (t) => {
  const gone = planSlices([ep('c')], [slice('s1', ['a', 'b']), slice('s2', ['c'])], 2);
  t.deepEqual(
    gone.keep.map((s) => s.name),
    ['s2'],
  );
  t.deepEqual(gone.remove, ['s1']);
  const none = planSlices([], [slice('s1', ['a']), slice('s2', ['b'])], 2);
  t.deepEqual(none.keep, [{ name: 's1', endpoints: [] }]);
  t.deepEqual(none.remove, ['s2']);
  t.deepEqual(planSlices([], [], 2).keep, [{ name: undefined, endpoints: [] }]);
});
