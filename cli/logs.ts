// `orrery logs <replica>`: finds the Replica's host through the API (spec.host ->
// Host.status.apiEndpoint) and streams the process's log from that runtime's HTTP API, like
// `kubectl logs` does through the kubelet. Following, it asks for the runtime's run markers
// (`markers=true`): a restart shows as a line `--- restarted (pid N) ---`, as in `orrery tui`;
// --no-markers leaves the process's output as it is.
//
// The runtime's bearer token comes from, in order: --token, $ORRERY_RUNTIME_TOKEN, --token-file
// (a file holding it: unlike --token, not visible in /proc/<pid>/cmdline), --state-dir
// (`<dir>/api-token`), the default state dir of that host on this machine
// ($XDG_STATE_HOME/orrery/runtime/<host>/api-token, what a local `orrery runtime` writes).
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Host, Replica } from '../crds/types.ts';
import { hostTarget, readLogs, readRuntimeToken } from '../platform/runtime-api.ts';
import { wholeNumberFlag } from './flags.ts';

interface LogsFlags {
  namespace: string;
  process?: string;
  follow?: boolean;
  markers: boolean;
  tail?: number;
  previous?: boolean;
  kubeconfig?: string;
  token?: string;
  tokenFile?: string;
  stateDir?: string;
}

/** Stream a replica's log to `out`; resolves when the stream ends (immediately without --follow). */
async function streamLogs(replicaName: string, flags: LogsFlags, out: NodeJS.WritableStream): Promise<void> {
  const [{ KubeApi, isNotFound, loadKubeConfig, resourceClient, typed }, { HOSTS, REPLICAS }] =
    await Promise.all([import('../kube/index.ts'), import('../crds/resources.ts')]);
  const api = await KubeApi.fromKubeConfig(
    loadKubeConfig(flags.kubeconfig ? { kubeconfig: flags.kubeconfig } : {}),
  );
  try {
    let replica: Replica;
    try {
      replica = await resourceClient(api, typed<Replica>(REPLICAS), 'orrery-logs').get(replicaName, {
        namespace: flags.namespace,
      });
    } catch (err) {
      if (isNotFound(err))
        throw new Error(`replica ${replicaName} not found in namespace ${flags.namespace}`);
      throw err;
    }
    const hostName = replica.spec.host;
    if (!hostName)
      throw new Error(`replica ${flags.namespace}/${replicaName} is not bound to a host yet (Pending)`);
    const host = await resourceClient(api, typed<Host>(HOSTS), 'orrery-logs').get(hostName);
    const target = hostTarget(host);
    if (!target) throw new Error(`host ${hostName} has no status.apiEndpoint: is its runtime running?`);
    const token = await readRuntimeToken(hostName, flags);
    const body = await readLogs(target, token, {
      namespace: flags.namespace,
      replica: replicaName,
      process: flags.process,
      tail: flags.tail,
      follow: flags.follow,
      markers: flags.follow && flags.markers,
      previous: flags.previous,
    });
    for await (const chunk of body) {
      if (!out.write(chunk)) await new Promise((r) => out.once('drain', r));
    }
  } finally {
    api.close();
  }
}

export function logsCommand(): Command {
  return new Command('logs')
    .description("print (or follow) a replica's process log, read from the runtime of the host it runs on")
    .argument('<replica>', 'Replica name, e.g. web-0')
    .option('-n, --namespace <namespace>', 'namespace of the replica', 'default')
    .option('-p, --process <name>', 'process of the replica (default: its first process)')
    .option('-f, --follow', 'keep streaming as the process writes')
    .option(
      '--no-markers',
      'with --follow, no line `--- restarted (pid N) ---` between two runs of the process (raw output)',
    )
    .option('--tail <lines>', 'only the last N lines', wholeNumberFlag('--tail', 0))
    .option('--previous', 'the run before the current one (after a restart)')
    .option('--kubeconfig <path>', 'kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .addOption(new Option('--token <token>', "the runtime's API bearer token").env('ORRERY_RUNTIME_TOKEN'))
    .option('--token-file <path>', "file holding the runtime's API bearer token")
    .option('--state-dir <dir>', "the runtime's state dir, to read its api-token from (same machine)")
    .action(async (replica: string, flags: LogsFlags) => {
      if (flags.follow && flags.previous) {
        throw new InvalidArgumentError(
          '--previous cannot be combined with --follow (a previous run no longer grows)',
        );
      }
      // Ctrl-C during --follow keeps Node's default: the process exits.
      try {
        await streamLogs(replica, flags, process.stdout);
      } catch (err) {
        console.error(`orrery logs: ${(err as Error).message}`);
        process.exitCode = 1;
      }
    });
}
