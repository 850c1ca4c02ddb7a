// `orrery operator`: runs the operator (leader-elected) against the cluster of --kubeconfig.
// The operator's modules load in the action, so `orrery --version` and `--help` do not pay for them.
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { OPERATOR_LEASE_NAME } from '../crds/labels.ts';
import { parseListen } from '../node-runtime/agent/options.ts';
import { loadDaemonMemory, loadOperator } from './daemons.ts';
import { durationFlag, listenFlag, wholeNumberFlag } from './flags.ts';
import { untilSignal } from './signals.ts';

interface OperatorFlags {
  kubeconfig?: string;
  hostGrace: number;
  serviceCidr: string;
  metricsListen: string;
  leaderLeaseDuration: number;
  workers: number;
  identity?: string;
  namespace?: string;
  hostSelector?: string;
  leaderLeaseName: string;
  metricsTokenFile?: string;
  runtimeTokenFile?: string;
  runtimeToken?: string;
  autoscaleSyncPeriod: number;
}

/** The runtime token as the autoscaler asks for it: the file's content now, else the flag's. */
function runtimeTokenOf(flags: OperatorFlags): () => string | undefined {
  const file = flags.runtimeTokenFile;
  if (!file) return () => flags.runtimeToken;
  return () => {
    try {
      return readFileSync(file, 'utf8').trim() || undefined;
    } catch {
      return undefined;
    }
  };
}

/** The first line of --metrics-token-file; exits with a sentence when it cannot be used. */
function readMetricsToken(file: string): string {
  let token: string;
  try {
    token = (readFileSync(file, 'utf8').split('\n')[0] ?? '').trim();
  } catch (err) {
    throw new InvalidArgumentError(
      `--metrics-token-file must be a readable file, got ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  if (token.length < 16)
    throw new InvalidArgumentError(
      `--metrics-token-file must hold a token of at least 16 characters, ${file} holds ${token.length}`,
    );
  return token;
}

export function operatorCommand(): Command {
  return new Command('operator')
    .description(
      'run the Orrery operator: Instance, scheduler, host-lifecycle and Service controllers (leader-elected)',
    )
    .option('--kubeconfig <path>', 'kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .addOption(
      new Option(
        '--host-grace <duration>',
        'how long a Host may go without renewing its Lease before its replicas are recreated elsewhere',
      )
        .argParser(durationFlag('--host-grace'))
        .default(1000, '1s'),
    )
    .option('--service-cidr <cidr>', 'loopback range for Service virtual IPs', '127.77.0.0/16')
    .addOption(
      new Option(
        '--metrics-listen <host:port>',
        'address of /metrics and /healthz; on a non-loopback address /metrics needs --metrics-token-file',
      )
        .argParser(listenFlag('--metrics-listen'))
        .default('127.0.0.1:0'),
    )
    .option(
      '--metrics-token-file <path>',
      'file holding the bearer token /metrics wants (first line; at least 16 characters)',
    )
    .option(
      '--leader-lease-duration <seconds>',
      'leader election Lease duration',
      wholeNumberFlag('--leader-lease-duration', 1, 3600),
      15,
    )
    .option('--workers <n>', 'concurrent Instance reconciles', wholeNumberFlag('--workers', 1, 64), 4)
    .option('--identity <id>', 'leader election identity (default: <hostname>_<random>)')
    .option('--namespace <ns>', 'manage only this namespace (default: all)')
    .option(
      '--host-selector <selector>',
      'schedule only onto Hosts matching this label selector (default: all)',
    )
    .option('--leader-lease-name <name>', 'leader election Lease in orrery-system', OPERATOR_LEASE_NAME)
    .option(
      '--runtime-token-file <file>',
      "file holding the hosts' runtime API bearer token, read when needed (the autoscaler reads the replicas' CPU there)",
    )
    .addOption(
      new Option(
        '--runtime-token <token>',
        "the hosts' runtime API bearer token (prefer --runtime-token-file)",
      )
        .env('ORRERY_RUNTIME_TOKEN')
        .hideHelp(),
    )
    .addOption(
      new Option(
        '--autoscale-sync-period <duration>',
        'how often the autoscaler reads CPU and decides (the HPA sync period)',
      )
        .argParser(durationFlag('--autoscale-sync-period'))
        .default(15_000, '15s'),
    )
    .action(async (flags: OperatorFlags, command: Command) => {
      // What its start allocated and freed, given back to the kernel (platform/memory.ts).
      (await loadDaemonMemory()).keepMallocTrimmed();
      const [{ newLogger }, { loadKubeConfig }, { OperatorMetrics, serveMetrics }, { startOperator }] =
        await loadOperator();
      const log = newLogger('orrery-operator');
      let metricsToken: string | undefined;
      try {
        if (flags.metricsTokenFile) metricsToken = readMetricsToken(flags.metricsTokenFile);
      } catch (err) {
        command.error(`error: ${(err as Error).message}`);
      }
      const metrics = new OperatorMetrics();
      let operator: Awaited<ReturnType<typeof startOperator>> | undefined;
      const { server, url } = await serveMetrics(
        metrics,
        parseListen(flags.metricsListen, '--metrics-listen'),
        {
          health: () => operator?.health() ?? { ok: true, role: 'starting' },
          ...(metricsToken !== undefined ? { token: metricsToken } : {}),
        },
      );
      log.info({ url }, 'serving /metrics and /healthz');
      operator = await startOperator({
        kubeConfig: loadKubeConfig(flags.kubeconfig !== undefined ? { kubeconfig: flags.kubeconfig } : {}),
        hostGraceMs: flags.hostGrace,
        serviceCidr: flags.serviceCidr,
        leaseDurationSeconds: flags.leaderLeaseDuration,
        workers: flags.workers,
        metrics,
        log,
        leaderLeaseName: flags.leaderLeaseName,
        runtimeToken: runtimeTokenOf(flags),
        autoscaleSyncMs: flags.autoscaleSyncPeriod,
        ...(flags.identity ? { identity: flags.identity } : {}),
        ...(flags.namespace ? { namespace: flags.namespace } : {}),
        ...(flags.hostSelector ? { hostSelector: flags.hostSelector } : {}),
      });
      await untilSignal();
      log.info('stopping');
      await operator.stop();
      server.close();
    });
}
