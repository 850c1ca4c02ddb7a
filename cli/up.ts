// `orrery up`: the one-machine quick start. Takes the data dir (one `up` per dir), starts the
// local control plane on it, installs the CRDs, starts the operator and N host agents as child
// processes with prefixed logs (restarted with backoff if they die), prints the KUBECONFIG line,
// and on Ctrl-C stops the agents (which stop their workloads and remove their cgroups), the
// operator and the control plane, in that order.
//
// Signals. Every process `up` starts runs in a session of its own, so a Ctrl-C in the terminal
// (SIGINT to the foreground process group) reaches npm and `up` but none of them: `up` alone
// orders the stop, and the operator cannot stop while the agents still need it, nor the control
// plane before the agents removed their finalizers. The same Ctrl-C can reach `up` twice (the
// terminal, then npm relaying it): signals within a second of the first are that one request; a
// later one kills everything at once. If `up` dies without stopping them (SIGKILL, a crash), its
// children notice (IPC channel closed; the control plane by PR_SET_PDEATHSIG) and stop by
// themselves, the agents leaving the workloads running; the next `up` on the data dir waits for
// them to be gone and re-adopts the workloads, pids unchanged.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { type ControlPlane, startControlPlane } from '../controlplane/controlplane.ts';
import { isTmpfs } from '../platform/fs.ts';
import { privateDir, writePrivateFile } from '../platform/private-fs.ts';
import { parseReadyLine } from './runtime.ts';
import { type StopCause, untilSignal } from './signals.ts';
import { type ChildExit, SupervisedChild } from './up-children.ts';
import { DataDirInUse, type DataDirLock, lockDataDir } from './up-lock.ts';
import { runSetup, TOKEN_RENEW_MS } from './up-setup.ts';

export interface UpOptions {
  dataDir?: string;
  port: number;
  hosts: number;
  /** Start only the control plane and the CRDs. */
  apiOnly?: boolean;
}

function defaultDataDir(): string {
  const stateHome = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(stateHome, 'orrery', 'up');
}

/** Splits the dynamic port range so agents on one machine never allocate the same port. */
function portRangeFor(index: number, count: number, min = 20000, max = 32767): string {
  const size = Math.floor((max - min + 1) / count);
  const start = min + index * size;
  return `${start}-${start + size - 1}`;
}

/**
 * Where the agents' HTTP APIs listen: fixed for the run, so that the mesh proxy's `--runtime`
 * URLs stay right when an agent is restarted. Chosen from 17000-19999, below the agents' port
 * range (20000-32767) and the kernel's default ephemeral range (32768-60999), so that neither a
 * replica nor an outgoing connection takes one before its agent binds it; from a start given by
 * the data dir (two `up`s on one machine start apart), skipping ports something listens on.
 */
async function agentApiPorts(dataDir: string, count: number, min = 17000, max = 19999): Promise<number[]> {
  const size = max - min + 1;
  const offset = Number.parseInt(dataDirKey(dataDir), 16) % size;
  const ports: number[] = [];
  for (let i = 0; i < size && ports.length < count; i++) {
    const port = min + ((offset + i) % size);
    if (await portIsFree(port)) ports.push(port);
  }
  if (ports.length < count) throw new Error(`no free port for the host agents' HTTP APIs in ${min}-${max}`);
  return ports;
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** How long a stopping part gets after SIGTERM before SIGKILL. */
const agentStopGraceMs = 30_000;
const operatorStopGraceMs = 10_000;

/**
 * One bearer token for the HTTP APIs of all the hosts `up` starts, kept in the data dir, so one
 * `export ORRERY_RUNTIME_TOKEN=...` serves `orrery logs` for every replica.
 */
function runtimeTokenFile(dataDir: string): string {
  const file = join(dataDir, 'api-token');
  if (!existsSync(file)) writePrivateFile(file, `${randomBytes(32).toString('hex')}\n`);
  return file;
}

/**
 * A short key of the data dir. The machine-wide names of a run (its hosts' run dirs and cgroup
 * parents) carry it, so two `up`s on different data dirs never touch each other's processes: an
 * agent kills every cgroup under its parent that it has no record of.
 */
function dataDirKey(dataDir: string): string {
  return createHash('sha256').update(dataDir).digest('hex').slice(0, 8);
}

/**
 * Where `up`'s hosts keep the records of their live processes: on tmpfs when the machine has one
 * at /run (as root) or $XDG_RUNTIME_DIR, keyed by the data dir; otherwise beside the rest of
 * their state (undefined).
 */
function upRunDir(dataDir: string): string | undefined {
  const xdg = process.env.XDG_RUNTIME_DIR;
  const base = process.getuid?.() === 0 ? '/run' : xdg?.startsWith('/') ? xdg : undefined;
  if (!base || !isTmpfs(base)) return undefined;
  return join(base, 'orrery', `up-${dataDirKey(dataDir)}`);
}

/**
 * An error in two lines at most: its message's first line, and the last line of what follows
 * (the control plane's error carries the tail of its log, whose last line is its own verdict).
 */
function describe(err: unknown): string {
  const lines = (err instanceof Error ? err.message : String(err)).split('\n').filter((l) => l.trim());
  const last = lines.length > 1 ? lines[lines.length - 1] : undefined;
  return last ? `${lines[0]}\n  ${last}` : (lines[0] ?? String(err));
}

/** What `up` started, in the order it started it. */
interface Parts {
  controlPlane?: ControlPlane;
  operator?: SupervisedChild;
  /** The machine's mesh proxy: one for all of `up`'s hosts, since they share its loopback. */
  proxy?: SupervisedChild;
  agents: SupervisedChild[];
  runDir?: string | undefined;
  /** Renews the hosts' tokens. */
  tokenRenewal?: NodeJS.Timeout;
}

export async function up(options: UpOptions): Promise<void> {
  const log = (message: string) => console.error(`[up] ${message}`);
  // A closed terminal (SIGHUP, which starts the stop) must not crash the stop with EIO or EPIPE:
  // from then on output is best effort.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {});
  const dataDir = resolve(options.dataDir ?? defaultDataDir());
  let lock: DataDirLock;
  try {
    lock = await lockDataDir(dataDir, log);
  } catch (err) {
    if (!(err instanceof DataDirInUse)) throw err;
    console.error(`orrery up: ${err.message}`);
    process.exitCode = 1;
    return;
  }

  const parts: Parts = { agents: [] };
  let stopCause: StopCause | undefined;
  let forced = false;
  const listening = new AbortController();
  const stopRequested = untilSignal(
    () => {
      if (forced) return;
      forced = true;
      log('Ctrl-C again: killing everything now');
      killAll(parts);
    },
    { signal: listening.signal },
  ).then((cause) => {
    stopCause = cause;
    log(
      `stopping (${cause}): the host agents and their workloads, then the operator and the control plane; Ctrl-C again to kill everything at once`,
    );
  });

  let failed = false;
  try {
    await bringUp(options, dataDir, parts, lock, log, () => stopCause !== undefined, stopRequested);
  } catch (err) {
    // Failures caused by the stop itself (a build the terminal's Ctrl-C interrupted) are not news.
    if (stopCause === undefined) {
      log(`could not start: ${describe(err)}`);
      failed = true;
    }
  }
  if (stopCause === undefined && !failed) {
    console.log(`export KUBECONFIG=${parts.controlPlane?.kubeconfig}`);
    if (!options.apiOnly) console.log(`export ORRERY_RUNTIME_TOKEN=$(cat ${join(dataDir, 'api-token')})`);
    log(
      `running ${options.apiOnly ? 'the API only' : `the operator and ${options.hosts} host(s)`} on ${dataDir}; press Ctrl-C to stop`,
    );
    await stopRequested;
  } else if (failed) {
    log('stopping what started');
  }
  const started = performance.now();
  const clean = await stopParts(parts, log);
  lock.release();
  listening.abort();
  log(`stopped in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  if (failed || forced || !clean) process.exitCode = 1;
}

async function bringUp(
  options: UpOptions,
  dataDir: string,
  parts: Parts,
  lock: DataDirLock,
  log: (message: string) => void,
  interrupted: () => boolean,
  stopRequested: Promise<void>,
): Promise<void> {
  // Builds the binary first when it is not cached (it says so, and how long it took).
  const controlPlane = await startControlPlane({
    dataDir: join(dataDir, 'controlplane'),
    port: options.port,
    log,
  });
  parts.controlPlane = controlPlane;
  lock.recordChild('control plane', controlPlane.pid);
  if (interrupted()) return;
  const hostNames = Array.from({ length: options.hosts }, (_, i) =>
    options.hosts === 1 ? hostname() : `${hostname()}-${i}`,
  );
  // The CRDs, deploy/'s RBAC and policies and every daemon's credentials, by a child process
  // (up-setup.ts says why), again every TOKEN_RENEW_MS for fresh tokens.
  const setup = { kubeconfig: controlPlane.kubeconfig, dataDir, hosts: hostNames };
  const identities = await runSetup({ ...setup, mode: options.apiOnly ? 'crds' : 'start' });
  if (interrupted() || options.apiOnly || identities === undefined) return;
  parts.tokenRenewal = setInterval(() => {
    runSetup({ ...setup, mode: 'renew' }).catch((err: unknown) =>
      log(`could not renew the hosts', proxy's and operator's tokens: ${describe(err)}`),
    );
  }, TOKEN_RENEW_MS);
  parts.tokenRenewal.unref();
  if (interrupted()) return;

  const hooks = (name: string) => ({ log, onSpawn: (pid: number) => lock.recordChild(name, pid) });
  const tokenFile = runtimeTokenFile(dataDir);
  parts.operator = new SupervisedChild(
    {
      name: 'operator',
      role: 'operator',
      // The token of the agents' APIs: the autoscaler reads the replicas' CPU there.
      args: ['operator', '--kubeconfig', identities.operator.kubeconfig, '--runtime-token-file', tokenFile],
    },
    hooks('operator'),
  );
  parts.operator.start();
  const apiPorts = await agentApiPorts(dataDir, options.hosts);
  parts.proxy = new SupervisedChild(
    {
      name: 'proxy',
      role: 'mesh proxy',
      args: [
        'proxy',
        '--kubeconfig',
        identities.proxy?.kubeconfig as string,
        '--name',
        `up-${dataDirKey(dataDir)}`,
        '--drain-timeout', // within its stop grace
        '5s',
        // The same-host fast path: the agents' event streams take exited replicas out at once.
        ...apiPorts.flatMap((port) => ['--runtime', `http://127.0.0.1:${port}`]),
        '--runtime-token-file',
        tokenFile,
      ],
    },
    hooks('mesh proxy'),
  );
  parts.proxy.start();

  const runDir = upRunDir(dataDir);
  parts.runDir = runDir;
  const env = { ...process.env, ORRERY_RUNTIME_TOKEN: readFileSync(tokenFile, 'utf8').trim() };
  const ready: Promise<unknown>[] = [];
  for (const [i, name] of hostNames.entries()) {
    const stateDir = join(dataDir, 'hosts', name);
    privateDir(join(dataDir, 'hosts'));
    privateDir(stateDir);
    let announced: () => void = () => {};
    const agent = new SupervisedChild(
      {
        name,
        role: 'host agent',
        args: [
          'runtime',
          '--kubeconfig',
          identities.hosts[i]?.kubeconfig as string,
          '--host-name',
          name,
          '--state-dir',
          stateDir,
          ...(runDir ? ['--run-dir', join(runDir, name)] : []),
          '--cgroup-parent',
          `orrery/up-${dataDirKey(dataDir)}-${name}`,
          '--port-range',
          portRangeFor(i, options.hosts),
          '--listen',
          `127.0.0.1:${apiPorts[i]}`,
          // Where BPF and cgroup v2 are; otherwise the proxy serves and the Host says why.
          '--kernel-fastpath',
          '--stop-workloads-on-exit',
        ],
        env,
        onLine: (line) => {
          if (parseReadyLine(line)) announced();
        },
      },
      hooks(`host agent ${name}`),
    );
    const announcement = new Promise<void>((resolve) => (announced = resolve));
    agent.start();
    parts.agents.push(agent);
    // Up once it printed its ready line, or once its first process exited (it is restarted).
    ready.push(Promise.race([announcement, agent.exited()]));
  }
  await Promise.race([Promise.all(ready), stopRequested]);
}

/**
 * Agents first: they stop their workloads and need the API server to remove their finalizers.
 * Then the operator and the mesh proxy (which drains its connections), then the control plane. Resolves whether all of it stopped within its grace.
 */
async function stopParts(parts: Parts, log: (message: string) => void): Promise<boolean> {
  clearInterval(parts.tokenRenewal);
  const stopped = (exit: ChildExit) => !exit.killed && exit.code === 0;
  const agents = await Promise.all(parts.agents.map((a) => a.stop(agentStopGraceMs)));
  const agentsClean = agents.every(stopped);
  // The workloads are stopped, so are their records: the run dir can go. Not after a kill, when
  // they may run on and the next run re-adopts them from the records.
  if (parts.runDir && agentsClean) rmSync(parts.runDir, { recursive: true, force: true });
  const [operator, proxy] = await Promise.all([
    parts.operator?.stop(operatorStopGraceMs),
    parts.proxy?.stop(operatorStopGraceMs),
  ]);
  await parts.controlPlane?.stop();
  if (!agentsClean) log('a host agent did not stop cleanly: its workloads may still run');
  return (
    agentsClean && (operator === undefined || stopped(operator)) && (proxy === undefined || stopped(proxy))
  );
}

/** The deliberate second Ctrl-C: SIGKILL for everything, the control plane included. */
function killAll(parts: Parts): void {
  for (const child of [
    ...parts.agents,
    ...(parts.operator ? [parts.operator] : []),
    ...(parts.proxy ? [parts.proxy] : []),
  ]) {
    child.kill();
  }
  if (parts.controlPlane) {
    try {
      process.kill(parts.controlPlane.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
