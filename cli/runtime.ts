// `orrery runtime`: the host agent. Flags are validated here, at the edge; every error names the
// flag and the expected value. SIGINT/SIGTERM stop the agent and leave the workloads running (a
// runtime restart must not restart workloads: the next agent re-adopts them), unless
// --stop-workloads-on-exit is given (what `orrery up` wants for its Ctrl-C). Started by `orrery
// up` (an IPC channel), the agent also stops when up goes away, and then leaves them running.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Command, InvalidArgumentError, Option } from 'commander';
import { memoryBytes } from '../crds/quantity.ts';
import type { AgentOptions } from '../node-runtime/agent/index.ts';
import { defaultHostName, fenceAfterMs } from '../node-runtime/agent/options.ts';
import { loadAgent, loadDaemonMemory } from './daemons.ts';
import {
  addressFlag,
  dnsSubdomainFlag,
  labelFlag,
  listenFlag,
  portRangeFlag,
  quantityFlag,
  wholeNumberFlag,
} from './flags.ts';
import { untilSignal } from './signals.ts';

interface RuntimeFlags {
  kubeconfig?: string;
  hostName: string;
  stateDir?: string;
  runDir?: string;
  logDir?: string;
  cgroupParent?: string;
  listen: string;
  address?: string;
  token?: string;
  tokenFile?: string;
  logMaxSize?: string;
  logMaxFiles?: number;
  apiMaxConnections?: number;
  apiMaxStreams?: number;
  apiEventBuffer?: string;
  leaseDuration: number;
  leaseRenewInterval?: number;
  label?: Record<string, string>;
  registerUnschedulable?: boolean;
  portRange?: { min: number; max: number };
  capacityCpu?: string;
  capacityMemory?: string;
  capacityPids?: number;
  defaultMemory?: string;
  defaultPids?: number;
  maxReplicas?: number;
  stopWorkloadsOnExit?: boolean;
  workers: number;
  kernelFastpath?: boolean;
  tls?: boolean;
  workloadRoot?: string;
}

export function runtimeCommand(): Command {
  return new Command('runtime')
    .description(
      'run the host agent: register this Host, renew its Lease, run the Replicas bound to it as supervised processes, and serve logs, stats, events and metrics over HTTP',
    )
    .option('--kubeconfig <path>', 'kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .option(
      '--host-name <name>',
      'Host object name and Lease holder',
      dnsSubdomainFlag('--host-name'),
      defaultHostName(),
    )
    .option(
      '--state-dir <dir>',
      'runtime state, agent records and the API token (default: $XDG_STATE_HOME/orrery/runtime/<host>)',
    )
    .option(
      '--run-dir <dir>',
      'records of the live processes and their exit statuses, best on tmpfs, e.g. /run/orrery/<host> (default: <state-dir>)',
    )
    .option('--log-dir <dir>', 'per-process log files (default: <state-dir>/logs)')
    .option(
      '--cgroup-parent <path>',
      'parent cgroup of all replicas, below each hierarchy root (default: orrery/<host>)',
    )
    .option(
      '--listen <host:port>',
      'HTTP API address (port 0 picks a free one)',
      listenFlag('--listen'),
      '127.0.0.1:0',
    )
    .option(
      '--tls',
      'serve the HTTP API over TLS, with a certificate made at each start and published in Host.status.apiCertificate for clients to trust (default: on unless --listen is a loopback address)',
    )
    .option('--no-tls', 'serve the HTTP API in plain HTTP, also on a non-loopback address')
    .option(
      '--workload-root <dir>',
      "run every replica with this directory as its root (pivot_root, each in a mount namespace): the node's filesystem for a runtime in a container, mounted at /host (default: the runtime's own root)",
    )
    .option(
      '--address <ip>',
      "this host's address for Host.status.address and, when listening on 0.0.0.0, apiEndpoint (a DaemonSet passes status.hostIP)",
      addressFlag('--address'),
    )
    .addOption(
      new Option(
        '--token <token>',
        'HTTP API bearer token; on the command line every local user can read it in /proc/<pid>/cmdline: prefer $ORRERY_RUNTIME_TOKEN or --token-file (default: kept in <state-dir>/api-token, generated once)',
      )
        .env('ORRERY_RUNTIME_TOKEN')
        .conflicts('tokenFile'),
    )
    .option(
      '--token-file <path>',
      'file holding the HTTP API bearer token (first line; at least 16 characters)',
    )
    .option(
      '--log-max-size <quantity>',
      "size at which a process's log file is rotated, as the kubelet's --container-log-max-size (default 10Mi)",
      quantityFlag('--log-max-size'),
    )
    .option(
      '--log-max-files <n>',
      'log files kept per process run, the live one included (default 5)',
      wholeNumberFlag('--log-max-files', 1, 100),
    )
    .option(
      '--api-max-connections <n>',
      'open connections the HTTP API takes; one more is answered 503 (default 256)',
      wholeNumberFlag('--api-max-connections', 1),
    )
    .option(
      '--api-max-streams <n>',
      'event streams and log follows open at once; one more is answered 503 (default 64)',
      wholeNumberFlag('--api-max-streams', 1),
    )
    .option(
      '--api-event-buffer <quantity>',
      'bytes an /v1/events reader may fall behind before it is cut off (default 1Mi)',
      quantityFlag('--api-event-buffer'),
    )
    .option(
      '--lease-duration <seconds>',
      'Lease duration; after this long without a renewal the runtime kills its replicas (self-fencing). 1 s makes a 1.5 s failover possible on a local control plane; use 10-40 on a real cluster',
      wholeNumberFlag('--lease-duration', 1),
      1,
    )
    .option(
      '--lease-renew-interval <ms>',
      'how often the Lease is renewed (default: a quarter of the duration)',
      wholeNumberFlag('--lease-renew-interval', 10),
    )
    .option('--label <key=value>', 'label for the Host (repeatable)', labelFlag('--label'))
    .option(
      '--register-unschedulable',
      'create the Host cordoned (spec.unschedulable: true); no effect on an existing Host',
    )
    .option(
      '--port-range <min-max>',
      'range ports without a number are allocated from',
      portRangeFlag('--port-range'),
    )
    .option(
      '--capacity-cpu <quantity>',
      'override the CPU capacity (default: the number of cores)',
      quantityFlag('--capacity-cpu'),
    )
    .option(
      '--capacity-memory <quantity>',
      'override the memory capacity (default: MemTotal)',
      quantityFlag('--capacity-memory'),
    )
    .option(
      '--capacity-pids <n>',
      'override the pids capacity (default: kernel.pid_max)',
      wholeNumberFlag('--capacity-pids', 1),
    )
    .option(
      '--default-memory <quantity>',
      'memory limit of a replica whose template sets none (default: 1Gi)',
      quantityFlag('--default-memory'),
    )
    .option(
      '--default-pids <n>',
      'pids limit of a replica whose template sets none (default: 1024)',
      wholeNumberFlag('--default-pids', 1),
    )
    .option(
      '--max-replicas <n>',
      'replicas this host accepts (capacity.replicas)',
      wholeNumberFlag('--max-replicas', 0),
    )
    .option(
      '--workers <n>',
      'replicas started or stopped in parallel',
      wholeNumberFlag('--workers', 1, 256),
      8,
    )
    .option(
      '--kernel-fastpath',
      "balance replicas' connects to tcp Service ports in the kernel and keep each allocated port to its replica (BPF on the host's Orrery cgroup; needs root, cgroup v2 and the fast path built; without them the proxy serves and the Host says why). Off by default here; orrery up and deploy/ turn it on",
    )
    .option(
      '--stop-workloads-on-exit',
      'stop every replica when the agent is stopped by a signal (default: leave them running for re-adoption); under `orrery up`, they are left running if up itself goes away',
    )
    .action(async (flags: RuntimeFlags, command: Command) => {
      let options: AgentOptions;
      try {
        options = agentOptionsOf(flags);
      } catch (err) {
        command.error(`error: ${(err as Error).message}`);
      }
      if (command.getOptionValueSource('token') === 'cli') {
        console.error(
          'orrery runtime: warning: --token is readable by every local user in /proc/<pid>/cmdline; use --token-file or $ORRERY_RUNTIME_TOKEN',
        );
      }
      // What its start allocated and freed, given back to the kernel (platform/memory.ts).
      (await loadDaemonMemory()).keepMallocTrimmed();
      const { startAgent } = await loadAgent();
      const agent = await startAgent(options);
      // Listening before the line below: whoever reads it may signal at once.
      const stopRequested = untilSignal();
      const ready: RuntimeReady = {
        host: agent.hostName,
        apiEndpoint: agent.apiEndpoint,
        tokenFile: agent.tokenFile,
      };
      console.log(JSON.stringify(ready));
      const cause = await stopRequested;
      // Under `orrery up`, --stop-workloads-on-exit serves up's ordered stop (a signal). When up
      // itself is gone (killed, crashed), the workloads keep running for the next up to re-adopt.
      const stopWorkloads = flags.stopWorkloadsOnExit === true && cause !== 'parent-exited';
      agent.engine.log.info({ cause, stopWorkloads }, 'stopping the runtime agent');
      await agent
        .stop({ stopWorkloads })
        .catch((err: Error) => agent.engine.log.error({ err: err.message }, 'agent stop failed'));
    });
}

/** The first line of --token-file. */
function readTokenFile(file: string): string {
  let token: string;
  try {
    token = (readFileSync(file, 'utf8').split('\n')[0] ?? '').trim();
  } catch (err) {
    throw new InvalidArgumentError(
      `--token-file must be a readable file, got ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  if (token.length < 16)
    throw new InvalidArgumentError(
      `--token-file must hold a token of at least 16 characters, ${file} holds ${token.length}`,
    );
  return token;
}

/** The agent's options from the flags: each is checked by its parser (flags.ts), what two of them must satisfy together here. */
function agentOptionsOf(flags: RuntimeFlags): AgentOptions {
  const opts: AgentOptions = {
    hostName: flags.hostName,
    listen: flags.listen,
    leaseDurationSeconds: flags.leaseDuration,
    workers: flags.workers,
  };
  if (flags.leaseRenewInterval !== undefined) {
    const fenceMs = fenceAfterMs(flags.leaseDuration);
    if (flags.leaseRenewInterval >= fenceMs) {
      throw new InvalidArgumentError(
        `--lease-renew-interval must be below three quarters of --lease-duration (${fenceMs} ms, when the host fences itself), got ${flags.leaseRenewInterval}`,
      );
    }
    opts.leaseRenewIntervalMs = flags.leaseRenewInterval;
  }
  if (flags.kubeconfig !== undefined) opts.kubeconfig = flags.kubeconfig;
  if (flags.address !== undefined) opts.address = flags.address;
  if (flags.stateDir !== undefined) opts.stateDir = flags.stateDir;
  if (flags.runDir !== undefined) opts.runDir = flags.runDir;
  if (flags.logDir !== undefined) opts.logDir = flags.logDir;
  if (flags.cgroupParent !== undefined) opts.cgroupParent = flags.cgroupParent;
  if (flags.token) opts.token = flags.token;
  if (flags.tokenFile !== undefined) opts.token = readTokenFile(flags.tokenFile);
  if (flags.logMaxSize !== undefined) {
    const bytes = memoryBytes(flags.logMaxSize);
    if (bytes < 4096)
      throw new InvalidArgumentError(`--log-max-size must be at least 4Ki, got ${flags.logMaxSize}`);
    opts.logMaxBytes = bytes;
  }
  if (flags.logMaxFiles !== undefined) opts.logMaxFiles = flags.logMaxFiles;
  const apiLimits: NonNullable<AgentOptions['apiLimits']> = {};
  if (flags.apiMaxConnections !== undefined) apiLimits.maxConnections = flags.apiMaxConnections;
  if (flags.apiMaxStreams !== undefined) apiLimits.maxStreams = flags.apiMaxStreams;
  if (flags.apiEventBuffer !== undefined)
    apiLimits.eventBufferBytes = Math.max(1, memoryBytes(flags.apiEventBuffer));
  opts.apiLimits = apiLimits;
  if (flags.label !== undefined) opts.labels = flags.label;
  if (flags.registerUnschedulable) opts.registerUnschedulable = true;
  if (flags.kernelFastpath) opts.kernelFastPath = true;
  if (flags.tls !== undefined) opts.tls = flags.tls;
  if (flags.workloadRoot !== undefined) opts.workloadRoot = flags.workloadRoot;
  if (flags.portRange !== undefined) opts.portRange = flags.portRange;
  const capacity: NonNullable<AgentOptions['capacity']> = {};
  if (flags.capacityCpu !== undefined) capacity.cpu = flags.capacityCpu;
  if (flags.capacityMemory !== undefined) capacity.memory = flags.capacityMemory;
  if (flags.capacityPids !== undefined) capacity.pids = flags.capacityPids;
  if (flags.maxReplicas !== undefined) capacity.replicas = flags.maxReplicas;
  opts.capacity = capacity;
  const defaults: NonNullable<AgentOptions['defaultResources']> = {};
  if (flags.defaultMemory !== undefined) defaults.memory = flags.defaultMemory;
  if (flags.defaultPids !== undefined) defaults.pids = flags.defaultPids;
  opts.defaultResources = defaults;
  return opts;
}

/**
 * What `orrery runtime` prints on stdout, once, when it is registered and serving: one JSON line
 * for scripts (`orrery up`, tests, benchmarks) saying where its API is and where the token lives.
 * Its log lines share stdout; they are pino records, which carry a `level`, and this one has none.
 */
export interface RuntimeReady {
  host: string;
  apiEndpoint: string;
  tokenFile: string;
}

/** The fields of the ready line, or undefined for any other line (a log record, text). */
export function parseReadyLine(line: string): RuntimeReady | undefined {
  if (!line.startsWith('{') || !line.includes('"apiEndpoint"')) return undefined;
  let record: unknown;
  try {
    record = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (record === null || typeof record !== 'object' || 'level' in record) return undefined;
  const { host, apiEndpoint, tokenFile } = record as Record<string, unknown>;
  if (typeof host !== 'string' || typeof apiEndpoint !== 'string' || typeof tokenFile !== 'string') {
    return undefined;
  }
  return { host, apiEndpoint, tokenFile };
}

/**
 * Resolves with the ready line of an `orrery runtime` started as `child` (stdout a pipe) once it
 * prints it; rejects when the child exits first, or after `timeoutMs` when given. stdout goes on
 * being read afterwards, so the runtime never blocks on a full pipe.
 */
export function untilRuntimeReady(child: ChildProcess, timeoutMs?: number): Promise<RuntimeReady> {
  const stdout = child.stdout;
  if (!stdout)
    return Promise.reject(new TypeError('untilRuntimeReady needs the stdout of the child as a pipe'));
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: stdout });
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(
            () => done(new Error(`orrery runtime printed no ready line in ${timeoutMs} ms`)),
            timeoutMs,
          );
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      done(new Error(`orrery runtime exited (${signal ?? `code ${code}`}) before its ready line`));
    const onLine = (line: string) => {
      const ready = parseReadyLine(line);
      if (ready) done(ready);
    };
    // off, not close(): closing the interface would pause stdout, which must keep draining.
    function done(result: RuntimeReady | Error) {
      lines.off('line', onLine);
      child.off('exit', onExit);
      clearTimeout(timer);
      if (result instanceof Error) reject(result);
      else resolve(result);
    }
    lines.on('line', onLine);
    child.once('exit', onExit);
    if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
  });
}
