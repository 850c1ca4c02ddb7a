// `orrery proxy`: the per-host mesh proxy (docs/DESIGN.md §6.1) for the ports of Services.
// Its own process, beside `orrery runtime`: restarting one leaves the other's connections and
// workloads alone. SIGINT/SIGTERM stop accepting at once and let open connections finish for up
// to --drain-timeout; then it exits 0. The mesh's modules load in the action, so `--help` does
// not pay for them. With --runtime (one per runtime on this host) it reads their event streams:
// a replica whose process exits leaves the pools at once (the same-host fast path).
import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { parseListen } from '../node-runtime/agent/options.ts';
import { loadDaemonMemory, loadProxy } from './daemons.ts';
import { dnsSubdomainFlag, durationFlag, listenFlag } from './flags.ts';
import { untilSignal } from './signals.ts';

interface ProxyFlags {
  kubeconfig?: string;
  namespace?: string;
  metricsListen: string;
  idleTimeout: number;
  connectTimeout: number;
  drainTimeout: number;
  name?: string;
  runtime: string[];
  runtimeTokenFile?: string;
}

/**
 * `--runtime`, repeatable: the base URL of a runtime's API, http:// on loopback or https:// off it
 * (`orrery runtime --tls`), whose certificate the feed takes from the Host that publishes it.
 */
export function runtimeUrlFlag(value: string, previous: string[] = []): string[] {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(`--runtime expects a URL such as http://127.0.0.1:7777, got '${value}'`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search || url.hash) {
    throw new InvalidArgumentError(
      `--runtime expects an http:// or https:// URL such as http://127.0.0.1:7777 or https://10.0.0.5:7777, got '${value}'`,
    );
  }
  return [...previous, value.replace(/\/+$/, '')];
}

export function proxyCommand(): Command {
  return new Command('proxy')
    .description(
      "run this host's mesh proxy: serve every port of every Service at its virtualIP:port on loopback, balancing tcp connections or http requests over the ready endpoints with the Service's policy, retries, timeouts, outlier ejection and circuit breakers",
    )
    .option('--kubeconfig <path>', 'kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .option('--namespace <ns>', 'serve only the Services of this namespace (default: all)')
    .option(
      '--name <name>',
      'name of this proxy: its heartbeat Lease is proxy-<name> in orrery-system, which tells the operator the Services are served (default: the host name)',
      dnsSubdomainFlag('--name'),
    )
    .addOption(
      new Option(
        '--metrics-listen <host:port>',
        'address of /metrics, /healthz and /readyz (port 0 picks a free one)',
      )
        .argParser(listenFlag('--metrics-listen'))
        .default('127.0.0.1:0'),
    )
    .addOption(
      new Option(
        '--idle-timeout <duration>',
        'close a connection when no byte went either way for this long (0: never)',
      )
        .argParser(durationFlag('--idle-timeout'))
        .default(3_600_000, '60m'),
    )
    .addOption(
      new Option(
        '--connect-timeout <duration>',
        "give up a connect to an endpoint after this long and try another (a Service's retries.perTryTimeoutMs overrides it)",
      )
        .argParser(durationFlag('--connect-timeout'))
        .default(5_000, '5s'),
    )
    .addOption(
      new Option(
        '--drain-timeout <duration>',
        'how long open connections may go on after their Service is deleted or the proxy is stopped',
      )
        .argParser(durationFlag('--drain-timeout'))
        .default(10_000, '10s'),
    )
    .addOption(
      new Option(
        '--runtime <url>',
        'a runtime on this host (its HTTP API, Host.status.apiEndpoint; repeatable): its event stream takes a replica whose process exited out of the pools at once, before its EndpointSlice says so',
      )
        .argParser(runtimeUrlFlag)
        .default([], 'none'),
    )
    .option(
      '--runtime-token-file <path>',
      "file holding the runtimes' bearer token, read at each connect (default: $ORRERY_RUNTIME_TOKEN)",
    )
    .action(async (flags: ProxyFlags, command: Command) => {
      if (flags.connectTimeout <= 0) command.error('error: --connect-timeout must be above 0');
      const tokenFile = flags.runtimeTokenFile;
      const envToken = process.env.ORRERY_RUNTIME_TOKEN;
      if (flags.runtime.length > 0 && tokenFile === undefined && !envToken) {
        command.error('error: --runtime needs the token: --runtime-token-file or $ORRERY_RUNTIME_TOKEN');
      }
      const metricsListen = parseListen(flags.metricsListen, '--metrics-listen');
      // What its start allocated and freed, given back to the kernel (platform/memory.ts).
      (await loadDaemonMemory()).keepMallocTrimmed();
      const [{ newLogger }, { loadKubeConfig }, { startProxy }] = await loadProxy();
      const log = newLogger('orrery-proxy');
      // Listening before the metrics line is logged: whoever reads it may signal at once.
      const stopRequested = untilSignal();
      const proxy = await startProxy({
        kubeConfig: loadKubeConfig(flags.kubeconfig !== undefined ? { kubeconfig: flags.kubeconfig } : {}),
        namespace: flags.namespace,
        metricsListen,
        idleTimeoutMs: flags.idleTimeout,
        connectTimeoutMs: flags.connectTimeout,
        drainTimeoutMs: flags.drainTimeout,
        name: flags.name,
        localFeed: {
          runtimes: flags.runtime,
          token: tokenFile !== undefined ? () => readFile(tokenFile, 'utf8') : () => envToken ?? '',
        },
        log,
      });
      const cause = await stopRequested;
      log.info({ cause, drainTimeoutMs: flags.drainTimeout }, 'stopping: no new connections, draining');
      await proxy.stop();
      log.info('stopped');
    });
}
