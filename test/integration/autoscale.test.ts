// The autoscaler (operator/autoscale/) on a real runtime: an Instance whose replicas burn their
// whole CPU limit scales up from 1 within the bounds, holds at max, and once the load is gone
// scales down after its (shortened) stabilisation window; status, the CPU column and Events say
// what it did; `kubectl scale` is overridden at the next period, as by an HPA. And on requests per
// second per replica, counted by a real mesh proxy carrying real requests.
import test from 'ava';
import { stringify } from 'yaml';
import type { Instance } from '../../crds/types.ts';
import { loadKubeConfig } from '../../kube/index.ts';
import { startProxy } from '../../mesh/proxy.ts';
import { e2e, instanceYaml } from '../helpers/e2e.ts';
import { eventually } from '../helpers/wait.ts';

test('autoscale 1..3 at 50 %: a CPU burner scales up to max, then down to min when the load stops', async (t) => {
  const env = await e2e(t, { hosts: 1, operator: 'none' });
  const host = env.hosts[0];
  if (!host) return t.fail('no host');
  await env.startOperator({ runtimeToken: () => host.token, autoscaleSyncMs: 2000 });
  // Each replica burns until the test's stop file exists, limited to 100m: at 100 % of its
  // request, twice the 50 % target.
  const stopFile = `/tmp/orrery-test-${env.ns}-stop`;
  t.teardown(async () => {
    const { rm } = await import('node:fs/promises');
    await rm(stopFile, { force: true });
  });
  await env.kubectl(
    ['apply', '-f', '-'],
    instanceYaml(
      'burn',
      1,
      [
        'node',
        '-e',
        // Spins in 50 ms slices until the stop file exists, then idles; gone after 3 minutes at most.
        `const fs = require('node:fs'); const stop = ${JSON.stringify(stopFile)};
         setTimeout(() => process.exit(0), 180000);
         (function spin() { const until = Date.now() + 50; while (Date.now() < until) {} if (!fs.existsSync(stop)) setImmediate(spin); })();
         setInterval(() => {}, 1000);`,
      ],
      {
        template: { resources: { cpu: '100m', memory: '128Mi' } },
        spec: {
          autoscale: {
            minReplicas: 1,
            maxReplicas: 3,
            cpuUtilization: 50,
            behavior: { scaleDown: { stabilizationWindowSeconds: 6 } },
          },
        } as Partial<Instance['spec']>,
      },
    ),
  );
  const instance = () => env.instances.get('burn', { namespace: env.ns });
  // The scale is written before the status that says why (as the HPA does): wait for both.
  const up = await eventually(
    'scaled up to 3, and the status written after it',
    async () => {
      const i = await instance();
      return i.spec.replicas === 3 && /^\d+%\/50%$/.test(i.status?.autoscale?.cpu ?? '') && i;
    },
    { timeoutMs: 45_000, intervalMs: 200 },
  );
  t.regex(up.status?.autoscale?.cpu ?? '', /^\d+%\/50%$/);
  t.truthy(up.status?.autoscale?.lastScaleTime);
  const column = await env.kubectl(['get', 'inst', 'burn']);
  t.regex(column, /CPU/);
  t.regex(column, /\d+%\/50%/);
  const events = await env.kubectl([
    'get',
    'events',
    '--field-selector',
    'involvedObject.name=burn,reason=SuccessfulRescale',
    '-o',
    'jsonpath={.items[*].message}',
  ]);
  t.regex(events, /New size: \d; reason: cpu utilisation \d+% of resources\.cpu, target 50%/);

  // kubectl scale down by hand is put back while the load lasts (max holds: never above 3).
  await env.kubectl(['scale', 'inst', 'burn', '--replicas=1']);
  await eventually('put back to 3', async () => (await instance()).spec.replicas === 3, {
    timeoutMs: 30_000,
  });

  // The load stops: down to 1 after the 6 s window.
  const { writeFile } = await import('node:fs/promises');
  await writeFile(stopFile, '');
  const stoppedAt = Date.now();
  await eventually('scaled down to 1', async () => (await instance()).spec.replicas === 1, {
    timeoutMs: 60_000,
    intervalMs: 200,
  });
  t.true(Date.now() - stoppedAt >= 5000, 'not before the stabilisation window');
  t.regex((await instance()).status?.autoscale?.message ?? '', /^(New size: 1|Holding 1);/);
});

test('autoscale without resources.cpu: a Warning Event and status say why, and nothing is scaled', async (t) => {
  const env = await e2e(t, { hosts: 1, operator: 'none' });
  const host = env.hosts[0];
  if (!host) return t.fail('no host');
  await env.startOperator({ runtimeToken: () => host.token, autoscaleSyncMs: 1000 });
  await env.kubectl(
    ['apply', '-f', '-'],
    instanceYaml('idle', 2, ['sleep', 'infinity'], {
      spec: { autoscale: { minReplicas: 1, maxReplicas: 4, cpuUtilization: 50 } } as Partial<
        Instance['spec']
      >,
    }),
  );
  const status = await eventually('status.autoscale says why', async () => {
    const i = await env.instances.get('idle', { namespace: env.ns });
    return i.status?.autoscale?.message ? i.status.autoscale : undefined;
  });
  t.regex(status.message ?? '', /spec\.template\.resources\.cpu/);
  const events = await env.kubectl([
    'get',
    'events',
    '--field-selector',
    'involvedObject.name=idle,reason=FailedGetResourceMetric',
    '-o',
    'jsonpath={.items[*].message}',
  ]);
  t.regex(events, /resources\.cpu/);
  t.is((await env.instances.get('idle', { namespace: env.ns })).spec.replicas, 2);
});

test('autoscale on requests per second through the mesh: load scales up to max, none scales down; no CPU needed', async (t) => {
  const env = await e2e(t, { hosts: 1, operator: 'none' });
  await env.startOperator({ autoscaleSyncMs: 2000 });
  const server = `require('node:http').createServer((req, res) => res.end('ok\\n')).listen(Number(process.env.ORRERY_PORT_HTTP), '127.0.0.1');`;
  await env.kubectl(
    ['apply', '-f', '-'],
    instanceYaml('api', 1, ['node', '-e', server], {
      template: {
        processes: [
          {
            name: 'main',
            command: ['node', '-e', server],
            ports: [{ name: 'http', protocol: 'http' }],
            readinessProbe: { http: { path: '/', port: 'http' }, periodSeconds: 1 },
          },
        ],
      } as unknown as Partial<Instance['spec']['template']>,
      spec: {
        autoscale: {
          minReplicas: 1,
          maxReplicas: 3,
          requestsPerSecond: 5,
          behavior: { scaleDown: { stabilizationWindowSeconds: 6 } },
        },
      } as Partial<Instance['spec']>,
    }),
  );
  await env.kubectl(
    ['apply', '-f', '-'],
    stringify({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Service',
      metadata: { name: 'api' },
      spec: {
        selector: { app: 'api' },
        ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'http' }],
      },
    }),
  );
  // The host's mesh proxy, publishing its metrics on its Lease for the autoscaler.
  const proxy = await startProxy({
    kubeConfig: loadKubeConfig({ kubeconfig: env.kubeconfig }),
    namespace: env.ns,
    name: `rps-${env.id}`,
  });
  t.teardown(() => proxy.stop({ drainTimeoutMs: 0 }));
  const vip = await eventually('the Service served with a ready endpoint', async () => {
    const svc = JSON.parse(await env.kubectl(['get', 'osvc', 'api', '-o', 'json'])).status?.virtualIP as
      | string
      | undefined;
    return proxy.ports().some((p) => p.listening && p.ready >= 1) && svc;
  });
  // About 40 requests a second, one after another, until told to stop (bounded: 90 s, 4,000).
  let loading = true;
  let sent = 0;
  const load = (async () => {
    const until = Date.now() + 90_000;
    while (loading && Date.now() < until && sent < 4000) {
      await fetch(`http://${vip}/`)
        .then((r) => r.text())
        .catch(() => '');
      sent++;
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  t.teardown(() => {
    loading = false;
  });
  const instance = () => env.instances.get('api', { namespace: env.ns });
  const up = await eventually(
    'scaled up to 3 on requests per second, and the status written after it',
    async () => {
      const i = await instance();
      return (
        i.spec.replicas === 3 && /^\d+(\.\d)?\/5$/.test(i.status?.autoscale?.requestsPerSecond ?? '') && i
      );
    },
    { timeoutMs: 45_000, intervalMs: 200 },
  );
  t.regex(up.status?.autoscale?.requestsPerSecond ?? '', /^\d+(\.\d)?\/5$/);
  t.is(up.status?.autoscale?.cpu, undefined, 'no CPU target: no CPU metric (and no resources.cpu needed)');
  t.regex(await env.kubectl(['get', 'inst', 'api', '-o', 'wide']), /RPS[\s\S]*\d+(\.\d)?\/5/);
  const events = await env.kubectl([
    'get',
    'events',
    '--field-selector',
    'involvedObject.name=api,reason=SuccessfulRescale',
    '-o',
    'jsonpath={.items[*].message}',
  ]);
  t.regex(events, /New size: \d; reason: \d+(\.\d)? requests\/s per replica, target 5/);

  loading = false;
  await load;
  t.log(`${sent} requests sent`);
  await eventually('scaled down to 1 with no requests', async () => (await instance()).spec.replicas === 1, {
    timeoutMs: 60_000,
    intervalMs: 200,
  });
  t.regex((await instance()).status?.autoscale?.requestsPerSecond ?? '', /^0(\.0)?\/5$/);
});
