// LeaseHeartbeat's annotations as current state (kube/lease.ts), against the real API server: an
// annotations function is read at every renewal, including the one-PUT renewals from the last
// Lease written; renewSoon() renews early, but never sooner than minRenewGapMs after the previous
// renewal started, however often it is called.
import test from 'ava';
import { KubeApi, LeaseHeartbeat, leaseClient, loadKubeConfig } from '../../kube/index.ts';
import { freshNamespace, testCluster } from '../helpers/cluster.ts';
import { aroundLeaseCalls } from '../helpers/lease-client.ts';
import { eventually } from '../helpers/wait.ts';

test('annotations read at each renewal; renewSoon renews early, at most once per minRenewGapMs', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
  t.teardown(() => api.close());
  const client = leaseClient(api, 'orrery-test');
  // When each write started (performance.now()), counted around the real client.
  const writes: number[] = [];
  const counting = aroundLeaseCalls(client, (method, _args, call) => {
    if (method !== 'get') writes.push(performance.now());
    return call();
  });
  let state = 'zero';
  const hb = new LeaseHeartbeat({
    client: counting,
    namespace: ns,
    name: 'proxy-test',
    holderIdentity: 'proxy-test',
    leaseDurationSeconds: 600, // the interval (150 s) never comes in this test: every renewal is asked for
    minRenewGapMs: 300,
    annotations: () => ({ 'orrery.dev/state': state, 'orrery.dev/fixed': 'yes' }),
  });
  await hb.start();
  t.teardown(() => hb.stop());
  const annotations = async () => (await client.get('proxy-test', { namespace: ns })).metadata?.annotations;
  t.like(await annotations(), { 'orrery.dev/state': 'zero', 'orrery.dev/fixed': 'yes' });

  // One change: renewed once, with the new value, through the one-PUT path.
  state = 'one';
  hb.renewSoon();
  await eventually('the Lease to say one', async () => (await annotations())?.['orrery.dev/state'] === 'one');
  t.is(hb.renewals(), 2);
  t.like(await annotations(), { 'orrery.dev/fixed': 'yes' });

  // A storm of changes for 1.5 s, each asking for a renewal: the last value gets there, and the
  // writes are spaced by the gap (one write per 300 ms at most: 6 in 1.5 s plus the one in flight).
  const before = writes.length;
  const start = performance.now();
  let n = 0;
  while (performance.now() - start < 1500) {
    state = `storm-${n++}`;
    hb.renewSoon();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const last = state;
  await eventually(
    'the Lease to carry the last value',
    async () => (await annotations())?.['orrery.dev/state'] === last,
  );
  const storm = writes.slice(before);
  t.log(`${n} renewSoon() calls, ${storm.length} writes`);
  t.true(storm.length >= 3 && storm.length <= 7, `${storm.length} writes`);
  for (let i = 1; i < storm.length; i++) {
    const gap = (storm[i] as number) - (storm[i - 1] as number);
    t.true(gap >= 290, `writes ${gap.toFixed(0)} ms apart`);
  }
  // Quiet again: no write without a call.
  const settled = writes.length;
  await new Promise((resolve) => setTimeout(resolve, 700));
  t.is(writes.length, settled);
});

test('renewals start an interval after the previous one started: two slow answers in a row stay inside the fence point', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
  t.teardown(() => api.close());
  const client = leaseClient(api, 'orrery-test');
  // Every write answered 620 ms late, as a busy API server answers, with a renewal interval and
  // fence point 2.4 times the agent's on a 1 s Lease (250 and 750 ms), so the real API's own
  // latency has room: counted from each answer, the next renewal would start 600 ms later and
  // answer at least 1,840 ms after the previous one started, past the 1,800 ms fence point; counted
  // from its start, 1,240 ms plus twice the API's latency.
  const slowMs = 620;
  const slow = aroundLeaseCalls(client, async (method, _args, call) => {
    const answer = await call();
    if (method === 'replace') await new Promise((resolve) => setTimeout(resolve, slowMs));
    return answer;
  });
  let lost = 0;
  const hb = new LeaseHeartbeat({
    client: slow,
    namespace: ns,
    name: 'slow-api',
    holderIdentity: 'slow-api',
    leaseDurationSeconds: 3,
    renewIntervalMs: 600,
    lostAfterMs: 1800,
    onLost: () => lost++,
  });
  await hb.start();
  t.teardown(() => hb.stop());
  await new Promise((resolve) => setTimeout(resolve, 5000));
  t.log(`${hb.renewals()} renewals in 5 s`);
  t.is(lost, 0, 'not lost: each renewal answered within 1,800 ms of the start of the one before');
  t.false(hb.isLost());
  t.true(hb.renewals() >= 6, `${hb.renewals()} renewals`);
});
