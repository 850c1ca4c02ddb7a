// Leader election and the Lease heartbeat against the real API server, with short leases.
//
// No bound here depends on how fast the machine is. What the product promises about time is
// checked against when its own Lease requests started and ended (each Lease client records its
// calls), never against a wall-clock window: a standby takes over an expired Lease no sooner than a
// whole Lease duration after it first saw the last renewal; a heartbeat reports a loss no sooner
// than lostAfterMs after the start of its last renewal. Load only makes these later. How soon
// things happen is only logged (bench/ measures it); the waits are bounded against a hang.
import { randomBytes } from 'node:crypto';
import test from 'ava';
import { KubeApi } from '../../kube/api.ts';
import { loadKubeConfig } from '../../kube/config.ts';
import { isConflict, isNotFound } from '../../kube/errors.ts';
import { LeaderElector } from '../../kube/leader.ts';
import { type Lease, LeaseHeartbeat, leaseClient, leaseExpired } from '../../kube/lease.ts';
import type { ResourceClient } from '../../kube/resources.ts';
import { freshNamespace, privateControlPlane, testCluster } from '../helpers/cluster.ts';
import { aroundLeaseCalls } from '../helpers/lease-client.ts';

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

/**
 * The code's clock (performance.now()) reads a little before ours (a few synchronous statements,
 * no await in between): what a "no sooner than" bound allows for that and for Node's
 * millisecond timers. Far below any interval the bounds tell apart (100 ms renewals).
 */
const CLOCK_SLACK_MS = 20;

/** One Lease request, timed with performance.now(): started, settled, and what it returned or why it failed. */
interface LeaseCall {
  method: 'get' | 'create' | 'replace';
  start: number;
  end: number;
  outcome: 'ok' | 'conflict' | 'notFound' | 'error';
  /** What `get` returned, or what `create`/`replace` were given. */
  lease: Lease | undefined;
}

/** `client`, with each get, create and replace recorded in `calls`, in call order. */
function recorded(client: ResourceClient<Lease>, calls: LeaseCall[]): ResourceClient<Lease> {
  const timed = (method: LeaseCall['method'], run: () => Promise<Lease>, given?: Lease) => {
    const call: LeaseCall = { method, start: performance.now(), end: 0, outcome: 'ok', lease: given };
    calls.push(call);
    return run().then(
      (lease) => {
        call.end = performance.now();
        if (method === 'get') call.lease = lease;
        return lease;
      },
      (error: unknown) => {
        call.end = performance.now();
        call.outcome = isConflict(error) ? 'conflict' : isNotFound(error) ? 'notFound' : 'error';
        throw error;
      },
    );
  };
  return aroundLeaseCalls(client, (method, args, call) =>
    timed(method, call, method === 'get' ? undefined : (args[0] as Lease)),
  );
}

const isWrite = (c: LeaseCall) => c.method === 'create' || c.method === 'replace';

/**
 * Where the renewal that ended with the successful write `calls[k]` started, per renewLease(): a
 * single PUT, or (no Lease written yet, or that PUT answered 409/404) a GET and then the write.
 * When unsure it picks the earlier call, which only makes a "no sooner than" bound looser.
 */
function renewalStart(calls: LeaseCall[], k: number): number {
  let first = k;
  const get = calls[first - 1];
  if (get?.method === 'get' && (get.outcome === 'ok' || get.outcome === 'notFound')) {
    first--;
    const put = calls[first - 1];
    if (put?.method === 'replace' && (put.outcome === 'conflict' || put.outcome === 'notFound')) first--;
  }
  return (calls[first] as LeaseCall).start;
}

/**
 * For each loss reported (performance.now() of each onLost), how long after the start of the last
 * renewal that succeeded before it: what LeaseHeartbeat counts lostAfterMs from.
 */
function lossesAfterRenewal(calls: LeaseCall[], losses: number[]): number[] {
  return losses.map((lostAt) => {
    let k = -1;
    calls.forEach((c, i) => {
      if (isWrite(c) && c.outcome === 'ok' && c.end <= lostAt) k = i;
    });
    if (k < 0) throw new Error('a loss reported before any renewal succeeded');
    return lostAt - renewalStart(calls, k);
  });
}

interface Candidate {
  identity: string;
  elector: LeaderElector;
  calls: LeaseCall[];
  startedAt: number[];
  stoppedAt: number[];
  stopReasons: string[];
}

function candidate(
  namespace: string,
  identity: string,
  leaseSeconds: number,
  releaseOnStop: boolean,
): Candidate {
  const c: Candidate = {
    identity,
    calls: [],
    startedAt: [],
    stoppedAt: [],
    stopReasons: [],
    elector: undefined as unknown as LeaderElector,
  };
  c.elector = new LeaderElector({
    client: recorded(leaseClient(api, identity), c.calls),
    namespace,
    name: 'orrery-operator',
    identity,
    leaseDurationSeconds: leaseSeconds,
    renewDeadlineMs: leaseSeconds * 1000 - 500,
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

/** 2 s rather than 1: the leader keeps leading unless renewals fail for 1.5 s (a loaded machine's slow API calls do not depose it). */
const LEASE_SECONDS = 2;
const LEASE_MS = LEASE_SECONDS * 1000;

for (const [mode, release] of [
  ['releases the lease on stop', true],
  ['dies without releasing', false],
] as const) {
  test(`two candidates: exactly one leads; the other takes over when the leader ${mode}`, async (t) => {
    const ns = await freshNamespace(t);
    const a = candidate(ns, `a-${randomBytes(2).toString('hex')}`, LEASE_SECONDS, release);
    const b = candidate(ns, `b-${randomBytes(2).toString('hex')}`, LEASE_SECONDS, release);
    a.elector.start();
    b.elector.start();
    t.teardown(() => Promise.all([a.elector.stop(), b.elector.stop()]));

    await until('a leader', () => a.elector.isLeader() || b.elector.isLeader());
    // Watched until the leader has held the Lease by renewals for longer than its duration (past
    // which the standby would take an unrenewed Lease): never two leaders at once meanwhile.
    let twoLeaders = false;
    await until(
      'the leader renewing its Lease past one Lease duration',
      () => {
        if (a.elector.isLeader() && b.elector.isLeader()) twoLeaders = true;
        const holder = a.elector.isLeader() ? a : b.elector.isLeader() ? b : undefined;
        const acquired = holder?.startedAt[0];
        const renewals = holder?.calls.filter((c) => c.method === 'replace' && c.outcome === 'ok') ?? [];
        const last = renewals.at(-1);
        return acquired !== undefined && last !== undefined && last.start - acquired > LEASE_MS + 200;
      },
      30_000,
    );
    t.false(twoLeaders, 'two leaders at the same time');
    const [leader, standby] = a.elector.isLeader() ? [a, b] : [b, a];
    t.is(leader.startedAt.length, 1, 'the leader kept its lease through several renewals');
    t.is(standby.startedAt.length, 0);

    const lease = await leaseClient(api, 'reader').get('orrery-operator', { namespace: ns });
    t.is(lease.spec?.leaseDurationSeconds, LEASE_SECONDS);
    t.false(leaseExpired(lease));

    const stoppedAt = performance.now();
    await leader.elector.stop();
    t.deepEqual(leader.stopReasons, ['shutdown'], 'onStoppedLeading ran once, for the stop');
    await until('takeover', () => standby.elector.isLeader(), 30_000);
    const takeoverAt = standby.startedAt[0] as number;
    t.log(
      `takeover ${(takeoverAt - stoppedAt).toFixed(0)} ms after the leader stopped (${mode}; lease ${LEASE_SECONDS} s, retry 100 ms)`,
    );
    // The standby's first successful write is its takeover; the GET before it, what it took over.
    const takeover = standby.calls.findIndex((c) => isWrite(c) && c.outcome === 'ok');
    const replaced = standby.calls[takeover]?.lease;
    const taken = standby.calls
      .slice(0, takeover)
      .findLast((c) => c.method === 'get' && c.outcome === 'ok')?.lease;
    t.is(
      taken?.metadata?.resourceVersion,
      replaced?.metadata?.resourceVersion,
      'the takeover wrote over what it read',
    );
    if (release) {
      t.falsy(taken?.spec?.holderIdentity, 'the standby took over a released Lease, not an expired one');
    } else {
      t.is(taken?.spec?.holderIdentity, leader.identity, 'the standby took over the dead leader’s Lease');
      // Safety: not before the Lease went unrenewed for a whole duration as the standby saw it,
      // counted from the start of its first GET that returned that last renewal.
      const firstSeen = standby.calls.find(
        (c) =>
          c.method === 'get' &&
          c.outcome === 'ok' &&
          c.lease?.metadata?.resourceVersion === taken?.metadata?.resourceVersion,
      ) as LeaseCall;
      const waited = takeoverAt - firstSeen.start;
      t.log(`expired Lease taken over ${waited.toFixed(0)} ms after the standby first saw its last renewal`);
      t.true(
        waited >= LEASE_MS - CLOCK_SLACK_MS,
        `taken over ${waited.toFixed(0)} ms after, before the Lease expired`,
      );
    }
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

  const calls: LeaseCall[] = [];
  const losses: number[] = [];
  let recovered = 0;
  const hb = new LeaseHeartbeat({
    client: recorded(leaseClient(privateApi, 'orrery-runtime/test'), calls),
    namespace: 'orrery-system',
    name: 'host-test',
    holderIdentity: 'test',
    leaseDurationSeconds: 1,
    renewIntervalMs: 100,
    labels: { 'orrery.dev/host': 'test' },
    onLost: () => void losses.push(performance.now()),
    onRecovered: () => recovered++,
  });
  await hb.start();
  t.teardown(() => hb.stop());
  // The same Lease duration, but lost a little earlier (lostAfterMs, counted from the start of the
  // last renewal that succeeded): how a host fences before anyone else may count its Lease expired.
  const earlyCalls: LeaseCall[] = [];
  const earlyLosses: number[] = [];
  const early = new LeaseHeartbeat({
    client: recorded(leaseClient(privateApi, 'orrery-runtime/test-early'), earlyCalls),
    namespace: 'orrery-system',
    name: 'host-test-early',
    holderIdentity: 'test-early',
    leaseDurationSeconds: 1,
    renewIntervalMs: 100,
    lostAfterMs: 500,
    onLost: () => void earlyLosses.push(performance.now()),
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
  // No renewal can succeed from here on: the last loss each reports is final. Bounded at 10× the
  // Lease duration, against a hang only.
  await until('loss reported by both heartbeats', () => hb.isLost() && early.isLost(), 10_000);
  const lostAfter = lossesAfterRenewal(calls, losses);
  const earlyLostAfter = lossesAfterRenewal(earlyCalls, earlyLosses);
  const ms = (xs: number[]) => xs.map((x) => `${x.toFixed(0)} ms`).join(', ');
  t.log(`loss reported ${ms(lostAfter)} after the start of the last successful renewal (lease 1 s)`);
  t.log(`with lostAfterMs 500: ${ms(earlyLostAfter)}`);
  // Safety: never before the Lease could have gone unrenewed that long (load only makes it later).
  for (const after of lostAfter)
    t.true(after >= 1000 - CLOCK_SLACK_MS, `loss reported after only ${after} ms`);
  for (const after of earlyLostAfter)
    t.true(after >= 500 - CLOCK_SLACK_MS, `lostAfterMs 500, loss reported after only ${after} ms`);
  t.true(
    (earlyLosses.at(-1) as number) < (losses.at(-1) as number),
    'lostAfterMs 500 reports the loss before the full duration',
  );

  await cp.start();
  // A renewal answered slowly while the API server warms up proves nothing (its deadline passed
  // while it was in flight): the heartbeat may report lost once more before the next quick one.
  await until('recovery reported', () => recovered >= 1 && !hb.isLost(), 20_000);
});
