// The host agent's kernel fast path decisions (node-runtime/agent/fastpath.ts): which Service
// ports the kernel balances (node-runtime/bpf/README.md's table) and what an engine event does.
import test from 'ava';
import type { Logger } from 'pino';
import type { Service } from '../../crds/types.ts';
import type { Informer, KubeApi } from '../../kube/index.ts';
import { balancedInKernel, KernelFastPath, kernelEffectOf } from '../../node-runtime/agent/fastpath.ts';
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

test('tcp with round-robin (the default) or random is balanced in the kernel', (t) => {
  for (const s of [service('tcp'), service('tcp', 'round-robin'), service('tcp', 'random')]) {
    t.true(balancedInKernel(s, portOf(s)));
  }
});

test('http, the policies the kernel cannot follow, and no IPv4 virtual IP stay with the proxy', (t) => {
  for (const s of [
    service('http'),
    service('tcp', 'least-request'),
    service('tcp', 'p2c-ewma'),
    service('tcp', 'ring-hash'),
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
