// The teardown of the end-to-end fixtures (test/helpers/e2e.ts), run and checked inside a test:
// the test's Instances must be deleted while the operator and the agents still run (so each
// finalizer is removed by whoever holds it and the namespace really goes), then the operator and
// the agents stopped with SIGTERM, not killed, then their cgroups, Host and Lease removed.
import { existsSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import type { Replica } from '../../crds/types.ts';
import { detectCgroupLayout } from '../../node-runtime/cgroups/index.ts';
import { parentDirsOf } from '../../node-runtime/cgroups/paths.ts';
import { kubectl } from '../helpers/cluster.ts';
import { alive, e2e, instanceYaml } from '../helpers/e2e.ts';
import { eventually } from '../helpers/wait.ts';

const exitOf = (child: import('node:child_process').ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });

test('e2e teardown: Instances gone while operator and agents run, both stopped by SIGTERM, namespace deleted, nothing left', async (t) => {
  // e2e() registers its teardowns in this scope; the test runs them (newest first, as ava does)
  // and checks what they leave. Whatever a failure on the way leaves unrun runs at the real teardown.
  const teardowns: (() => unknown)[] = [];
  const scope = {
    title: t.title,
    teardown: (fn: () => unknown) => void teardowns.push(fn),
  } as unknown as ExecutionContext;
  const runTeardowns = async () => {
    for (let fn = teardowns.pop(); fn !== undefined; fn = teardowns.pop()) await fn();
  };
  t.teardown(runTeardowns);

  const env = await e2e(scope, { hosts: 1, operator: 'none' });
  const host = env.hosts[0];
  if (!host) return t.fail('no host');
  const operator = env.operatorProcess();
  const operatorExit = exitOf(operator);
  const agentExit = exitOf(host.child);
  await env.kubectl(['apply', '-f', '-'], instanceYaml('web', 2, ['sleep', 'infinity']));
  const running = await eventually(
    '2 replicas Running',
    async () => {
      const items = await env.replicasOf('web');
      return items.length === 2 && items.every((r: Replica) => r.status?.phase === 'Running') && items;
    },
    { timeoutMs: 60_000 },
  );
  const pids = running.flatMap((r) => (r.status?.processes ?? []).map((p) => p.pid as number));
  t.is(pids.length, 2);

  await runTeardowns();

  t.deepEqual(await operatorExit, { code: 0, signal: null }, 'the operator stopped on SIGTERM');
  t.deepEqual(await agentExit, { code: 0, signal: null }, 'the agent stopped on SIGTERM');
  for (const pid of pids) t.false(alive(pid), `workload pid ${pid} gone`);
  t.deepEqual(
    parentDirsOf(detectCgroupLayout(), host.cgroupParent).filter((dir) => existsSync(dir)),
    [],
    "the agent's cgroups removed",
  );
  const host404 = await kubectl(env.kubeconfig, ['get', 'hosts.orrery.dev', host.name]);
  t.regex(host404.stderr, /NotFound/, 'the Host deleted');
  // Nothing in the namespace holds a finalizer any more, so its deletion completes.
  await eventually(
    `namespace ${env.ns} deleted`,
    async () => {
      const result = await kubectl(env.kubeconfig, ['get', 'namespace', env.ns, '-o', 'name']);
      return result.code !== 0 && /NotFound/.test(result.stderr);
    },
    { timeoutMs: 60_000, intervalMs: 200 },
  );
  t.pass();
});
