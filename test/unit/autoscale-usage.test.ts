// CPU rates from cumulative counters (operator/autoscale/usage.ts): the rate between two samples,
// none after one sample or after a restart (the counter went down), deleted replicas forgotten.
import test from 'ava';
import { formatCpu, formatMemory, table } from '../../cli/top.ts';
import { UsageTracker } from '../../operator/autoscale/usage.ts';

const sample = (at: number, cpuUsageNanos: number, memoryCurrentBytes = 1024 * 1024) => ({
  host: 'h1',
  at,
  replicas: [{ namespace: 'ns', name: 'web-0', cpuUsageNanos, memoryCurrentBytes, pids: 3 }],
});

test('CPU is the rate between the last two samples, in millicores', (t) => {
  const u = new UsageTracker();
  u.add(sample(1000, 5e9));
  t.is(u.get('ns', 'web-0')?.cpuMillis, undefined, 'one sample: no rate yet');
  u.add(sample(3000, 5e9 + 1e9)); // 1 s of CPU over 2 s of wall time: half a core
  t.is(u.get('ns', 'web-0')?.cpuMillis, 500);
  t.is(u.get('ns', 'web-0')?.windowMs, 2000);
  u.add(sample(4000, 1e6)); // restarted: a new cgroup, the counter starts again
  t.is(u.get('ns', 'web-0')?.cpuMillis, undefined);
  u.add(sample(5000, 1e6 + 2e8));
  t.is(u.get('ns', 'web-0')?.cpuMillis, 200);
  u.retain(new Set());
  t.is(u.get('ns', 'web-0'), undefined, 'a replica no longer listed is forgotten');
});

test('kubectl top formats: millicores, Mi above 1 Mi, columns two spaces apart', (t) => {
  t.is(formatCpu(12.4), '12m');
  t.is(formatCpu(undefined), '<unknown>');
  t.is(formatMemory(34 * 1024 * 1024), '34Mi');
  t.is(formatMemory(300 * 1024), '300Ki');
  t.is(
    table([
      ['NAME', 'CPU'],
      ['web-10', '5m'],
    ]),
    'NAME    CPU\nweb-10  5m',
  );
});
