// Leader election and the Lease heartbeat against the real API server, with short leases.
import { randomBytes } from 'node:crypto';
import test from 'ava';
import { KubeApi } from '../../kube/api.ts';
import { loadKubeConfig } from '../../kube/config.ts';
import { LeaderElector } from '../../kube/leader.ts';
import { LeaseHeartbeat, leaseClient, leaseExpired } from '../../kube/lease.ts';
import { freshNamespace, privateControlPlane, testCluster } from '../helpers/cluster.ts';

let api: KubeApi;

test.before(async () => {
  const { kubeconfig } = await testCluster();
  api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
});
test.after.always(() => api?.close());

async function until(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Candidate {
  elector: LeaderElector;
  startedAt: number[];
  stoppedAt: number[];
  stopReasons: string[];
}

function candidate(namespace: string, identity: string, releaseOnStop = true): Candidate {
  const c: Candidate = {
    startedAt: [],
    stoppedAt: [],
    stopReasons: [],
    elector: undefined as unknown as LeaderElector,
  };
  c.elector = new LeaderElector({
    client: leaseClient(api, identity),
    namespace,
    name: 'orrery-operator',
    identity,
    leaseDurationSeconds: 1,
    renewDeadlineMs: 700,
    retryPeriodMs: 100,
    releaseOnStop,
    onStartedLeading: () => void c.startedAt.push(performance.now()),
    onStoppedLeading: (reason) => {
      c.stoppedAt.push(performance.now());
      c.stopReasons.push(reason);
    },
  });
  return c;
}

for (const [mode, release] of [
  ['releases the lease on stop', true],
  ['dies without releasing', false],
] as const) {
  test(`two candidates: exactly one leads; the other takes over when the leader ${mode}`, async (t) => {
    const ns = await freshNamespace(t);
    const a = candidate(ns, `a-${randomBytes(2).toString('hex')}`, release);
    const b = candidate(ns, `b-${randomBytes(2).toString('hex')}`, release);
    a.elector.start();
    b.elector.start();
    t.teardown(() => Promise.all([a.elector.stop(), b.elector.stop()]));

    await until('a leader', () => a.elector.isLeader() || b.elector.isLeader());
    // Watch for a while: never two leaders at once, and the lease is renewed by the one.
    const end = performance.now() + 2500;
    while (performance.now() < end) {
      t.false(a.elector.isLeader() && b.elector.isLeader(), 'two leaders at the same time');
      await new Promise((r) => setTimeout(r, 5));
    }
    const [leader, standby] = a.elector.isLeader() ? [a, b] : [b, a];
    t.is(leader.startedAt.length, 1, 'the leader kept its lease through several renewals');
    t.is(standby.startedAt.length, 0);

    const lease = await leaseClient(api, 'reader').get('orrery-operator', { namespace: ns });
    t.is(lease.spec?.leaseDurationSeconds, 1);
    t.false(leaseExpired(lease));

    const stoppedAt = performance.now();
    await leader.elector.stop();
    t.deepEqual(leader.stopReasons, ['shutdown'], 'onStoppedLeading ran once, for the stop');
    await until('takeover', () => standby.elector.isLeader(), 5000);
    const takeoverMs = (standby.startedAt[0] as number) - stoppedAt;
    t.log(`takeover ${takeoverMs.toFixed(0)} ms after the leader stopped (${mode}; lease 1 s, retry 100 ms)`);
    if (release) t.true(takeoverMs < 1000, `released lease taken over in ${takeoverMs} ms`);
    else t.true(takeoverMs >= 500 && takeoverMs < 2500, `expired lease taken over in ${takeoverMs} ms`);
    const after = await leaseClient(api, 'reader').get('orrery-operator', { namespace: ns });
    t.true((after.spec?.leaseTransitions ?? 0) >= 1);
  });
}

test('a lease heartbeat renews, reports loss when the API server is gone, and recovery when it is back', async (t) => {
  // A private control plane, so the partition can be real: stop it, restart it on the same data.
  const cp = await privateControlPlane(t, 'orrery-kube-lease-');
  const privateApi = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig: cp.current.kubeconfig }));
  t.teardown(() => privateApi.close());
  await privateApi.request({
    method: 'POST',
    path: '/api/v1/namespaces',
    body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'orrery-system' } },
  });

  let lostAt = 0;
  let recovered = 0;
  const hb = new LeaseHeartbeat({
    client: leaseClient(privateApi, 'orrery-runtime/test'),
    namespace: 'orrery-system',
    name: 'host-test',
    holderIdentity: 'test',
    leaseDurationSeconds: 1,
    renewIntervalMs: 100,
    labels: { 'orrery.dev/host': 'test' },
    onLost: () => {
      lostAt = performance.now();
    },
    onRecovered: () => recovered++,
  });
  await hb.start();
  t.teardown(() => hb.stop());
  // The same Lease duration, but lost a little earlier (lostAfterMs, counted from the start of the
  // last renewal that succeeded): how a host fences before anyone else may count its Lease expired.
  let earlyLostAt = 0;
  const early = new LeaseHeartbeat({
    client: leaseClient(privateApi, 'orrery-runtime/test-early'),
    namespace: 'orrery-system',
    name: 'host-test-early',
    holderIdentity: 'test-early',
    leaseDurationSeconds: 1,
    renewIntervalMs: 100,
    lostAfterMs: 500,
    onLost: () => {
      earlyLostAt = performance.now();
    },
  });
  await early.start();
  t.teardown(() => early.stop());
  await until('several renewals', () => hb.renewals() >= 4);
  const lease = await leaseClient(privateApi, 'reader').get('host-test', { namespace: 'orrery-system' });
  t.is(lease.spec?.holderIdentity, 'test');
  t.is(lease.metadata?.labels?.['orrery.dev/host'], 'test');
  t.regex(lease.spec?.renewTime ?? '', /\.\d{6}Z$/, 'MicroTime with six fractional digits');
  t.false(leaseExpired(lease));
  t.false(hb.isLost());

  await cp.stop();
  const lastRenew = hb.lastRenewTime();
  await until('loss reported', () => lostAt > 0, 10_000);
  const lostAfterMs = Date.now() - lastRenew - (performance.now() - lostAt);
  t.log(`loss reported ${lostAfterMs.toFixed(0)} ms after the last successful renewal (lease 1 s)`);
  t.true(lostAfterMs >= 900 && lostAfterMs < 3000, `not early (safety), not hung: ${lostAfterMs} ms`);
  t.true(hb.isLost());
  t.true(
    earlyLostAt > 0 && earlyLostAt < lostAt,
    'lostAfterMs 500 reports the loss before the full duration',
  );
  const earlyAfterMs = Date.now() - early.lastRenewTime() - (performance.now() - earlyLostAt);
  t.true(earlyAfterMs >= 350, `not before lostAfterMs minus one renewal's time: ${earlyAfterMs} ms`);

  await cp.start();
  // A renewal answered slowly while the API server warms up proves nothing (its deadline passed
  // while it was in flight): the heartbeat may report lost once more before the next quick one.
  await until('recovery reported', () => recovered >= 1 && !hb.isLost(), 20_000);
});
