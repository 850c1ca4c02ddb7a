import test from 'ava';
import { CgroupManager } from '../../node-runtime/cgroups/manager.ts';
import { assertSafeName } from '../../node-runtime/cgroups/names.ts';
import { parseCpuUsage, parseFlatKeyed, parseOomKills } from '../../node-runtime/cgroups/stats.ts';

const layout = {
  mode: 'v2' as const,
  v2Root: '/nonexistent',
  v2Controllers: [],
  v1: {},
  cgroupKill: true,
  cgroupFreeze: true,
  v1Nested: [],
};

test('replica ids that are not safe file names are refused with a TypeError naming the argument', (t) => {
  for (const bad of ['', '.', '..', '../etc', 'a/b', '-x', 'x y', 'é', 'a'.repeat(254)]) {
    t.throws(
      () => assertSafeName(bad, 'replicaId'),
      { instanceOf: TypeError, message: /^replicaId must be/ },
      bad,
    );
  }
  t.throws(() => assertSafeName(7, 'processName'), { message: /processName must be .* got number 7/ });
  for (const good of ['web-0', 'default.web-0', 'a', 'A_b.c-9'])
    t.notThrows(() => assertSafeName(good, 'replicaId'));
});

test('the manager checks its parent and replica ids at the boundary', (t) => {
  t.throws(() => new CgroupManager({ layout, parent: '/abs' }), { message: /^options\.parent must be/ });
  t.throws(() => new CgroupManager({ layout, parent: 'orrery/../x' }), { instanceOf: TypeError });
  const manager = new CgroupManager({ layout, parent: 'orrery/host-a' });
  t.throws(() => manager.open('../../etc'), { instanceOf: TypeError, message: /^replicaId must be/ });
  t.is(manager.open('web-0'), null, 'no such cgroup');
});

test('flat-keyed cgroup files parse into counters', (t) => {
  t.is(parseOomKills('oom_kill_disable 0\nunder_oom 0\noom_kill 3\n'), 3);
  t.is(parseOomKills('low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n'), 1);
  t.is(parseCpuUsage('usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n', 'cpu.stat'), 1_500_000n);
  t.is(parseCpuUsage('123456789012\n', 'nanos'), 123456789012n);
  t.is(parseFlatKeyed('populated 1\nfrozen 0\n').get('populated'), '1');
});
