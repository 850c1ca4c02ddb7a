// Ejected endpoints where kubectl users look, end to end: the real operator, a real host runtime
// running real processes, the mesh proxy in-process, the real API server. A tcp Service selects
// two replicas that serve and one that declares the port but listens on nothing (its connects are
// refused); client connections through the virtual IP get it ejected by the proxy's outlier
// detection, the proxy says so in its Lease, and the operator counts it into the Service's
// status (ejectedEndpoints, the Ready message, the Ejected column). When the proxy is gone, so is
// its ejection.
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import test from 'ava';
import { stringify } from 'yaml';
import { PROXY_EJECTED_ANNOTATION, proxyLeaseName } from '../../crds/labels.ts';
import type { Service } from '../../crds/types.ts';
import { leaseClient, loadKubeConfig } from '../../kube/index.ts';
import { startProxy } from '../../mesh/proxy.ts';
import { e2e } from '../helpers/e2e.ts';
import { eventually } from '../helpers/wait.ts';

// Greets and closes. A peer that resets first (a tcp readiness probe closes at once) is no
// reason to crash.
const server = `
const net = require('node:net');
net.createServer((s) => {
  s.on('error', () => {});
  s.end('hello ' + process.env.ORRERY_REPLICA_NAME + '\\n');
}).listen(Number(process.env.ORRERY_PORT_MAIN), '127.0.0.1');
`;

/**
 * Holds its port bound without listening (Node binds only in listen(), so python3): every
 * connect to it is refused.
 */
const dud = [
  // The system's python3: the replica runs as an unprivileged host uid, which a python3 found
  // first on a user's PATH (pyenv under /root, say) may not be open to.
  ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => existsSync(p)) ?? 'python3',
  '-c',
  "import os, socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', int(os.environ['ORRERY_PORT_MAIN'])))\ntime.sleep(3600)",
];

const instance = (name: string, replicas: number, command: string[], probe: boolean) =>
  stringify({
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name },
    spec: {
      replicas,
      template: {
        metadata: { labels: { app: 'echo' } },
        processes: [
          {
            name: 'main',
            command,
            ports: [{ name: 'main', protocol: 'tcp' }],
            ...(probe ? { readinessProbe: { tcp: { port: 'main' }, periodSeconds: 1 } } : {}),
          },
        ],
        isolation: { namespaces: [] },
      },
    },
  });

/** Connects to the virtual IP and reads the greeting; undefined when the connection failed. */
function greeting(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      text += d;
    });
    socket.on('error', () => resolve(undefined));
    socket.on('close', () => resolve(text || undefined));
    socket.setTimeout(5000, () => socket.destroy());
  });
}

test('an endpoint that refuses connections is ejected by the proxy and counted in the Service status', async (t) => {
  const env = await e2e(t, { hosts: 1 });
  const port = randomInt(10_000, 20_000);
  await env.kubectl(['apply', '-f', '-'], instance('good', 2, ['node', '-e', server], true));
  // Declares the port (so it is an endpoint, ready once running), binds it and never listens:
  // connects are refused, and no other process on the machine (another test's replica given
  // the same number by its own runtime) can take the port and answer in its place.
  await env.kubectl(['apply', '-f', '-'], instance('dud', 1, dud, false));
  await env.kubectl(
    ['apply', '-f', '-'],
    stringify({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Service',
      metadata: { name: 'echo' },
      spec: {
        selector: { app: 'echo' },
        ports: [{ name: 'main', port, targetPort: 'main', protocol: 'tcp' }],
        loadBalancer: { policy: 'round-robin' },
        outlierDetection: { consecutiveErrors: 2, intervalSeconds: 1, baseEjectionSeconds: 300 },
      },
    }),
  );
  const status = async () =>
    (JSON.parse(await env.kubectl(['get', 'osvc', 'echo', '-o', 'json'])) as Service).status;
  const ready = await eventually(
    'three ready endpoints and a virtual IP',
    async () => {
      const s = await status();
      return s?.readyEndpoints === 3 && s.virtualIP !== undefined && s;
    },
    { timeoutMs: 60_000 },
  );
  t.is(ready.ejectedEndpoints, 0);
  const vip = ready.virtualIP as string;

  const name = `test-${env.id}`;
  const proxy = await startProxy({
    kubeConfig: loadKubeConfig({ kubeconfig: env.kubeconfig }),
    namespace: env.ns,
    name,
  });
  t.teardown(() => proxy.stop({ drainTimeoutMs: 0 }));
  await proxy.ready;
  await eventually('the proxy serving the port with 3 ready endpoints', () =>
    proxy.ports().find((p) => p.listening && p.ready === 3),
  );

  // Round-robin sends every third connection to dud-0: refused, retried on another endpoint (the
  // client does not notice), and after two refusals it is out.
  const answers: (string | undefined)[] = [];
  for (let i = 0; i < 12; i++) answers.push(await greeting(vip, port));
  t.deepEqual(
    answers.filter((a) => !a?.startsWith('hello good-')),
    [],
    'every connection answered by a good replica',
  );
  t.deepEqual(
    proxy.ports()[0]?.ejected.map((id) => id.split('@')[0]),
    ['dud-0'],
  );

  // Its Lease says it; the Service status counts it, and names it in the Ready message.
  const leases = leaseClient(env.api, 'orrery-test');
  const lease = await eventually('the Lease to list the ejection', async () => {
    const l = await leases.get(proxyLeaseName(name), { namespace: 'orrery-system' });
    return l.metadata?.annotations?.[PROXY_EJECTED_ANNOTATION] !== '' && l;
  });
  t.is(lease.metadata?.annotations?.[PROXY_EJECTED_ANNOTATION], `${env.ns}/echo/main=dud-0`);
  // (Ready 3 too; if not, the note says which replica was not, and why.)
  const seen = new Set<string>();
  const ejected = await eventually('ejectedEndpoints 1', async () => {
    const s = await status();
    let note = `ready ${s?.readyEndpoints}, ejected ${s?.ejectedEndpoints}`;
    if (s?.readyEndpoints !== 3) {
      const replicas = (await env.replicas.list({ namespace: env.ns })).items;
      note += ` (${replicas.map((r) => `${r.metadata.name} ${r.status?.phase} ready=${r.status?.ready} restarts=${r.status?.restarts}`).join(', ')})`;
    }
    seen.add(note);
    return s?.ejectedEndpoints === 1 && s.readyEndpoints === 3 && s;
  });
  t.log(`statuses seen: ${[...seen].join('; ')}`);
  t.like(
    ejected.conditions?.find((c) => c.type === 'Ready'),
    {
      status: 'True',
      message: `3 of 3 endpoints ready; 1 ejected by outlier detection: dud-0 (port main, by proxy-${name})`,
    },
  );
  const table = await env.kubectl(['get', 'osvc', 'echo']);
  t.regex(table, /^NAME\s+VIRTUAL-IP\s+READY\s+ENDPOINTS\s+EJECTED\s+POLICY\s+AGE\n/);
  t.regex(
    table,
    new RegExp(`^echo\\s+${vip.replaceAll('.', '\\.')}\\s+\\d\\s+3\\s+1\\s+round-robin\\s`, 'm'),
  );

  // The proxy stops (its Lease is deleted): no live proxy has ejected anything.
  await proxy.stop({ drainTimeoutMs: 0 });
  const after = await eventually('ejectedEndpoints 0 once the proxy is gone', async () => {
    const s = await status();
    return s?.ejectedEndpoints === 0 && s;
  });
  t.regex(after.conditions?.find((c) => c.type === 'Ready')?.message ?? '', /^\d of 3 endpoints ready$/);
});
