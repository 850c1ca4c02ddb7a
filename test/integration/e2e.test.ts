// kubectl apply -> scheduled -> running processes, end to end: the real operator and real host
// agents (child processes running real workloads in cgroups) against the real API server.
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { stringify } from 'yaml';
import type { Instance, Replica } from '../../crds/types.ts';
import { loadKubeConfig } from '../../kube/index.ts';
import { startProxy } from '../../mesh/proxy.ts';
import { CgroupManager, detectCgroupLayout } from '../../node-runtime/cgroups/index.ts';
import { alive, type E2e, e2e, instanceYaml } from '../helpers/e2e.ts';
import { eventually } from '../helpers/wait.ts';

const examples = join(import.meta.dirname, '..', '..', 'examples');

function runningPids(replicas: Replica[]): number[] {
  return replicas.flatMap((r) =>
    (r.status?.processes ?? []).map((p) => p.pid).filter((pid): pid is number => typeof pid === 'number'),
  );
}

function cgroupIds(parent: string): Promise<string[]> {
  return new CgroupManager({ layout: detectCgroupLayout(), parent }).list();
}

function sleeper(
  name: string,
  replicas: number,
  extra: Partial<Instance['spec']> = {},
  env: { name: string; value: string }[] = [],
) {
  return instanceYaml(name, replicas, ['sleep', 'infinity'], { env, spec: extra });
}

const allRunning = (n: number) => (items: Replica[]) =>
  items.length === n &&
  items.every((r) => r.status?.phase === 'Running' && r.status.ready && !r.metadata.deletionTimestamp) &&
  items;

test('kubectl apply hello -> Replica Running with a real pid; kubectl delete -> processes, cgroups and Replicas gone', async (t) => {
  const env = await e2e(t, { hosts: 1 });
  const host = env.hosts[0];
  if (!host) return t.fail('no host');
  await env.kubectl(['apply', '-f', join(examples, 'hello.yaml')]);
  const [replica] = await eventually('hello-0 Running', async () =>
    allRunning(1)(await env.replicasOf('hello')),
  );
  t.is(replica?.spec.host, host.name);
  const pid = replica?.status?.processes?.[0]?.pid as number;
  t.true(alive(pid), `pid ${pid} runs`);
  t.regex(readFileSync(`/proc/${pid}/cgroup`, 'utf8'), new RegExp(host.cgroupParent));
  t.deepEqual(await cgroupIds(host.cgroupParent), [`${env.ns}.hello-0`]);

  await env.kubectl(['wait', '--for=condition=Available', 'inst/hello', '--timeout=20s']);
  const described = await env.kubectl(['describe', 'inst', 'hello']);
  t.regex(described, /Events:[\s\S]*Created\s+.*Created replicas hello-0/);
  await eventually('the printer columns to show the ready replica', async () =>
    /^hello\s+1\s+1\s+1\s+1\s+MinimumReplicasAvailable/m.test(await env.kubectl(['get', 'inst', 'hello'])),
  );

  await env.kubectl(['delete', '-f', join(examples, 'hello.yaml'), '--wait=true', '--timeout=30s']);
  await eventually('replicas gone', async () => (await env.replicasOf('hello')).length === 0);
  await eventually(`pid ${pid} gone`, () => !alive(pid));
  t.deepEqual(await cgroupIds(host.cgroupParent), []);
});

test('scale to 5 and back to 2; a template change rolls replicas one by one within maxUnavailable', async (t) => {
  const env = await e2e(t, { hosts: 1 });
  await env.kubectl(
    ['apply', '-f', '-'],
    sleeper('web', 3, { updateStrategy: { maxUnavailable: 1, maxSurge: 0 } }),
  );
  await eventually('3 running', async () => allRunning(3)(await env.replicasOf('web')));
  await env.kubectl(['scale', 'inst', 'web', '--replicas=5']);
  await eventually('5 running', async () => allRunning(5)(await env.replicasOf('web')));
  await env.kubectl(['scale', 'inst', 'web', '--replicas=2']);
  const two = await eventually('2 running', async () => allRunning(2)(await env.replicasOf('web')), {
    timeoutMs: 30_000,
  });
  t.deepEqual(
    two.map((r) => r.metadata.name),
    ['web-0', 'web-1'],
  );
  await env.kubectl(['scale', 'inst', 'web', '--replicas=3']);
  const before = await eventually('3 running', async () => allRunning(3)(await env.replicasOf('web')));

  // Roll: watch readiness all along; never fewer than replicas - maxUnavailable = 2 ready.
  await env.kubectl(
    ['apply', '-f', '-'],
    sleeper('web', 3, { updateStrategy: { maxUnavailable: 1, maxSurge: 0 } }, [
      { name: 'VERSION', value: '2' },
    ]),
  );
  let minReady = Number.POSITIVE_INFINITY;
  let maxExisting = 0;
  const after = await eventually(
    'rollout complete',
    async () => {
      const items = await env.replicasOf('web');
      minReady = Math.min(
        minReady,
        items.filter((r) => r.status?.ready && !r.metadata.deletionTimestamp).length,
      );
      maxExisting = Math.max(maxExisting, items.length);
      return (
        allRunning(3)(items) &&
        items.every((r) => r.spec.template.processes[0]?.env?.[0]?.value === '2') &&
        items
      );
    },
    { timeoutMs: 60_000, intervalMs: 10 },
  );
  t.log(`during the rollout: at least ${minReady} ready, at most ${maxExisting} replicas`);
  t.true(minReady >= 2, `ready dropped to ${minReady}`);
  t.true(maxExisting <= 3, `maxSurge 0 but ${maxExisting} replicas existed`);
  t.notDeepEqual(runningPids(after), runningPids(before), 'the processes were replaced');
  // The Instance's status is written after the Replicas' (and their readiness may trail their
  // phase): it says so once the operator has seen the last one ready.
  const inst = await eventually('the Instance says RolloutComplete', async () => {
    const i = JSON.parse(await env.kubectl(['get', 'inst', 'web', '-o', 'json'])) as Instance;
    return i.status?.conditions?.find((c) => c.type === 'Progressing')?.reason === 'RolloutComplete' && i;
  });
  t.is(inst.status?.updatedReplicas, 3);
  t.is(inst.status?.conditions?.find((c) => c.type === 'Progressing')?.reason, 'RolloutComplete');
});

test('three hosts: replicas spread; a host agent killed -9 -> its replicas Running on the others; back, it kills what no longer belongs to it', async (t) => {
  const env = await e2e(t, { hosts: 3 });
  await env.kubectl(['apply', '-f', '-'], sleeper('web', 6));
  const placed = await eventually('6 running', async () => allRunning(6)(await env.replicasOf('web')));
  for (const host of env.hosts) {
    t.is(placed.filter((r) => r.spec.host === host.name).length, 2, `two replicas on ${host.name}`);
  }
  const victim = env.hosts[0];
  if (!victim) return t.fail('no host');
  const lostPids = runningPids(placed.filter((r) => r.spec.host === victim.name));
  const killedAt = Date.now();
  if (process.env.ORRERY_E2E_LOG) t.log(`killed at ${killedAt}`);
  victim.child.kill('SIGKILL');
  await victim.exited;
  const moved = await eventually(
    'replicas Running on the other hosts',
    async () => {
      const items = allRunning(6)(await env.replicasOf('web'));
      if (!items) return false;
      return items.every((r) => r.spec.host !== victim.name) && items;
    },
    // Against a hang only: about 10× the expected failover (the 2 s host Lease, the operator's
    // grace, a reschedule and a start). How fast failover is belongs to bench/e2e.bench.ts.
    { timeoutMs: 30_000, intervalMs: 10 },
  );
  const failoverMs = Date.now() - killedAt;
  t.log(`failover: all 6 Running again ${failoverMs} ms after kill -9 of ${victim.name}`);
  t.is(new Set(moved.map((r) => r.metadata.name)).size, 6, 'no duplicate replicas');

  // The old processes live on (their runtime is gone) until the agent comes back: it must kill
  // them, since their Replicas now belong to other hosts. (Self-fencing covers a live but
  // partitioned agent; a dead one cannot fence.)
  await victim.restart();
  await eventually(
    'old workloads killed by the returning agent',
    () => lostPids.every((pid) => !alive(pid)),
    { timeoutMs: 20_000 },
  );
  await eventually('its cgroups removed', async () => (await cgroupIds(victim.cgroupParent)).length === 0);
  t.pass();
});

test('the operator killed -9 in the middle of a rollout converges after restart with no duplicate replicas', async (t) => {
  const env = await e2e(t, { hosts: 2, operator: 'none' });
  let operator = env.operatorProcess();
  await env.kubectl(
    ['apply', '-f', '-'],
    sleeper('web', 4, { updateStrategy: { maxUnavailable: 1, maxSurge: 1 } }),
  );
  await eventually('4 running', async () => allRunning(4)(await env.replicasOf('web')), {
    timeoutMs: 30_000,
  });
  await env.kubectl(
    ['apply', '-f', '-'],
    sleeper('web', 4, { updateStrategy: { maxUnavailable: 1, maxSurge: 1 } }, [
      { name: 'VERSION', value: '2' },
    ]),
  );
  await eventually(
    'rollout under way',
    async () =>
      (await env.replicasOf('web')).some((r) => r.spec.template.processes[0]?.env?.[0]?.value === '2'),
    {
      intervalMs: 5,
    },
  );
  operator.kill('SIGKILL');
  await new Promise((resolve) => operator.once('exit', resolve));
  let maxExisting = 0;
  const sample = setInterval(async () => {
    maxExisting = Math.max(maxExisting, (await env.replicasOf('web').catch(() => [])).length);
  }, 20);
  t.teardown(() => clearInterval(sample));
  operator = env.operatorProcess();
  const done = await eventually(
    'rollout complete after the restart',
    async () => {
      const items = await env.replicasOf('web');
      // Complete means the desired ordinals, not just four new replicas: mid-rollout the surge
      // replica web-4 can stand in for a web-0 being replaced.
      return (
        allRunning(4)(items) &&
        items.every((r) => r.spec.template.processes[0]?.env?.[0]?.value === '2' && r.spec.ordinal < 4) &&
        items
      );
    },
    { timeoutMs: 60_000 },
  );
  clearInterval(sample);
  t.deepEqual(
    done.map((r) => r.metadata.name),
    ['web-0', 'web-1', 'web-2', 'web-3'],
  );
  t.true(maxExisting <= 5, `at most replicas + maxSurge = 5 replicas, saw ${maxExisting}`);
});

/** A mesh proxy for the test's namespace, stopped in teardown; resolves once it serves. */
async function meshProxy(t: ExecutionContext, env: E2e) {
  const proxy = await startProxy({
    kubeConfig: loadKubeConfig({ kubeconfig: env.kubeconfig }),
    namespace: env.ns,
    name: `test-${env.id}`,
  });
  t.teardown(() => proxy.stop({ drainTimeoutMs: 0 }));
  await proxy.ready;
  return proxy;
}

/** A replica that answers with what the web Service answers it, found through its variables. */
const callerInstance = {
  apiVersion: 'orrery.dev/v1alpha1',
  kind: 'Instance',
  metadata: { name: 'caller' },
  spec: {
    replicas: 1,
    template: {
      metadata: { labels: { app: 'caller' } },
      processes: [
        {
          name: 'relay',
          command: [
            'node',
            '-e',
            `const target = process.env.WEB_SERVICE_HOST + ':' + process.env.WEB_SERVICE_PORT;
require('node:http').createServer(async (req, res) => {
  try { res.end('via ' + target + ': ' + await (await fetch('http://' + target + '/')).text()); }
  catch (err) { res.writeHead(502).end(String(err)); }
}).listen(Number(process.env.ORRERY_PORT_HTTP), '127.0.0.1');`,
          ],
          ports: [{ name: 'http', protocol: 'http' }],
        },
      ],
    },
  },
};

test('a Service gets a loopback virtual IP and endpoint counts', async (t) => {
  const env = await e2e(t, { hosts: 1 });
  await env.kubectl(['apply', '-f', join(examples, 'web.yaml')]);
  await eventually('3 running', async () => allRunning(3)(await env.replicasOf('web')), {
    timeoutMs: 30_000,
  });
  const status = await eventually('service status', async () => {
    const svc = JSON.parse(await env.kubectl(['get', 'osvc', 'web', '-o', 'json']));
    return svc.status?.readyEndpoints === 3 && svc.status;
  });
  t.regex(status.virtualIP, /^127\.\d+\.\d+\.\d+$/);
  t.is(status.totalEndpoints, 3);
  // No mesh proxy serves this namespace: the status says so instead of letting the traffic fields
  // look effective. A proxy that serves it (its Lease says which protocols) changes that.
  const proxiedOf = async (name: string) => {
    const svc = JSON.parse(await env.kubectl(['get', 'osvc', name, '-o', 'json']));
    return svc.status?.conditions?.find((c: { type: string }) => c.type === 'Proxied');
  };
  t.like(await proxiedOf('web'), { status: 'False', reason: 'NoMeshProxy' });
  const proxy = await meshProxy(t, env);
  await env.kubectl(
    ['apply', '-f', '-'],
    stringify({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Service',
      metadata: { name: 'web-tcp' },
      spec: {
        selector: { app: 'web' },
        ports: [{ name: 'raw', port: 81, targetPort: 'http', protocol: 'tcp' }],
      },
    }),
  );
  await eventually('web: Proxied', async () => (await proxiedOf('web'))?.status === 'True');
  // examples/web.yaml's acceptance: 300 requests to http://<VIP>/ all answer 200, spread over the
  // three replicas by its policy (least-request: two random choices, all idle: about a third each;
  // ±40 is about five standard deviations of a binomial(300, 1/3)).
  const webVip = status.virtualIP as string;
  const webPool = () => proxy.ports().find((p) => p.service === 'web');
  await eventually('the proxy balancing web over 3 ready endpoints', () => webPool()?.ready === 3);
  const answers: string[] = [];
  // The policy's spread holds while all three are in the pool: a replica whose readiness probe
  // fails meanwhile (a loaded CI machine) rightly gets nothing, and the requests still succeed.
  let allIn = true;
  for (let i = 0; i < 300; i++) {
    const res = await fetch(`http://${webVip}/`);
    t.is(res.status, 200);
    answers.push((await res.text()).trim());
    const pool = webPool();
    if (pool?.ready !== 3 || (pool?.ejected.length ?? 0) > 0) allIn = false;
  }
  const perReplica: Record<string, number> = {};
  for (const a of answers) perReplica[a] = (perReplica[a] ?? 0) + 1;
  if (allIn) {
    t.deepEqual(Object.keys(perReplica).sort(), ['hello from web-0', 'hello from web-1', 'hello from web-2']);
    for (const [who, n] of Object.entries(perReplica)) t.true(n >= 60 && n <= 140, `${who}: ${n} of 300`);
  } else {
    t.log(`an endpoint left the pool during the 300 requests: ${JSON.stringify(perReplica)}`);
    t.true(Object.keys(perReplica).length >= 2);
  }
  // A replica reaches the Service through the variables kubelet would set.
  await env.kubectl(['apply', '-f', '-'], stringify(callerInstance));
  const callerPort = await eventually('the caller running with its port', async () => {
    const [r] = await env.replicasOf('caller');
    return r?.status?.phase === 'Running' && r.status.ports?.find((p) => p.name === 'http')?.port;
  });
  const relayed = await eventually(
    'the caller relays web through $WEB_SERVICE_HOST:$WEB_SERVICE_PORT',
    async () => {
      const res = await fetch(`http://127.0.0.1:${callerPort}/`).catch(() => undefined);
      return res?.status === 200 && (await res.text());
    },
  );
  t.regex(relayed, /^via [\d.]+:80: hello from web-\d\n$/);
  await eventually('web-tcp: Proxied', async () => (await proxiedOf('web-tcp'))?.status === 'True');
  // Its virtual IP answers through the proxy with a replica's page (the bytes go through unchanged).
  const tcpVip = JSON.parse(await env.kubectl(['get', 'osvc', 'web-tcp', '-o', 'json'])).status.virtualIP;
  const raw = await eventually(
    'web-tcp answers through the proxy',
    () =>
      new Promise<string | undefined>((resolve) => {
        const socket = connect(81, tcpVip, () => socket.end('GET / HTTP/1.0\r\n\r\n'));
        let text = '';
        socket.on('data', (d) => {
          text += d;
        });
        socket.on('end', () => resolve(text || undefined));
        socket.on('error', () => resolve(undefined));
      }),
  );
  t.regex(raw, /hello from web-\d/);
  await proxy.stop({ drainTimeoutMs: 0 });
  await eventually(
    'web-tcp: NoMeshProxy once the proxy stopped',
    async () => (await proxiedOf('web-tcp'))?.reason === 'NoMeshProxy',
  );
  // The replicas really serve HTTP on their allocated ports.
  const replicas = await env.replicasOf('web');
  for (const replica of replicas) {
    const port = replica.status?.ports?.find((p) => p.name === 'http')?.port;
    const body = await (await fetch(`http://127.0.0.1:${port}/`)).text();
    t.is(body, `hello from ${replica.metadata.name}\n`);
  }
  // The endpoints are listed where kubectl users look: one EndpointSlice, each replica at its own port.
  const slices = await eventually('an EndpointSlice with 3 ready endpoints', async () => {
    const list = JSON.parse(
      await env.kubectl(['get', 'endpointslices.orrery.dev', '-l', 'orrery.dev/service=web', '-o', 'json']),
    ) as {
      items: {
        service: string;
        ready: number;
        endpoints: { replica: string; ports: { port: number }[] }[];
      }[];
    };
    return list.items.length === 1 && list.items[0]?.ready === 3 && list.items;
  });
  t.is(slices[0]?.service, 'web');
  t.deepEqual(
    slices[0]?.endpoints.map((e) => [e.replica, e.ports[0]?.port]).sort(),
    replicas.map((r) => [r.metadata.name, r.status?.ports?.find((p) => p.name === 'http')?.port]).sort(),
  );
  // A workload started after the Service gets kubelet's variables for it.
  await env.kubectl(
    ['apply', '-f', '-'],
    instanceYaml('client', 1, [
      'sh',
      '-c',
      'echo "$WEB_SERVICE_HOST $WEB_SERVICE_PORT $WEB_SERVICE_PORT_HTTP"; exec sleep infinity',
    ]),
  );
  const [client] = await eventually('client-0 Running', async () =>
    allRunning(1)(await env.replicasOf('client')),
  );
  const host = env.hosts.find((h) => h.name === client?.spec.host);
  const line = await eventually('the client printed its environment', async () => {
    const res = await fetch(`${host?.apiEndpoint}/v1/replicas/${env.ns}/client-0/logs`, {
      headers: { authorization: `Bearer ${host?.token}` },
    });
    const text = (await res.text()).trim();
    return text.length > 0 ? text : undefined;
  });
  t.is(line, `${status.virtualIP} 80 80`);
  // A targetPort no process declares is named in a condition rather than silently matching nothing.
  await env.kubectl(
    ['apply', '-f', '-'],
    stringify({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Service',
      metadata: { name: 'web-admin' },
      spec: { selector: { app: 'web' }, ports: [{ name: 'admin', port: 81, targetPort: 'admin' }] },
    }),
  );
  const ports = await eventually('PortsResolved=False on web-admin', async () => {
    const svc = JSON.parse(await env.kubectl(['get', 'osvc', 'web-admin', '-o', 'json']));
    const c = svc.status?.conditions?.find((x: { type: string }) => x.type === 'PortsResolved');
    return c?.status === 'False' && c;
  });
  t.is(ports.reason, 'UnknownTargetPort');
  t.regex(
    ports.message,
    /port admin: targetPort "admin" is declared by no process of the 3 selected replicas/,
  );
});

test('a rolling update of examples/web.yaml under load through the mesh: no client sees an error', async (t) => {
  const env = await e2e(t, { hosts: 1 });
  await env.kubectl(['apply', '-f', join(examples, 'web.yaml')]);
  await eventually('3 running', async () => allRunning(3)(await env.replicasOf('web')), {
    timeoutMs: 30_000,
  });
  const proxy = await meshProxy(t, env);
  const vip = await eventually('web served with 3 ready endpoints', async () => {
    const svc = JSON.parse(await env.kubectl(['get', 'osvc', 'web', '-o', 'json']));
    return proxy.ports().some((p) => p.listening && p.ready === 3) && (svc.status?.virtualIP as string);
  });
  const before = new Set((await env.replicasOf('web')).map((r) => r.metadata.uid));
  const errors: string[] = [];
  let answered = 0;
  let loading = true;
  // Four clients sending GETs one after another until the rollout is over (bounded: 60 s, 20,000 each).
  const client = async () => {
    const until = Date.now() + 60_000;
    for (let i = 0; i < 20_000 && loading && Date.now() < until; i++) {
      try {
        const res = await fetch(`http://${vip}/`);
        const body = await res.text();
        if (res.status === 200) answered++;
        else errors.push(`${res.status} ${body.trim()}`);
      } catch (err) {
        errors.push(String((err as Error).cause ?? err));
      }
    }
  };
  const clients = Array.from({ length: 4 }, client);
  await env.kubectl([
    'patch',
    'inst',
    'web',
    '--type=json',
    '-p',
    JSON.stringify([
      { op: 'add', path: '/spec/template/processes/0/env', value: [{ name: 'VERSION', value: '2' }] },
    ]),
  ]);
  const after = await eventually(
    'every replica replaced and running',
    async () => {
      const items = await env.replicasOf('web');
      return allRunning(3)(items) && items.every((r) => !before.has(r.metadata.uid)) && items;
    },
    { timeoutMs: 60_000 },
  );
  // A moment on the new replicas only, then the load stops.
  await new Promise((resolve) => setTimeout(resolve, 500));
  loading = false;
  await Promise.all(clients);
  t.is(after.length, 3);
  t.deepEqual(errors.slice(0, 5), [], `${errors.length} errors in ${answered + errors.length} requests`);
  t.true(answered > 100, `${answered} requests answered`);
});
