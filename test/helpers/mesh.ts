// The mesh proxy's tests without an operator: a Service written by the test, its virtual IP set
// through the status subresource (an address in 127.77.128.0/17, random per test process, then
// consecutive), and one EndpointSlice labelled as the operator labels them, pointing at servers
// the test runs on 127.0.0.1. Everything is removed in teardown, pass or fail.
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { type AddressInfo, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { pino } from 'pino';
import { ENDPOINT_SLICE_MANAGER, MANAGED_BY_LABEL, SERVICE_NAME_LABEL } from '../../crds/labels.ts';
import { ENDPOINT_SLICES, SERVICES } from '../../crds/resources.ts';
import type { EndpointSlice, Service, ServiceEndpoint } from '../../crds/types.ts';
import {
  type DeepPartial,
  isNotFound,
  KubeApi,
  type KubeConfig,
  loadKubeConfig,
  resourceClient,
} from '../../kube/index.ts';
import { type MeshProxy, type ProxyOptions, startProxy } from '../../mesh/proxy.ts';
import { freshNamespace } from './cluster.ts';
import { orreryCluster } from './orrery.ts';
import { eventually } from './wait.ts';

export const meshLog = pino({ level: process.env.ORRERY_TEST_LOG ?? 'silent' });

// One /24 per test process, consecutive addresses in it: test files running at once are unlikely
// to share an address, and tests of one file never do.
const vipNet = `127.77.${randomInt(128, 255)}`;
const vipBase = randomInt(1, 128);
let vipCount = 0;
export function nextVip(): string {
  const n = vipBase + vipCount++;
  if (n > 254) throw new Error('out of test virtual IPs');
  return `${vipNet}.${n}`;
}

/** An endpoint of the Service: `name` at 127.0.0.1:port for the Service port `portName`. */
export function endpointAt(name: string, port: number, portName: string, ready = true): ServiceEndpoint {
  return {
    replica: name,
    host: 'test-host',
    address: '127.0.0.1',
    ports: [{ name: portName, port }],
    ready,
    serving: ready,
    terminating: false,
  };
}

export interface MeshSetup {
  ns: string;
  kubeConfig: KubeConfig;
  kubeconfigPath: string;
  vip: string;
  port: number;
  services: ReturnType<typeof resourceClient<Service>>;
  slices: ReturnType<typeof resourceClient<EndpointSlice>>;
  /** Replaces the endpoints of the Service's one slice. */
  setEndpoints(endpoints: ServiceEndpoint[]): Promise<void>;
  /**
   * Starts a proxy on the test's namespace (stopped in teardown) and waits until it serves the
   * port with `ready` endpoints (default: the ready ones given).
   */
  proxy(extra?: Partial<ProxyOptions>, ready?: number): Promise<MeshProxy>;
}

/**
 * `n` ports on 127.0.0.1 that refuse connections for the rest of the test, as an endpoint whose
 * process is gone does: above the kernel's ephemeral range (ip_local_port_range), which a
 * listen() on port 0 never hands out. A closed backend's own port would not do: a server of a test
 * running beside may be given it at once (a proxy's metrics server answered 404 there, once).
 */
export async function refusingPorts(n: number): Promise<number[]> {
  const upper = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[1]);
  const ports: number[] = [];
  for (let port = upper + 1 + randomInt(64); port <= 65535 && ports.length < n; port++) {
    const refused = await new Promise<boolean>((resolve) => {
      const probe = connect({ host: '127.0.0.1', port });
      probe.once('connect', () => {
        probe.destroy();
        resolve(false);
      });
      probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
    });
    if (refused) ports.push(port);
  }
  if (ports.length < n) throw new Error(`no ${n} refusing ports above the ephemeral range (${upper})`);
  return ports;
}

/**
 * The endpoints of three backends of which the first two are gone while the slice still lists
 * them (as during a rollout faster than the watch): those two at refusingPorts(), the third at its
 * own port.
 */
export async function twoOfThreeGone(
  backends: readonly { name: string; port: number }[],
  portName: string,
): Promise<ServiceEndpoint[]> {
  const [a, b, c] = backends as [{ name: string }, { name: string }, { name: string; port: number }];
  const [gone1, gone2] = (await refusingPorts(2)) as [number, number];
  return [
    endpointAt(a.name, gone1, portName),
    endpointAt(b.name, gone2, portName),
    endpointAt(c.name, c.port, portName),
  ];
}

/**
 * A Service `name` (default echo) with one port `portName` of `protocol` on a random port of a
 * fresh virtual IP, and the given endpoints.
 */
export async function meshService(
  t: ExecutionContext,
  opts: {
    name?: string;
    portName: string;
    protocol: 'tcp' | 'http';
    spec?: DeepPartial<Service['spec']>;
    endpoints: ServiceEndpoint[];
  },
): Promise<MeshSetup> {
  const name = opts.name ?? 'echo';
  const { kubeconfig } = await orreryCluster();
  const ns = await freshNamespace(t);
  const kubeConfig = loadKubeConfig({ kubeconfig });
  const api = await KubeApi.fromKubeConfig(kubeConfig);
  t.teardown(() => api.close());
  const services = resourceClient(api, SERVICES, 'orrery-test');
  const slices = resourceClient(api, ENDPOINT_SLICES, 'orrery-test');
  const vip = nextVip();
  const port = randomInt(10_000, 20_000);
  const created = await services.create(
    {
      metadata: { name, namespace: ns },
      spec: {
        selector: { app: name },
        ports: [{ name: opts.portName, port, targetPort: opts.portName, protocol: opts.protocol }],
        ...opts.spec,
      },
    },
    { namespace: ns },
  );
  t.teardown(() => services.delete(name, { namespace: ns }).catch(ignoreNotFound));
  await services.patchStatus(name, { virtualIP: vip }, { namespace: ns });
  const { endpoints } = opts;
  const sliceName = `${name}-0`;
  await slices.create(
    {
      metadata: {
        name: sliceName,
        namespace: ns,
        labels: { [SERVICE_NAME_LABEL]: name, [MANAGED_BY_LABEL]: ENDPOINT_SLICE_MANAGER },
        ownerReferences: [
          {
            apiVersion: 'orrery.dev/v1alpha1',
            kind: 'Service',
            name,
            uid: created.metadata.uid as string,
            controller: true,
          },
        ],
      },
      service: name,
      count: endpoints.length,
      ready: endpoints.filter((e) => e.ready).length,
      endpoints,
    },
    { namespace: ns },
  );
  t.teardown(() => slices.delete(sliceName, { namespace: ns }).catch(ignoreNotFound));

  return {
    ns,
    kubeConfig,
    kubeconfigPath: kubeconfig,
    vip,
    port,
    services,
    slices,
    async setEndpoints(next) {
      const current = await slices.get(sliceName, { namespace: ns });
      await slices.replace({
        ...current,
        count: next.length,
        ready: next.filter((e) => e.ready).length,
        endpoints: next,
      });
    },
    async proxy(extra = {}, ready = endpoints.filter((e) => e.ready).length) {
      const proxy = await startProxy({ kubeConfig, namespace: ns, log: meshLog, ...extra });
      t.teardown(() => proxy.stop({ drainTimeoutMs: 0 }));
      await proxy.ready;
      await eventually(`the proxy serving ${vip}:${port} with ${ready} ready endpoints`, () =>
        proxy.ports().find((p) => p.listening && p.ready === ready),
      );
      return proxy;
    },
  };
}

function ignoreNotFound(err: unknown): void {
  if (!isNotFound(err)) throw err;
}

/**
 * Listens on 127.0.0.1 on a free port, keeping every connection so that close() (also run in
 * teardown, pass or fail) ends them all: from then on connects to the port are refused.
 */
export async function listenOnLoopback(
  t: ExecutionContext,
  server: Server,
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    });
    return closed;
  };
  t.teardown(close);
  return { port, close };
}

const orrery = join(import.meta.dirname, '..', '..', 'bin', 'orrery.js');

/** `node bin/orrery.js proxy` on the setup's namespace, metrics on a free port, then `extra`. */
export function proxyArgs(s: Pick<MeshSetup, 'kubeconfigPath' | 'ns'>, extra: string[] = []): string[] {
  return [
    orrery,
    'proxy',
    '--kubeconfig',
    s.kubeconfigPath,
    '--namespace',
    s.ns,
    '--metrics-listen',
    '127.0.0.1:0',
    ...extra,
  ];
}

export async function scrape(proxy: { metricsUrl: string }): Promise<string> {
  const res = await fetch(`${proxy.metricsUrl}/metrics`);
  return res.text();
}

/** The value of the sample of `name` whose labels include `labels`; undefined when there is none. */
export function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)\{(.*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] as string).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

export function counts(names: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of names) out[n] = (out[n] ?? 0) + 1;
  return out;
}
