// `orrery top [replicas|hosts]`: CPU and memory of replicas (or per host), as `kubectl top`
// shows pods and nodes. The numbers come from each host's runtime (one `GET
// /v1/replicas?stats=true` per host, the cgroup counters of all its replicas), read twice
// `--window` apart: CPU is the rate between the two reads, memory the last one. Nothing is
// written to the API.
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Host } from '../crds/types.ts';
import type { ReplicaUsage } from '../operator/autoscale/usage.ts';
import { hostTarget, readRuntimeToken } from '../platform/runtime-api.ts';
import { durationFlag } from './flags.ts';

interface TopFlags {
  namespace: string;
  allNamespaces?: boolean;
  window: number;
  kubeconfig?: string;
  token?: string;
  stateDir?: string;
}

/** Millicores as kubectl top prints them: `12m`. */
export function formatCpu(millis: number | undefined): string {
  return millis === undefined ? '<unknown>' : `${Math.round(millis)}m`;
}

/** Bytes as kubectl top prints them: `34Mi` (Ki below 1 Mi). */
export function formatMemory(bytes: number): string {
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)}Ki`;
  return `${Math.round(bytes / (1024 * 1024))}Mi`;
}

/** Columns padded to their widest cell, two spaces apart, as kubectl's tables. */
export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd((widths[c] ?? 0) + 2)))
        .join('')
        .trimEnd(),
    )
    .join('\n');
}

async function top(what: 'replicas' | 'hosts', flags: TopFlags): Promise<string> {
  const [{ KubeApi, loadKubeConfig, resourceClient, typed }, { HOSTS }, { scrapeHosts, UsageTracker }] =
    await Promise.all([
      import('../kube/index.ts'),
      import('../crds/resources.ts'),
      import('../operator/autoscale/usage.ts'),
    ]);
  const api = await KubeApi.fromKubeConfig(
    loadKubeConfig(flags.kubeconfig ? { kubeconfig: flags.kubeconfig } : {}),
  );
  let hosts: Host[];
  try {
    hosts = (await resourceClient(api, typed<Host>(HOSTS), 'orrery-top').list()).items;
  } finally {
    api.close();
  }
  const targets = hosts.flatMap((h) => hostTarget(h) ?? []);
  if (targets.length === 0)
    throw new Error('no host publishes a runtime API (Host status.apiEndpoint): is a runtime running?');
  // One token for all (flag or environment), else each host's own file on this machine.
  const tokens = new Map<string, string>();
  for (const t of targets) tokens.set(t.name, await readRuntimeToken(t.name, flags));
  const tracker = new UsageTracker();
  const errors = new Set<string>();
  for (let round = 0; round < 2; round++) {
    if (round > 0) await new Promise((resolve) => setTimeout(resolve, flags.window));
    const { samples, errors: failed } = await scrapeHosts(targets, (host) => tokens.get(host) as string);
    for (const s of samples) tracker.add(s);
    for (const e of failed) errors.add(e);
  }
  for (const e of errors) console.error(`orrery top: ${e}`);
  const usage = tracker.all();
  if (what === 'hosts') {
    const rows = [['NAME', 'CPU(cores)', 'MEMORY(bytes)', 'REPLICAS']];
    for (const t of [...targets].sort((a, b) => a.name.localeCompare(b.name))) {
      const mine = usage.filter((u) => u.host === t.name);
      const cpu = mine.every((u) => u.cpuMillis !== undefined)
        ? mine.reduce((n, u) => n + (u.cpuMillis as number), 0)
        : undefined;
      rows.push([
        t.name,
        formatCpu(cpu),
        formatMemory(mine.reduce((n, u) => n + u.memoryBytes, 0)),
        String(mine.length),
      ]);
    }
    return table(rows);
  }
  const shown: ReplicaUsage[] = usage
    .filter((u) => flags.allNamespaces || u.namespace === flags.namespace)
    .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  if (shown.length === 0)
    return flags.allNamespaces ? 'No replicas found.' : `No replicas found in ${flags.namespace} namespace.`;
  const rows = flags.allNamespaces
    ? [['NAMESPACE', 'NAME', 'CPU(cores)', 'MEMORY(bytes)']]
    : [['NAME', 'CPU(cores)', 'MEMORY(bytes)']];
  for (const u of shown) {
    const cells = [u.name, formatCpu(u.cpuMillis), formatMemory(u.memoryBytes)];
    rows.push(flags.allNamespaces ? [u.namespace, ...cells] : cells);
  }
  return table(rows);
}

export function topCommand(): Command {
  return new Command('top')
    .description(
      "CPU and memory of replicas (or hosts), read from the hosts' runtimes as kubectl top reads metrics-server: CPU over --window, memory now",
    )
    .argument('[what]', 'replicas (default) or hosts', (v: string) => {
      if (v === 'replicas' || v === 'replica' || v === 'rep') return 'replicas';
      if (v === 'hosts' || v === 'host') return 'hosts';
      throw new InvalidArgumentError(`expected replicas or hosts, got '${v}'`);
    })
    .option('-n, --namespace <namespace>', 'namespace of the replicas', 'default')
    .option('-A, --all-namespaces', 'replicas of every namespace')
    .option(
      '--window <duration>',
      'how long CPU is measured over (e.g. 1s, 500ms)',
      durationFlag('--window'),
      1000,
    )
    .option('--kubeconfig <path>', 'kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .addOption(new Option('--token <token>', "the runtimes' API bearer token").env('ORRERY_RUNTIME_TOKEN'))
    .option('--state-dir <dir>', "a runtime's state dir, to read its api-token from (same machine)")
    .action(async (what: 'replicas' | 'hosts' | undefined, flags: TopFlags) => {
      if (flags.window <= 0) throw new InvalidArgumentError('--window must be above 0');
      try {
        console.log(await top(what ?? 'replicas', flags));
      } catch (err) {
        console.error(`orrery top: ${(err as Error).message}`);
        process.exitCode = 1;
      }
    });
}
