import test from 'ava';
import type { Lease } from '../../kube/index.ts';
import { LeaseObserver } from '../../operator/hosts/controller.ts';

const lease = (host: string, renewTime: string): Lease => ({
  metadata: { name: `host-${host}`, namespace: 'orrery-system' },
  spec: { holderIdentity: host, leaseDurationSeconds: 1, renewTime },
});

test('silence is counted by the observer clock from the renewal it saw last', (t) => {
  const leases = new LeaseObserver();
  leases.observe(lease('a', '2026-12-06T00:00:00.000000Z'), 1_000);
  t.deepEqual(leases.silence(lease('a', '2026-12-06T00:00:00.000000Z'), 'a', 1_700), {
    silentMs: 700,
    durationMs: 1000,
  });
  // A renewal the observer has not seen yet counts from now, whatever its renewTime says.
  t.deepEqual(leases.silence(lease('a', '2026-12-06T00:00:05.000000Z'), 'a', 9_000), {
    silentMs: 0,
    durationMs: 1000,
  });
  t.is(leases.silence(undefined, 'b', 9_000), undefined);
});

test('a full disruption ends at the first renewal seen after it, for every host', (t) => {
  const leases = new LeaseObserver();
  leases.observe(lease('a', 'r1'), 1_000);
  leases.observe(lease('b', 'r1'), 1_000);
  t.is(leases.resumedAt(), 0, 'no disruption yet');
  leases.noteFullDisruption();
  leases.observe(lease('a', 'r1'), 4_000); // the same renewal again: not a resumption
  t.is(leases.resumedAt(), 0);
  leases.observe(lease('b', 'r2'), 5_000);
  t.is(leases.resumedAt(), 5_000, 'b renewed: the disruption is over, for a as well');
  leases.observe(lease('a', 'r2'), 5_300);
  t.is(leases.resumedAt(), 5_000, 'only the first renewal after it counts');
});

test('a host whose Lease had expired and renews again is announced', (t) => {
  const leases = new LeaseObserver();
  let back = 0;
  leases.onHostBack(() => back++);
  const handlers: { update?: (old: Lease, l: Lease) => void } = {};
  leases.watch({ addHandlers: (h: typeof handlers) => Object.assign(handlers, h) } as never);
  leases.observe(lease('a', 'r1'), Date.now() - 5_000);
  handlers.update?.(lease('a', 'r1'), lease('a', 'r2'));
  t.is(back, 1);
  handlers.update?.(lease('a', 'r2'), lease('a', 'r3'));
  t.is(back, 1, 'a host renewing in time is not "back"');
});
