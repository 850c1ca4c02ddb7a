// `orrery up`: the one-machine quick start. Starts the local control plane on a persistent data
// directory, installs the CRDs, starts the operator and N host agents as child processes with
// prefixed logs, prints the KUBECONFIG line, and on Ctrl-C stops the agents (which stop their
// workloads and remove their cgroups), the operator and the control plane, in that order.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { installCrds } from '../crds/install.ts';
import { ensureControlPlaneBinary, startControlPlane } from '../hack/controlplane/controlplane.ts';
import { loadKubeConfig } from '../kube/index.ts';
import { packagePath } from '../platform/package.ts';
import { untilSignal } from './signals.ts';

export interface UpOptions {
  dataDir?: string;
  port: number;
  hosts: number;
  /** Start only the control plane and the CRDs. */
  apiOnly?: boolean;
}

export function defaultDataDir(): string {
  const stateHome = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(stateHome, 'orrery', 'up');
}

const binary = packagePath('bin', 'orrery.js');

/** Splits the dynamic port range so agents on one machine never allocate the same port. */
export function portRangeFor(index: number, count: number, min = 20000, max = 32767): string {
  const size = Math.floor((max - min + 1) / count);
  const start = min + index * size;
  return `${start}-${start + size - 1}`;
}

/** One readable line from a pino JSON line: `level msg key=value ...`; other text as it is. */
export function formatLogLine(line: string): string {
  if (!line.startsWith('{')) return line;
  try {
    const {
      level,
      msg,
      time: _t,
      pid: _p,
      hostname: _h,
      name: _n,
      ...rest
    } = JSON.parse(line) as Record<string, unknown>;
    const levelName =
      { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' }[Number(level)] ??
      String(level);
    const fields = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    return `${levelName.padEnd(5)} ${String(msg ?? '')}${fields ? ` ${fields}` : ''}`;
  } catch {
    return line;
  }
}

/**
 * One bearer token for the HTTP APIs of all the hosts `up` starts, kept in the data dir, so one
 * `export ORRERY_RUNTIME_TOKEN=...` serves `orrery logs` for every replica.
 */
function runtimeTokenFile(dataDir: string): string {
  const file = join(dataDir, 'api-token');
  if (!existsSync(file)) writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  return file;
}

/**
 * Where `up`'s hosts keep the records of their live processes: on tmpfs when the machine has one
 * at /run (as root) or $XDG_RUNTIME_DIR, keyed by the data dir so two `up`s do not share it;
 * otherwise beside the rest of their state (undefined).
 */
function upRunDir(dataDir: string): string | undefined {
  const xdg = process.env.XDG_RUNTIME_DIR;
  const base = process.getuid?.() === 0 ? '/run' : xdg?.startsWith('/') ? xdg : undefined;
  if (!base || !isTmpfs(base)) return undefined;
  return join(base, 'orrery', `up-${createHash('sha256').update(dataDir).digest('hex').slice(0, 8)}`);
}

/** statfs(2) f_type of tmpfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;

export function isTmpfs(dir: string): boolean {
  try {
    return statfsSync(dir).type === TMPFS_MAGIC;
  } catch {
    return false;
  }
}

function startChild(
  name: string,
  args: string[],
  onLine: (line: string) => void = () => {},
  env: NodeJS.ProcessEnv = process.env,
): ChildProcess {
  const child = spawn(process.execPath, [binary, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      onLine(line);
      console.error(`[${name}] ${formatLogLine(line)}`);
    });
  }
  child.on('exit', (code, signal) => console.error(`[${name}] exited (${signal ?? `code ${code}`})`));
  return child;
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export async function up(options: UpOptions): Promise<void> {
  const log = (message: string) => console.error(`[up] ${message}`);
  const dataDir = options.dataDir ?? defaultDataDir();
  const built = await ensureControlPlaneBinary({ log });
  if (built.built) log(`built the control plane in ${(built.buildMs / 1000).toFixed(1)} s`);
  const controlPlane = await startControlPlane({
    dataDir: join(dataDir, 'controlplane'),
    port: options.port,
    log,
  });
  log(`control plane up in ${controlPlane.bringUpMs} ms at ${controlPlane.server} (data in ${dataDir})`);
  const crds = await installCrds(loadKubeConfig({ kubeconfig: controlPlane.kubeconfig }));
  log(`installed CRDs: ${crds.join(', ')}`);

  const children: { name: string; child: ChildProcess }[] = [];
  // If `up` itself dies (an exception), take the children with it rather than orphaning them.
  process.once('exit', () => {
    for (const { child } of children) if (child.exitCode === null) child.kill('SIGTERM');
  });
  const runDir = options.apiOnly ? undefined : upRunDir(dataDir);
  if (!options.apiOnly) {
    children.push({
      name: 'operator',
      child: startChild('operator', ['operator', '--kubeconfig', controlPlane.kubeconfig]),
    });
    const tokenFile = runtimeTokenFile(dataDir);
    const runtimeEnv = { ...process.env, ORRERY_RUNTIME_TOKEN: readFileSync(tokenFile, 'utf8').trim() };
    const base = hostname();
    const ready: Promise<void>[] = [];
    for (let i = 0; i < options.hosts; i++) {
      const name = options.hosts === 1 ? base : `${base}-${i}`;
      const stateDir = join(dataDir, 'hosts', name);
      mkdirSync(stateDir, { recursive: true });
      let announced: () => void = () => {};
      ready.push(new Promise((resolve) => (announced = resolve)));
      const child = startChild(
        name,
        [
          'runtime',
          '--kubeconfig',
          controlPlane.kubeconfig,
          '--host-name',
          name,
          '--state-dir',
          stateDir,
          ...(runDir ? ['--run-dir', join(runDir, name)] : []),
          '--port-range',
          portRangeFor(i, options.hosts),
          '--stop-workloads-on-exit',
        ],
        (line) => {
          if (line.includes('"apiEndpoint"')) announced();
        },
        runtimeEnv,
      );
      child.once('exit', () => announced());
      children.push({ name, child });
    }
    await Promise.all(ready);
  }

  console.log(`export KUBECONFIG=${controlPlane.kubeconfig}`);
  if (!options.apiOnly) console.log(`export ORRERY_RUNTIME_TOKEN=$(cat ${join(dataDir, 'api-token')})`);
  log(
    `running ${options.apiOnly ? 'the API only' : `the operator and ${options.hosts} host(s)`}; press Ctrl-C to stop`,
  );
  let forced = false;
  await untilSignal(() => {
    if (forced) return;
    forced = true;
    log('second signal: killing everything now');
    for (const { child } of children) child.kill('SIGKILL');
  });
  log('stopping (Ctrl-C again to force)');
  // Agents first: they stop their workloads and need the API server to remove finalizers.
  await Promise.all(children.filter((c) => c.name !== 'operator').map((c) => stopChild(c.child, 30_000)));
  // Their workloads are stopped (--stop-workloads-on-exit), so their records are gone too.
  if (runDir && !forced) rmSync(runDir, { recursive: true, force: true });
  await Promise.all(children.filter((c) => c.name === 'operator').map((c) => stopChild(c.child, 10_000)));
  await controlPlane.stop();
  log('stopped');
}
