// The control plane stopped and started again on the same data directory: the operator and the
// host agent reconnect by themselves and no workload is restarted. Uses a private control plane
// (the run-wide one must not go down under other tests).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test from 'ava';
import { pino } from 'pino';
import { parseReadyLine } from '../../cli/runtime.ts';
import { installCrds } from '../../crds/install.ts';
import { INSTANCES, REPLICAS } from '../../crds/resources.ts';
import type { Instance, Replica } from '../../crds/types.ts';
import { KubeApi, loadKubeConfig, resourceClient, typed } from '../../kube/index.ts';
import { startOperator } from '../../operator/operator.ts';
import { removeCgroupTree } from '../helpers/agent-harness.ts';
import { privateControlPlane } from '../helpers/cluster.ts';
import { alive } from '../helpers/e2e.ts';
import { eventually } from '../helpers/wait.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

test('control plane stopped and started on the same data dir: operator and agent resume, no workload restarted', async (t) => {
  const cp = await privateControlPlane(t, 'orrery-restart-cp-');
  const root = mkdtempSync(join(tmpdir(), 'orrery-restart-'));
  const cgroupParent = `orrery-test-${randomBytes(4).toString('hex')}`;
  t.teardown(async () => {
    await removeCgroupTree(cgroupParent);
    rmSync(root, { recursive: true, force: true });
  });
  const kubeConfig = loadKubeConfig({ kubeconfig: cp.current.kubeconfig });
  await installCrds(kubeConfig);

  const agent = spawn(
    process.execPath,
    [
      join(repoRoot, 'bin', 'orrery.js'),
      'runtime',
      '--kubeconfig',
      cp.current.kubeconfig,
      '--host-name',
      'restart-host',
      '--state-dir',
      join(root, 'host'),
      '--cgroup-parent',
      cgroupParent,
      '--stop-workloads-on-exit',
    ],
    // warn: its log (JSON lines on stdout, beside the ready line) says how it rides out the outage.
    { cwd: repoRoot, stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, ORRERY_LOG_LEVEL: 'warn' } },
  );
  const agentExited = new Promise((resolve) => agent.once('exit', resolve));
  t.teardown(async () => {
    if (agent.exitCode === null) {
      agent.kill('SIGTERM');
      await agentExited;
    }
  });
  const lines: string[] = [];
  createInterface({ input: agent.stdout }).on('line', (line) => lines.push(line));
  /** Whether the agent logged a record whose message includes `text` (from its line `from` on). */
  const logged = (text: string, from = 0) =>
    lines.slice(from).some((line) => {
      try {
        return String((JSON.parse(line) as { msg?: unknown }).msg).includes(text);
      } catch {
        return false;
      }
    });
  await eventually('the agent ready', () => lines.some((line) => parseReadyLine(line) !== undefined), {
    timeoutMs: 60_000,
  });
  const operator = await startOperator({ kubeConfig, log: pino({ level: 'silent' }) });
  t.teardown(() => operator.stop());

  const api = await KubeApi.fromKubeConfig(kubeConfig);
  t.teardown(() => api.close());
  const instances = resourceClient(api, typed<Instance>(INSTANCES), 'orrery-test');
  const replicas = resourceClient(api, typed<Replica>(REPLICAS), 'orrery-test');
  await instances.create(
    {
      metadata: { name: 'web', namespace: 'default' },
      spec: { replicas: 2, template: { processes: [{ name: 'main', command: ['sleep', 'infinity'] }] } },
    },
    { namespace: 'default' },
  );
  const running = async () => {
    const items = (await replicas.list({ namespace: 'default' })).items;
    return items.length === 2 && items.every((r) => r.status?.phase === 'Running') && items;
  };
  const before = await eventually('2 replicas Running', running, { timeoutMs: 30_000 });
  const pids = before.map((r) => r.status?.processes?.[0]?.pid as number);

  const stoppedAt = lines.length;
  await cp.stop();
  // The host Lease (1 s) goes unrenewed: the agent must take it for the API server being down
  // (connections refused), not for a partition, and keep its workloads rather than fence.
  await eventually('the agent to keep its replicas through the Lease loss', () =>
    logged('keeping replicas running', stoppedAt),
  );
  t.false(logged('self-fencing'), 'no self-fencing');
  t.true(
    pids.every((pid) => alive(pid)),
    'an API server outage alone does not stop workloads',
  );
  const plane = await cp.start(); // same port, so the agent's and operator's kubeconfig stay right
  t.log(`control plane back in ${plane.bringUpMs} ms`);

  // Both reconnect on their own; the replicas keep their processes.
  const after = await eventually(
    'replicas Running with the same pids',
    async () => {
      const items = await running();
      if (!items) return false;
      return items.every((r) => pids.includes(r.status?.processes?.[0]?.pid as number)) && items;
    },
    { timeoutMs: 30_000 },
  );
  t.deepEqual(
    after.map((r) => r.status?.processes?.[0]?.restarts ?? 0),
    [0, 0],
  );
  t.true(pids.every((pid) => alive(pid)));
  // And the operator still acts: a scale-up is carried out.
  await instances.scale('web', 3, { namespace: 'default' });
  await eventually(
    'a third replica Running',
    async () => {
      const items = (await replicas.list({ namespace: 'default' })).items;
      return items.filter((r) => r.status?.phase === 'Running').length === 3;
    },
    { timeoutMs: 30_000 },
  );
});
