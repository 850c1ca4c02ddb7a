// The host agent's kernel fast path decisions (node-runtime/agent/fastpath.ts): which Service
// ports the kernel balances (node-runtime/bpf/README.md's table) and what an engine event does.
import test from 'ava';
import type { Logger } from 'pino';
import { upstreamsOf } from '../../crds/slice-endpoints.ts';
import type { EndpointSlice, Service } from '../../crds/types.ts';
import type { Informer, KubeApi } from '../../kube/index.ts';
import { createBalancer } from '../../mesh/balancer.ts';
import {
  balancedInKernel,
  KernelFastPath,
  kernelEffectOf,
  RING_HASH_KEY,
  ringHashSelection,
} from '../../node-runtime/agent/fastpath.ts';
import { KernelServiceTable } from '../../node-runtime/bpf/service-table.ts';
import type { CgroupLayout } from '../../node-runtime/cgroups/detect.ts';
import type { Engine } from '../../node-runtime/engine.ts';
import type { EngineEvent } from '../../node-runtime/supervisor/spec.ts';

function service(
  protocol: 'tcp' | 'http',
  policy?: string,
  virtualIP: string | undefined = '10.96.0.1',
): Service {
  return {
    metadata: { name: 's', namespace: 'ns' },
    spec: {
      ports: [{ name: 'p', port: 80, targetPort: 'p', protocol }],
      ...(policy ? { loadBalancer: { policy } } : {}),
    },
    status: virtualIP ? { virtualIP } : {},
  } as unknown as Service;
}

const portOf = (s: Service) => s.spec.ports[0] as Service['spec']['ports'][number];

test('tcp with round-robin (the default), random or ring-hash is balanced in the kernel', (t) => {
  for (const s of [
    service('tcp'),
    service('tcp', 'round-robin'),
    service('tcp', 'random'),
    service('tcp', 'ring-hash'),
  ]) {
    t.true(balancedInKernel(s, portOf(s)));
  }
});

test('http, the policies the kernel cannot follow, and no IPv4 virtual IP stay with the proxy', (t) => {
  for (const s of [
    service('http'),
    service('tcp', 'least-request'),
    service('tcp', 'p2c-ewma'),
    service('tcp', undefined, null as unknown as undefined),
    service('tcp', undefined, 'fd00::1'),
  ]) {
    t.false(balancedInKernel(s, portOf(s)), JSON.stringify([s.spec, s.status]));
  }
});

test('an exit, a stop or a replica not ready takes it out; the replica ready again lets it back in', (t) => {
  const base = { replica: 'ns.web-0', at: '' };
  const ev = (e: object) => ({ ...base, ...e }) as EngineEvent;
  t.is(
    kernelEffectOf(
      ev({ type: 'exited', process: 'main', pid: 1, code: null, signal: 'SIGKILL', reason: 'Error' }),
    ),
    'down',
  );
  t.is(kernelEffectOf(ev({ type: 'stopped' })), 'down');
  t.is(kernelEffectOf(ev({ type: 'notReady', process: 'main', replicaReady: false })), 'down');
  t.is(kernelEffectOf(ev({ type: 'ready', process: 'main', replicaReady: true })), 'up');
  t.is(kernelEffectOf(ev({ type: 'ready', process: 'side', replicaReady: false })), undefined);
  t.is(kernelEffectOf(ev({ type: 'started', process: 'main', pid: 1 })), undefined);
});

test('the fallback: without a cgroup v2 tree the fast path is off, with one warning saying why', (t) => {
  const warnings: unknown[] = [];
  const log = { warn: (...args: unknown[]) => warnings.push(args), info: () => {} } as unknown as Logger;
  const started = KernelFastPath.start({
    hostName: 'h',
    layout: { mode: 'v1', v2Controllers: [], v1: {}, cgroupKill: false } as unknown as CgroupLayout,
    cgroupParent: 'orrery/h',
    api: undefined as unknown as KubeApi,
    fieldManager: 'test',
    services: undefined as unknown as Informer<Service>,
    engine: undefined as unknown as Engine,
    log,
  });
  t.deepEqual(started, { off: 'no cgroup v2 tree' });
  t.deepEqual(warnings, [
    [{ reason: 'no cgroup v2 tree' }, 'kernel fast path off: the proxy serves every Service port'],
  ]);
});

test("ring-hash: the kernel gets the proxy's ring choice for a replica's address, moving only when it goes", (t) => {
  // Ten endpoints as the operator's slice lists them; the proxy's pool and the kernel read them alike.
  const slice = {
    metadata: { name: 's-1', namespace: 'ns' },
    service: 's',
    endpoints: Array.from({ length: 10 }, (_, i) => ({
      replica: `web-${i}`,
      address: '10.0.0.5',
      ready: true,
      ports: [{ name: 'p', port: 20000 + i }],
    })),
  } as unknown as EndpointSlice;
  const upstreams = upstreamsOf([slice], 'p');
  const proxy = createBalancer<(typeof upstreams)[number]>('ring-hash');
  proxy.update(upstreams);
  const proxyChoice = proxy.pick({ key: RING_HASH_KEY });
  const replicaEndpoints = upstreams.map((u) => ({
    replica: `ns/${u.replica}`,
    address: u.address,
    port: u.port,
    weight: 1,
  }));
  const written: number[][] = [];
  const table = new KernelServiceTable({
    setService: (_vip, _port, endpoints) => {
      written.push(endpoints.map((e) => e.port));
    },
    deleteService: () => true,
  });
  table.setPort('10.96.0.9', 80, replicaEndpoints, ringHashSelection);
  t.deepEqual(written, [[proxyChoice?.port as number]], 'one endpoint: the one the proxy would pick');
  // The chosen one goes down here: the next on the ring, as the proxy's retry would walk to.
  const chosenReplica = `ns/${proxyChoice?.replica}`;
  table.replicaDown(chosenReplica);
  const next = proxy.pick({ key: RING_HASH_KEY, exclude: new Set([proxyChoice?.id as string]) });
  t.deepEqual(written.at(-1), [next?.port as number]);
  // Another replica going down does not move the key.
  const other = replicaEndpoints.find((e) => e.port !== next?.port && e.replica !== chosenReplica);
  table.replicaDown(other?.replica as string);
  t.is(written.length, 2, 'no write: the key stayed where it was');
  table.replicaUp(chosenReplica);
  t.deepEqual(written.at(-1), [proxyChoice?.port as number], 'back to its first endpoint');
});
