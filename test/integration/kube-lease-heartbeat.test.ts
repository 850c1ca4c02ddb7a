// LeaseHeartbeat's annotations as current state (kube/lease.ts), against the real API server: an
// annotations function is read at every renewal, including the one-PUT renewals from the last
// Lease written; renewSoon() renews early, but never sooner than minRenewGapMs after the previous
// renewal started, however often it is called.
import test from 'ava';
import { KubeApi, type Lease, LeaseHeartbeat, leaseClient, loadKubeConfig } from '../../kube/index.ts';
import { freshNamespace, testCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/wait.ts';

test('annotations read at each renewal; renewSoon renews early, at most once per minRenewGapMs', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
  t.teardown(() => api.close());
  const client = leaseClient(api, 'orrery-test');
  // When each write started (performance.now()), counted around the real client.
  const writes: number[] = [];
  const counting = new Proxy(client, {
    get(target, prop) {
      if (prop === 'replace' || prop === 'create') {
        const method = Reflect.get(target, prop, target) as (...args: unknown[]) => Promise<Lease>;
        return (...args: unknown[]) => {
          writes.push(performance.now());
          return method.apply(target, args);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
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
  // Every write answered 280 ms late, as a busy API server answers: counted from each answer,
  // the next renewal would start 250 ms later and answer 810 ms after the previous one started,
  // past the 750 ms fence point (the agent's 3/4 of a 1 s lease).
  const slowMs = 280;
  const slow = new Proxy(client, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (prop !== 'replace' || typeof value !== 'function') {
        return typeof value === 'function' ? value.bind(target) : value;
      }
      return async (...args: unknown[]) => {
        const written = await (value as (...a: unknown[]) => Promise<Lease>).apply(target, args);
        await new Promise((resolve) => setTimeout(resolve, slowMs));
        return written;
      };
    },
  });
  let lost = 0;
  const hb = new LeaseHeartbeat({
    client: slow,
    namespace: ns,
    name: 'slow-api',
    holderIdentity: 'slow-api',
    leaseDurationSeconds: 1,
    renewIntervalMs: 250,
    lostAfterMs: 750,
    onLost: () => lost++,
  });
  await hb.start();
  t.teardown(() => hb.stop());
  await new Promise((resolve) => setTimeout(resolve, 3000));
  t.log(`${hb.renewals()} renewals in 3 s`);
  t.is(lost, 0, 'not lost: each renewal answered within 750 ms of the start of the one before');
  t.false(hb.isLost());
  t.true(hb.renewals() >= 8, `${hb.renewals()} renewals`);
});
