// The host's Lease is renewed on connections of its own: a backlog in the pool the status writes
// use (a burst of starts on a slow API server) must not hold a renewal back past the fence point.
// Here the status pool is blocked outright (one socket, held by a watch that never ends).
import test from 'ava';
import { pino } from 'pino';
import { hostLeaseName, SYSTEM_NAMESPACE } from '../../crds/labels.ts';
import { KubeApi, loadKubeConfig } from '../../kube/index.ts';
import { hostFacts } from '../../node-runtime/agent/host.ts';
import { AgentMetrics } from '../../node-runtime/agent/metrics.ts';
import { normalizeAgentOptions } from '../../node-runtime/agent/options.ts';
import { HostRegistration } from '../../node-runtime/agent/registration.ts';
import { detectCgroupLayout } from '../../node-runtime/cgroups/index.ts';
import { kubeForTests, uniqueHost } from '../helpers/agent-harness.ts';

test('Lease renewals go on while every connection of the status pool is busy', async (t) => {
  const kube = await kubeForTests();
  const kc = loadKubeConfig({ kubeconfig: kube.kubeconfig });
  const blocked = await KubeApi.fromKubeConfig(kc, { maxSockets: 1 });
  const leaseApi = await KubeApi.fromKubeConfig(kc, { maxSockets: 2 });
  t.teardown(() => {
    blocked.close();
    leaseApi.close();
  });
  // The one socket of `blocked`: a watch with nothing to end it for 30 s.
  const hold = new AbortController();
  void blocked
    .request({
      method: 'GET',
      path: '/api/v1/namespaces',
      query: { watch: true, timeoutSeconds: 30 },
      timeoutMs: 35_000,
      signal: hold.signal,
    })
    .catch(() => {});
  t.teardown(() => hold.abort());

  const hostName = uniqueHost();
  const options = normalizeAgentOptions({
    hostName,
    stateDir: `/tmp/${hostName}`,
    leaseDurationSeconds: 1,
    leaseRenewIntervalMs: 250,
  });
  let lost = 0;
  const registration = new HostRegistration({
    api: blocked,
    leaseApi,
    hosts: kube.hosts,
    fieldManager: `orrery-runtime/${hostName}`,
    options,
    facts: await hostFacts({}),
    layout: detectCgroupLayout(),
    log: pino({ level: process.env.ORRERY_TEST_LOG ?? 'silent' }),
    metrics: new AgentMetrics(hostName, () => new Map()),
    replicaCount: () => 0,
    persistentData: () => [],
    paused: () => false,
    onRenewFailure: () => {},
    onLost: () => {
      lost++;
    },
    onRecovered: () => {},
  });
  t.teardown(async () => {
    await registration.stop();
    await kube.hosts.delete(hostName).catch(() => {});
    await kube.leases.delete(hostLeaseName(hostName), { namespace: SYSTEM_NAMESPACE }).catch(() => {});
  });
  await registration.start('http://127.0.0.1:1');

  // Three lease durations: a renewal stuck in the blocked pool would have fenced after 750 ms.
  const first = registration.lastRenewTime() as number;
  await new Promise((resolve) => setTimeout(resolve, 3000));
  t.is(lost, 0, 'the Lease was never judged lost');
  const last = registration.lastRenewTime() as number;
  t.true(
    last - first >= 2000,
    `renewed through the whole wait (last renewal ${last - first} ms after the first)`,
  );
  t.true(Date.now() - last < 1000, 'and recently');
});
