// The TUI's runtime event streams (tui/model/live.ts) against a real runtime and a real API
// server: an exit and the restart that follows reach the Replica rows' model through the host's
// stream while the API server is frozen (so not through the status round trip); a lost stream
// marks the host and drops what it said; the stream comes back by itself with the runtime.
import test from 'ava';
import { pino } from 'pino';
import { REPLICAS } from '../../crds/resources.ts';
import type { Replica } from '../../crds/types.ts';
import { KubeApi, loadKubeConfig, resourceClient, typed } from '../../kube/index.ts';
import { type Agent, startAgent } from '../../node-runtime/agent/index.ts';
import { selfSignedCertificate } from '../../platform/x509.ts';
import { ClusterModel } from '../../tui/model/cluster.ts';
import { RuntimeEventsModel } from '../../tui/model/live.ts';
import {
  agentDirs,
  inProcessAgent,
  installCrdsForAgent,
  kubeForTests,
  pidAlive,
  removeCgroupTree,
  replicaObject,
  testNamespace,
  waitFor,
} from '../helpers/agent-harness.ts';
import { privateControlPlane } from '../helpers/cluster.ts';

test('an exit and its restart reach the rows through the runtime’s stream while the API server is frozen; a lost stream marks the host, and it reconnects', async (t) => {
  const plane = await privateControlPlane(t, 'orrery-live-cp-');
  const kc = loadKubeConfig({ kubeconfig: plane.current.kubeconfig });
  const api = await KubeApi.fromKubeConfig(kc);
  t.teardown(() => api.close());
  await installCrdsForAgent(kc, api);
  const replicas = resourceClient(api, typed<Replica>(REPLICAS), 'orrery-test');
  await api.request({ method: 'POST', path: '/api/v1/namespaces', body: { metadata: { name: 'live' } } });

  const dirs = await agentDirs(t);
  t.teardown(() => removeCgroupTree(dirs.cgroupParent));
  const start = () =>
    startAgent({
      kubeconfig: plane.current.kubeconfig,
      hostName: dirs.hostName,
      stateDir: dirs.stateDir,
      logDir: dirs.logDir,
      cgroupParent: dirs.cgroupParent,
      // Long enough that a frozen API server does not fence it during the test.
      leaseDurationSeconds: 30,
      registerUnschedulable: true,
      log: pino({ level: process.env.ORRERY_TEST_LOG ?? 'silent' }),
    });
  let agent: Agent | undefined = await start();
  t.teardown(() => agent?.stop({ stopWorkloads: true }));
  await replicas.create(
    replicaObject('live', 'w-0', dirs.hostName, [{ name: 'main', command: ['sleep', '600'] }]),
  );
  const running = await waitFor('w-0 Running', async () => {
    const r = await replicas.get('w-0', { namespace: 'live' });
    return r.status?.phase === 'Running' ? r : undefined;
  });
  const pid = running.status?.processes?.[0]?.pid as number;

  let endpoint = agent.apiEndpoint;
  const live = new RuntimeEventsModel({
    hosts: () => [{ name: dirs.hostName, endpoint }],
    token: async () => (agent as Agent).token,
    hostsEveryMs: 100,
    backoffMs: { initial: 50, max: 400 },
  }).start();
  t.teardown(() => live.stop());
  const cluster = new ClusterModel({ api, namespace: 'live', live, coalesceMs: 5 }).start();
  t.teardown(() => cluster.stop());
  const shown = () => cluster.get('replicas', 'live/w-0')?.status?.processes?.[0];
  // The cluster's informer must hold the Replica before the API server is frozen: the rows are
  // its objects, overlaid (a loaded machine once froze it before the first list had returned).
  await waitFor('the stream open, w-0 in it and in the informer', () =>
    live.connected(dirs.hostName) &&
    live.status('live/w-0')?.processes[0]?.pid === pid &&
    cluster.get('replicas', 'live/w-0') !== undefined
      ? true
      : undefined,
  );
  let changes = 0;
  cluster.subscribe(() => changes++);

  // The API server stops answering (SIGSTOP): whatever changes now comes from the runtime alone.
  process.kill(plane.current.pid, 'SIGSTOP');
  t.teardown(() => {
    try {
      process.kill(plane.current.pid, 'SIGCONT');
    } catch {}
  });
  const killed = performance.now();
  process.kill(pid, 'SIGKILL');
  const restarted = await waitFor(
    'the restart in the rows’ model',
    () => {
      const p = shown();
      return p?.restarts === 1 && p.state === 'Running' && p.pid !== pid ? p : undefined;
    },
    // Usually well under a second; the bound only has to stay below the 30 s lease's fence (the
    // spawn waits for libuv's threadpool, which a loaded machine's fsyncs can hold for seconds).
    15_000,
  ).catch((err: Error) => {
    throw new Error(
      `${err.message}; the rows show ${JSON.stringify(shown())}; the runtime's word ${JSON.stringify(live.status('live/w-0'))}, connected ${live.connected(dirs.hostName)}, error ${live.hostError(dirs.hostName)}`,
    );
  });
  t.log(
    `SIGKILL -> restart in the TUI's model, API server frozen: ${(performance.now() - killed).toFixed(0)} ms`,
  );
  t.is(restarted.lastExit?.signal, 'SIGKILL');
  t.is(restarted.lastExit?.reason, 'Killed');
  t.true(pidAlive(restarted.pid as number));
  t.is(cluster.get('replicas', 'live/w-0')?.status?.restarts, 1);
  await waitFor('the views told', () => (changes > 0 ? true : undefined), 2_000);
  t.is(cluster.usage?.hostError(dirs.hostName), undefined, 'the host is not marked');
  process.kill(plane.current.pid, 'SIGCONT');

  // The runtime goes away: the stream fails, the host is marked, and its word is dropped.
  await agent.stop();
  agent = undefined;
  await waitFor('the host marked', () => live.hostError(dirs.hostName));
  t.false(live.connected(dirs.hostName));
  t.is(live.status('live/w-0'), undefined);
  t.truthy(cluster.usage?.hostError(dirs.hostName), 'the Replica rows mark the host as usage does');
  t.log(`while down: ${live.hostError(dirs.hostName)}`);

  // Back (re-adopting, on a new port): the stream opens again by itself.
  agent = await start();
  endpoint = agent.apiEndpoint;
  await waitFor('the stream open again', () =>
    live.connected(dirs.hostName) && live.status('live/w-0')?.processes[0]?.pid === restarted.pid
      ? true
      : undefined,
  );
  t.is(live.hostError(dirs.hostName), undefined);
  t.is(shown()?.restarts, 1);
});

test('over TLS: the stream trusts the certificate the Host publishes, and no other', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  t.teardown(() => removeCgroupTree(dirs.cgroupParent));
  const agent = await inProcessAgent(t, dirs, { tls: true });
  await k.replicas.create(
    replicaObject(ns, 'tls-0', dirs.hostName, [{ name: 'main', command: ['sleep', '600'] }]),
  );
  const host = await waitFor('the Host with its certificate', async () => {
    const h = await k.hosts.get(dirs.hostName);
    return h.status?.apiEndpoint === agent.apiEndpoint && h.status.apiCertificate ? h : undefined;
  });
  const pid = (
    await waitFor('tls-0 Running', async () => {
      const r = await k.replicas.get('tls-0', { namespace: ns });
      return r.status?.phase === 'Running' ? r : undefined;
    })
  ).status?.processes?.[0]?.pid;
  const model = (certificate: string) => {
    const live = new RuntimeEventsModel({
      hosts: () => [{ name: dirs.hostName, endpoint: agent.apiEndpoint, certificate }],
      token: async () => agent.token,
      backoffMs: { initial: 50, max: 200 },
    }).start();
    t.teardown(() => live.stop());
    return live;
  };
  const pinned = model(host.status?.apiCertificate as string);
  await waitFor('the stream over TLS', () =>
    pinned.connected(dirs.hostName) && pinned.status(`${ns}/tls-0`)?.processes[0]?.pid === pid
      ? true
      : undefined,
  );
  const impostor = selfSignedCertificate({ commonName: 'impostor', altNames: ['127.0.0.1'] }).cert;
  const refused = model(impostor);
  const why = await waitFor('the other certificate refused', () => refused.hostError(dirs.hostName));
  t.false(refused.connected(dirs.hostName));
  t.regex(why, new RegExp(`^host ${dirs.hostName}: .*(SELF_SIGNED|UNABLE_TO_VERIFY|certificate)`, 'i'));
  t.is(refused.status(`${ns}/tls-0`), undefined);
  t.log(`another certificate: ${why}`);
});
