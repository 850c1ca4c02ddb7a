// Self-fencing against a private control plane that the test cuts off (SIGSTOP) and brings back:
// an agent that cannot renew its Lease for the lease duration kills every replica; when the API
// answers again it re-registers and runs what is still bound to it.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { pino } from 'pino';
import { type ControlPlane, startControlPlane } from '../../controlplane/controlplane.ts';
import { HOSTS, REPLICAS } from '../../crds/resources.ts';
import type { Host, Replica } from '../../crds/types.ts';
import { KubeApi, loadKubeConfig, resourceClient, typed } from '../../kube/index.ts';
import { startAgent } from '../../node-runtime/agent/index.ts';
import {
  agentDirs,
  authed,
  installCrdsForAgent,
  pidAlive,
  removeCgroupTree,
  replicaObject,
  waitFor,
} from '../helpers/agent-harness.ts';

test('an agent that cannot renew its Lease kills its replicas, and runs them again when the API is back', async (t) => {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'orrery-fence-cp-'));
  const t0 = Date.now();
  const plane: ControlPlane = await startControlPlane({ dataDir });
  t.log(`private control plane up in ${Date.now() - t0} ms`);
  t.teardown(async () => {
    // Its data is thrown away: no graceful drain needed (and it may be stopped).
    process.kill(plane.pid, 'SIGKILL');
    await plane.stop();
    await rm(dataDir, { recursive: true, force: true });
  });
  const kc = loadKubeConfig({ kubeconfig: plane.kubeconfig });
  const api = await KubeApi.fromKubeConfig(kc);
  t.teardown(() => api.close());
  await installCrdsForAgent(kc, api);
  const replicas = resourceClient(api, typed<Replica>(REPLICAS), 'orrery-test');
  const hosts = resourceClient(api, typed<Host>(HOSTS), 'orrery-test');
  await api.request({ method: 'POST', path: '/api/v1/namespaces', body: { metadata: { name: 'fence' } } });

  const dirs = await agentDirs(t);
  t.teardown(() => removeCgroupTree(dirs.cgroupParent));
  const agent = await startAgent({
    kubeconfig: plane.kubeconfig,
    hostName: dirs.hostName,
    stateDir: dirs.stateDir,
    logDir: dirs.logDir,
    cgroupParent: dirs.cgroupParent,
    // 2 s rather than 1: on a loaded CI machine (load 11 on 2 cores) a 750 ms fence fired
    // again right after the partition healed.
    leaseDurationSeconds: 2,
    leaseRenewIntervalMs: 500,
    log: pino({ level: process.env.ORRERY_TEST_LOG ?? 'silent' }),
  });
  t.teardown(() => agent.stop({ stopWorkloads: true }));

  await replicas.create(
    replicaObject('fence', 'w-0', dirs.hostName, [{ name: 'main', command: ['sleep', '600'] }]),
  );
  const running = await waitFor('w-0 Running', async () => {
    const r = await replicas.get('w-0', { namespace: 'fence' });
    return r.status?.phase === 'Running' ? r : undefined;
  });
  const pid = running.status?.processes?.[0]?.pid as number;
  t.true(pidAlive(pid));

  // Partition: the API server stops answering us (SIGSTOP: the kernel still accepts connections
  // but nothing replies, as when packets are dropped). A refused connection instead would mean the
  // server is down for everyone, which the agent rides out without fencing (e2e-restart test).
  const cut = Date.now();
  process.kill(plane.pid, 'SIGSTOP');
  await waitFor('the workload killed by the fence', () => (pidAlive(pid) ? undefined : true), 15_000);
  const fencedAfter = Date.now() - cut;
  t.log(`API stopped -> replica killed by self-fencing: ${fencedAfter} ms (lease 2 s)`);
  t.true(agent.isFenced());
  await waitFor('the fenced replica removed from the runtime', () =>
    agent.engine.has('fence.w-0') ? undefined : true,
  );

  // The partition heals: the agent re-registers and runs the replica again.
  process.kill(plane.pid, 'SIGCONT');
  const back = Date.now();
  const again = await waitFor(
    'w-0 Running again with a new pid',
    async () => {
      const r = await replicas.get('w-0', { namespace: 'fence' });
      const p = r.status?.processes?.[0]?.pid;
      return r.status?.phase === 'Running' && p !== pid && p !== undefined && pidAlive(p) ? r : undefined;
    },
    30_000,
  );
  t.log(`API back -> replica Running again: ${Date.now() - back} ms`);
  t.false(agent.isFenced());
  t.true(pidAlive(again.status?.processes?.[0]?.pid as number));
  const host = await hosts.get(dirs.hostName);
  t.is(host.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
  const metrics = await (await fetch(`${agent.apiEndpoint}/metrics`, authed(agent.token))).text();
  t.regex(metrics, /^orrery_runtime_self_fences_total\{[^}]*\} 1$/m);

  await replicas.delete('w-0', { namespace: 'fence' });
  await waitFor('w-0 gone', async () => {
    try {
      await replicas.get('w-0', { namespace: 'fence' });
      return undefined;
    } catch {
      return true;
    }
  });
});
