// End-to-end fixtures: the real operator (in-process or as `orrery operator`) and real host
// agents (`orrery runtime` child processes) against the test control plane, isolated per test by
// a namespace, a host label and a leader Lease of their own, all torn down even when a test fails.
//
// Teardown runs in the order a real cluster needs (one teardown, whatever the test started and
// when): the test's Instances are deleted while the operator and the agents still run, and
// waited for (bounded) until they and their Replicas are gone, so the finalizers are removed by
// the ones that hold them and the namespace can go; then the operators and the agents are
// stopped with SIGTERM (SIGKILL only past a bound); then the agents' cgroups, Hosts, Leases and
// dirs are removed. What goes wrong is collected and fails the test at the end.
//
// The agents run as a real node's runtime does: the orrery-runtime account with a token bound to
// their own node (the credentials `orrery up` gives its hosts), under deploy/rbac.yaml's RBAC and
// admission policy.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { installAccess, writeHostCredentials } from '../../cli/up-identity.ts';
import { INSTANCE_LABEL } from '../../crds/labels.ts';
import { HOSTS, INSTANCES, REPLICAS } from '../../crds/resources.ts';
import type { Host, Instance, Replica } from '../../crds/types.ts';
import {
  CONFIGMAPS,
  isNotFound,
  KubeApi,
  type KubeObject,
  loadKubeConfig,
  type ResourceClient,
  resourceClient,
  SECRETS,
  typed,
} from '../../kube/index.ts';
import { type Operator, type OperatorOptions, startOperator } from '../../operator/operator.ts';
import { liveStartTime } from '../../platform/proc.ts';
import { agentDirs, type ChildAgent, childAgent } from './agent-harness.ts';
import { freshNamespace, kubectl } from './cluster.ts';
import { orreryCluster } from './orrery.ts';
import { eventually } from './wait.ts';

const repoRoot = join(import.meta.dirname, '..', '..');
const log = pino({ level: process.env.ORRERY_E2E_LOG ?? 'silent' });

/** Bound on the deletion of the test's Instances and Replicas at teardown. */
const DELETE_TIMEOUT_MS = 30_000;
/** Bound on a graceful stop (SIGTERM) of an operator or agent process at teardown. */
const STOP_TIMEOUT_MS = 10_000;

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
  /** The operator in this process; `extra` adds to or overrides the test's options. */
  startOperator(extra?: Partial<OperatorOptions>): Promise<Operator>;
  /** `orrery operator` as a child process (killable with SIGKILL). */
  operatorProcess(): ChildProcess;
}

export async function e2e(
  t: ExecutionContext,
  opts: {
    hosts: number;
    operator?: 'in-process' | 'none';
    /** More flags for the agent of host `index` (later flags win, e.g. another --kubeconfig). */
    agentArgs?: (index: number) => string[];
  },
): Promise<E2e> {
  const { kubeconfig } = await orreryCluster();
  const ns = await freshNamespace(t);
  const id = randomBytes(3).toString('hex');
  const hostSelector = `orrery.dev/test=${id}`;
  const kubeConfig = loadKubeConfig({ kubeconfig });
  const api = await KubeApi.fromKubeConfig(kubeConfig);
  t.teardown(() => api.close());
  const instances = resourceClient(api, typed<Instance>(INSTANCES), 'orrery-test');
  const replicas = resourceClient(api, typed<Replica>(REPLICAS), 'orrery-test');

  // What the ordered teardown stops and removes; it is registered now (so it runs before the
  // API client is closed and the namespace deleted) and reads these lists when it runs.
  const operators: Operator[] = [];
  const operatorChildren: { child: ChildProcess; exited: Promise<unknown> }[] = [];
  const agents: ChildAgent[] = [];
  // The agent harness registers its own teardowns (SIGKILL of the agent, then its cgroups, Host,
  // Lease and dirs). Given to it through this scope, they run in the last step, after the
  // graceful stops; ava would run them, newest first, before this teardown.
  const harnessTeardowns: (() => unknown)[] = [];
  const harnessScope = {
    teardown: (fn: () => unknown) => void harnessTeardowns.push(fn),
  } as unknown as ExecutionContext;
  t.teardown(async () => {
    const problems: string[] = [];
    const note = (what: string) => (error: unknown) =>
      problems.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
    await deleteWorkloads(instances, replicas, ns).catch(note('deleting the Instances'));
    for (const operator of operators) await operator.stop().catch(note('stopping the operator'));
    await Promise.all([
      ...operatorChildren.map(({ child, exited }) =>
        stopGracefully(child, exited, 'orrery operator').catch(note('stopping the operator')),
      ),
      ...agents.map((agent) =>
        stopGracefully(agent.child, agent.exited, 'orrery runtime').catch(note('stopping an agent')),
      ),
    ]);
    for (const teardown of harnessTeardowns.toReversed()) {
      try {
        await teardown();
      } catch (error) {
        note('agent cleanup')(error);
      }
    }
    if (problems.length > 0) throw new Error(`e2e teardown of ${ns}: ${problems.join('; ')}`);
  });

  const hostsClient = resourceClient(api, typed<Host>(HOSTS), 'orrery-test');
  await installAccess(api);
  const startHost = async (
    dirs: Awaited<ReturnType<typeof agentDirs>>,
    extra: string[],
  ): Promise<E2eHost> => {
    const credentials = await writeHostCredentials(api, kubeConfig.cluster, dirs.root, dirs.hostName);
    // The Node its token is bound to goes last, with the Host (the harness's teardown).
    harnessTeardowns.push(() =>
      api.request({ method: 'DELETE', path: `/api/v1/nodes/${dirs.hostName}` }).catch(() => {}),
    );
    const agent = await childAgent(harnessScope, dirs, [
      '--kubeconfig',
      credentials.kubeconfig,
      '--label',
      hostSelector,
      '--lease-duration', // 2 s rather than 1: a loaded test machine must not look like dead hosts
      '2',
      '--lease-renew-interval',
      '200',
      ...extra,
    ]);
    agents.push(agent);
    // The agent harness registers test hosts cordoned (so no other test's operator uses them);
    // these belong to this test's operator, which selects them by label: uncordon them.
    await hostsClient.mergePatch(dirs.hostName, { spec: { unschedulable: false } });
    return {
      ...agent,
      name: dirs.hostName,
      stateDir: dirs.stateDir,
      cgroupParent: dirs.cgroupParent,
      restart: () => startHost(dirs, extra),
    };
  };
  const hosts = await Promise.all(
    Array.from({ length: opts.hosts }, async (_, i) =>
      startHost(await agentDirs(harnessScope), opts.agentArgs?.(i) ?? []),
    ),
  );

  // The test's own Service range: operators of tests running at once would each give out
  // 127.77.0.1 first, and their proxies bind the same virtual IP and port.
  const serviceCidr = testServiceCidr();
  const operatorArgs = [
    'operator',
    '--service-cidr',
    serviceCidr,
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
    instances,
    replicas,
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
    async startOperator(extra = {}) {
      const operator = await startOperator({
        kubeConfig,
        log,
        namespace: ns,
        hostSelector,
        leaderLeaseName: `orrery-operator-${id}`,
        serviceCidr,
        leaseDurationSeconds: 2,
        renewDeadlineMs: 1500,
        retryPeriodMs: 200,
        ...extra,
      });
      operators.push(operator);
      return operator;
    },
    operatorProcess() {
      const child = spawn(process.execPath, [join(repoRoot, 'bin', 'orrery.js'), ...operatorArgs], {
        cwd: repoRoot,
        stdio: ['ignore', 'ignore', process.env.ORRERY_TEST_LOG ? 'inherit' : 'ignore'],
        env: { ...process.env, ORRERY_LOG_LEVEL: process.env.ORRERY_TEST_LOG ?? 'warn' },
      });
      operatorChildren.push({ child, exited: new Promise((resolve) => child.once('exit', resolve)) });
      return child;
    },
  };
  if (opts.operator !== 'none') await env.startOperator();
  return env;
}

/**
 * Deletes every Instance in `ns` and waits until no Instance and no Replica is left there: the
 * operator removes its finalizer once the Replicas are gone, an agent a Replica's once its
 * processes are. Past the bound, the finalizers still there are dropped (so the namespace can go)
 * and the error names what was stuck.
 */
async function deleteWorkloads(
  instances: ResourceClient<Instance>,
  replicas: ResourceClient<Replica>,
  ns: string,
): Promise<void> {
  for (const item of (await instances.listAll({ namespace: ns })).items) {
    await instances.delete(item.metadata.name as string, { namespace: ns }).catch((error: unknown) => {
      if (!isNotFound(error)) throw error;
    });
  }
  const deadline = Date.now() + DELETE_TIMEOUT_MS;
  for (;;) {
    const [left, leftReplicas] = await Promise.all([
      instances.listAll({ namespace: ns }),
      replicas.listAll({ namespace: ns }),
    ]);
    const stuck = [
      ...left.items.map((obj) => ({
        kind: 'inst',
        obj,
        client: instances as ResourceClient<Instance | Replica>,
      })),
      ...leftReplicas.items.map((obj) => ({
        kind: 'rep',
        obj,
        client: replicas as ResourceClient<Instance | Replica>,
      })),
    ];
    if (stuck.length === 0) return;
    if (Date.now() > deadline) {
      const names = stuck.map(
        ({ kind, obj }) =>
          `${kind}/${obj.metadata.name} (finalizers: ${obj.metadata.finalizers?.join(',') || 'none'})`,
      );
      for (const { obj, client } of stuck) {
        await client
          .mergePatch(obj.metadata.name as string, { metadata: { finalizers: null } }, { namespace: ns })
          .catch(() => {});
      }
      throw new Error(
        `still there ${DELETE_TIMEOUT_MS / 1000} s after the delete (finalizers dropped to let the namespace go): ${names.join(', ')}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_MS (which is then an error). */
async function stopGracefully(child: ChildProcess, exited: Promise<unknown>, what: string): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
  if (!timedOut) return;
  child.kill('SIGKILL');
  await exited;
  throw new Error(
    `${what} (pid ${child.pid}) did not exit within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM; killed`,
  );
}

/**
 * A /24 of loopback for one test's Service virtual IPs, at random in 127.78.0.0-127.126.255.0
 * (12,544 of them: tests running at once almost never share one; the mesh tests' own addresses
 * are in 127.77.128.0/17).
 */
export function testServiceCidr(): string {
  return `127.${randomInt(78, 127)}.${randomInt(0, 256)}.0/24`;
}

/** Whether a process is alive (and not a zombie). */
export function alive(pid: number): boolean {
  return liveStartTime(pid) !== undefined;
}

/**
 * An Instance as YAML for `kubectl apply -f -`: `replicas` copies of one process `main` running
 * `command`, without namespaces (so tests see the processes' pids), labelled `app: <name>`.
 */
export function instanceYaml(
  name: string,
  replicas: number,
  command: string[],
  opts: {
    env?: { name: string; value: string }[];
    template?: Partial<Instance['spec']['template']>;
    spec?: Partial<Instance['spec']>;
  } = {},
): string {
  return stringify({
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name },
    spec: {
      replicas,
      template: {
        metadata: { labels: { app: name } },
        processes: [{ name: 'main', command, ...(opts.env ? { env: opts.env } : {}) }],
        isolation: { namespaces: [] },
        ...opts.template,
      },
      ...opts.spec,
    },
  });
}

/** A ConfigMap or Secret in the test's namespace (a Secret's values go in as stringData). */
export async function putConfigObject(
  env: E2e,
  kind: 'ConfigMap' | 'Secret',
  name: string,
  data: Record<string, string>,
): Promise<void> {
  const client = resourceClient(env.api, kind === 'Secret' ? SECRETS : CONFIGMAPS, 'orrery-test');
  await client.create({
    apiVersion: 'v1',
    kind,
    metadata: { name, namespace: env.ns },
    ...(kind === 'Secret' ? { stringData: data } : { data }),
  } as KubeObject);
}

/** An Instance's first Replica once it is Running with a pid (60 s at most; the last state otherwise). */
export function firstRunning(env: E2e, instance: string): Promise<Replica> {
  return eventually(
    `${instance}-0 Running`,
    async () => {
      const [r] = await env.replicasOf(instance);
      if (r?.status?.phase !== 'Running' || !r.status.processes?.[0]?.pid) {
        throw new Error(`phase ${r?.status?.phase} ${r?.status?.reason ?? ''} ${r?.status?.message ?? ''}`);
      }
      return r;
    },
    { timeoutMs: 60_000 },
  );
}
