// End-to-end fixtures: the real operator (in-process or as `orrery operator`) and real host
// agents (`orrery runtime` child processes) against the test control plane, isolated per test by
// a namespace, a host label and a leader Lease of their own, all torn down even when a test fails.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { pino } from 'pino';
import { INSTANCE_LABEL } from '../../crds/labels.ts';
import { HOSTS, INSTANCES, REPLICAS } from '../../crds/resources.ts';
import type { Host, Instance, Replica } from '../../crds/types.ts';
import { KubeApi, loadKubeConfig, type ResourceClient, resourceClient, typed } from '../../kube/index.ts';
import { type Operator, startOperator } from '../../operator/operator.ts';
import { agentDirs, type ChildAgent, childAgent } from './agent-harness.ts';
import { freshNamespace, kubectl } from './cluster.ts';
import { orreryCluster } from './orrery.ts';

const repoRoot = join(import.meta.dirname, '..', '..');
const log = pino({ level: process.env.ORRERY_E2E_LOG ?? 'silent' });

export interface E2eHost extends ChildAgent {
  name: string;
  stateDir: string;
  cgroupParent: string;
  /** Starts the agent again on the same state dir and cgroup parent (after a kill). */
  restart(): Promise<E2eHost>;
}

export interface E2e {
  kubeconfig: string;
  ns: string;
  id: string;
  hostSelector: string;
  api: KubeApi;
  instances: ResourceClient<Instance>;
  replicas: ResourceClient<Replica>;
  hosts: E2eHost[];
  /**
   * `kubectl -n <ns> ...`, throwing with stderr on failure. Asynchronous on purpose: the operator
   * may run in this process, and a synchronous spawn would stall it for as long as kubectl waits.
   */
  kubectl(args: string[], input?: string): Promise<string>;
  replicasOf(instance: string): Promise<Replica[]>;
  startOperator(): Promise<Operator>;
  /** `orrery operator` as a child process (killable with SIGKILL). */
  operatorProcess(): ChildProcess;
}

export async function e2e(
  t: ExecutionContext,
  opts: { hosts: number; operator?: 'in-process' | 'none' },
): Promise<E2e> {
  const { kubeconfig } = await orreryCluster();
  const ns = await freshNamespace(t);
  const id = randomBytes(3).toString('hex');
  const hostSelector = `orrery.dev/test=${id}`;
  const kubeConfig = loadKubeConfig({ kubeconfig });
  const api = await KubeApi.fromKubeConfig(kubeConfig);
  t.teardown(() => api.close());

  const hostsClient = resourceClient(api, typed<Host>(HOSTS), 'orrery-test');
  const startHost = async (dirs: Awaited<ReturnType<typeof agentDirs>>): Promise<E2eHost> => {
    const agent = await childAgent(t, dirs, [
      '--label',
      hostSelector,
      '--lease-duration', // 2 s rather than 1: a loaded test machine must not look like dead hosts
      '2',
      '--lease-renew-interval',
      '200',
    ]);
    // The agent harness registers test hosts cordoned (so no other test's operator uses them);
    // these belong to this test's operator, which selects them by label: uncordon them.
    await hostsClient.mergePatch(dirs.hostName, { spec: { unschedulable: false } });
    return {
      ...agent,
      name: dirs.hostName,
      stateDir: dirs.stateDir,
      cgroupParent: dirs.cgroupParent,
      restart: () => startHost(dirs),
    };
  };
  const hosts = await Promise.all(
    Array.from({ length: opts.hosts }, async () => startHost(await agentDirs(t))),
  );

  const operatorArgs = [
    'operator',
    '--kubeconfig',
    kubeconfig,
    '--namespace',
    ns,
    '--host-selector',
    hostSelector,
    '--leader-lease-name',
    `orrery-operator-${id}`,
    '--leader-lease-duration',
    '2',
  ];
  const env: E2e = {
    kubeconfig,
    ns,
    id,
    hostSelector,
    api,
    instances: resourceClient(api, typed<Instance>(INSTANCES), 'orrery-test'),
    replicas: resourceClient(api, typed<Replica>(REPLICAS), 'orrery-test'),
    hosts,
    async kubectl(args, input) {
      const result = await kubectl(kubeconfig, ['-n', ns, ...args], input === undefined ? {} : { input });
      if (result.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${result.stderr}`);
      return result.stdout;
    },
    async replicasOf(instance) {
      const list = await env.replicas.list({ namespace: ns, labelSelector: `${INSTANCE_LABEL}=${instance}` });
      return list.items.sort((a, b) => a.spec.ordinal - b.spec.ordinal);
    },
    async startOperator() {
      const operator = await startOperator({
        kubeConfig,
        log,
        namespace: ns,
        hostSelector,
        leaderLeaseName: `orrery-operator-${id}`,
        leaseDurationSeconds: 2,
        renewDeadlineMs: 1500,
        retryPeriodMs: 200,
      });
      t.teardown(() => operator.stop());
      return operator;
    },
    operatorProcess() {
      const child = spawn(process.execPath, [join(repoRoot, 'bin', 'orrery.js'), ...operatorArgs], {
        cwd: repoRoot,
        stdio: ['ignore', 'ignore', process.env.ORRERY_TEST_LOG ? 'inherit' : 'ignore'],
        env: { ...process.env, ORRERY_LOG_LEVEL: process.env.ORRERY_TEST_LOG ?? 'warn' },
      });
      t.teardown(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      });
      return child;
    },
  };
  // Delete what the test created while the agents still run, so they stop the processes.
  t.teardown(async () => {
    await kubectl(kubeconfig, ['-n', ns, 'delete', 'inst', '--all', '--wait=false']);
  });
  if (opts.operator !== 'none') await env.startOperator();
  return env;
}

/** Whether a process is alive (and not a zombie). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
