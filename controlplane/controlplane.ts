// Starts and stops the local control plane (controlplane, docs/DESIGN.md §8): the real
// kube-apiserver over embedded etcd, one process, loopback only.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { openPrivateAppend, privateDir } from '../platform/private-fs.ts';
import { ensureControlPlaneBinary } from './binary.ts';

export { type ControlPlaneBinary, cacheRoot, ensureControlPlaneBinary } from './binary.ts';

export interface ControlPlane {
  /** `https://127.0.0.1:PORT` */
  server: string;
  /** Admin kubeconfig (bearer token of orrery-admin in system:masters, CA embedded). */
  kubeconfig: string;
  dataDir: string;
  pid: number;
  /**
   * spawn() → ready line received: exec, Go and Kubernetes package init, etcd start, apiserver
   * start, /readyz passing and the default namespace existing. (The ready line's own `bringUpMs`
   * starts later, at main(), and is in `processBringUpMs`.)
   */
  bringUpMs: number;
  processBringUpMs: number;
  /** The process's stderr (klog, etcd): `dataDir/controlplane.log`, appended to across restarts. */
  logFile: string;
  /** Graceful shutdown (SIGTERM: apiserver, then etcd); SIGKILL after a grace period. Idempotent. */
  stop(): Promise<void>;
}

export interface StartControlPlaneOptions {
  /** etcd data, certificates and the kubeconfig live here; a restart on the same dir keeps objects. */
  dataDir: string;
  /** Secure port on 127.0.0.1; 0 or absent picks a free one. */
  port?: number;
  log?: (msg: string) => void;
  /** How long to wait for the ready line (default 120 s). */
  readyTimeoutMs?: number;
  /** How long stop() waits after SIGTERM before SIGKILL (default 20 s). */
  stopGraceMs?: number;
  /** Extra kube-apiserver flags, e.g. `['--profiling=true']` (later flags win). */
  apiserverFlags?: string[];
  /**
   * Serve nodes: listen on every address of the network namespace and advertise this one as the
   * `kubernetes` Service's endpoint, with ServiceAccount admission on (`--advertise-address`).
   */
  advertiseAddress?: string;
  /** Run the namespace controller and garbage collector in-process (default true). */
  controllers?: boolean;
  /** A network namespace (e.g. `/run/netns/NAME`) to run in, entered with nsenter(1). */
  netns?: string;
}

interface ReadyLine {
  ready: boolean;
  server: string;
  kubeconfig: string;
  bringUpMs: number;
}

/** Children still running, killed synchronously if this process exits without stopping them. */
const running = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: SIGTERM is all we can do; the Go side also exits when
  // its parent dies (PR_SET_PDEATHSIG), which covers SIGKILL of this process.
  process.on('exit', () => {
    for (const child of running) child.kill('SIGTERM');
  });
}

function validate(opts: StartControlPlaneOptions): void {
  if (typeof opts?.dataDir !== 'string' || opts.dataDir.length === 0) {
    throw new TypeError(`dataDir must be a non-empty directory path, got ${JSON.stringify(opts?.dataDir)}`);
  }
  const port = opts.port;
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new TypeError(`port must be an integer 0-65535 (0 picks a free port), got ${JSON.stringify(port)}`);
  }
}

/** Last `bytes` of the process's stderr log, for error messages. */
async function logTail(path: string, bytes = 3000): Promise<string> {
  try {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const start = Math.max(0, size - bytes);
      const buf = Buffer.alloc(size - start);
      await fh.read(buf, 0, buf.length, start);
      return buf.toString('utf8');
    } finally {
      await fh.close();
    }
  } catch {
    return '(no log)';
  }
}

export async function startControlPlane(opts: StartControlPlaneOptions): Promise<ControlPlane> {
  validate(opts);
  const log = opts.log ?? (() => {});
  const dataDir = resolve(opts.dataDir);
  const readyTimeoutMs = opts.readyTimeoutMs ?? 120_000;
  const stopGraceMs = opts.stopGraceMs ?? 20_000;
  const { path: binary } = await ensureControlPlaneBinary({ log });

  // The data dir holds the CA key, the admin token and etcd's socket and data: its owner's only.
  privateDir(dataDir);
  // stderr goes to a file, not a pipe: a parent whose event loop is busy (a spawnSync, a long
  // synchronous test step) must never be able to stall the apiserver on a full pipe.
  const logPath = join(dataDir, 'controlplane.log');
  const logFd = openPrivateAppend(logPath);
  const args = ['--data-dir', dataDir, '--port', String(opts.port ?? 0)];
  for (const flag of opts.apiserverFlags ?? []) args.push(`--apiserver-flag=${flag}`);
  if (opts.advertiseAddress !== undefined) args.push(`--advertise-address=${opts.advertiseAddress}`);
  if (opts.controllers === false) args.push('--controllers=false');
  // nsenter joins the namespace and execs the binary (no fork for a network namespace), so the
  // pid, the session and the parent-death signal are the control plane's own.
  const [command, argv] = opts.netns
    ? ['nsenter', [`--net=${opts.netns}`, '--', binary, ...args]]
    : [binary, args];
  let child: ChildProcess;
  let spawnedAt: number;
  try {
    // Own session and process group (setsid): a Ctrl-C in the terminal must not reach the control
    // plane directly, or the parent's stop() would deliver a second signal, which kube-apiserver
    // answers with an immediate exit(1) (genericapiserver.SetupSignalContext). The parent owns the
    // lifecycle; if it dies, the child's parent-death signal stops it.
    spawnedAt = performance.now();
    child = spawn(command, argv, { stdio: ['ignore', 'pipe', logFd], detached: true });
  } finally {
    closeSync(logFd);
  }
  installExitHook();
  running.add(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      res({ code, signal });
    });
    // spawn(2) itself failed (EACCES, ENOENT after a cache wipe): 'exit' never comes.
    child.once('error', (err) => {
      running.delete(child);
      log(`cannot run ${binary}: ${err.message}`);
      res({ code: null, signal: null });
    });
  });
  // Nothing keeps this process alive on the control plane's account; the exit hook and the
  // child's own parent-death signal take care of it.
  child.unref();

  let ready: ReadyLine;
  try {
    ready = await readReadyLine(child, exited, readyTimeoutMs);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    const tail = await logTail(logPath);
    throw new Error(
      `control plane in ${dataDir} did not become ready: ${(err as Error).message}\n--- tail of ${logPath} ---\n${tail}`,
      { cause: err },
    );
  }
  const bringUpMs = Math.round(performance.now() - spawnedAt);
  log(`control plane ready at ${ready.server} in ${bringUpMs} ms (pid ${child.pid})`);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        log(`control plane pid ${child.pid} still running ${stopGraceMs} ms after SIGTERM; SIGKILL`);
        child.kill('SIGKILL');
      }, stopGraceMs);
      const { code, signal } = await exited;
      clearTimeout(timer);
      if (code !== 0) {
        log(`control plane pid ${child.pid} exited with ${signal ? `signal ${signal}` : `code ${code}`}`);
      }
    })();
    return stopping;
  };

  return {
    server: ready.server,
    kubeconfig: ready.kubeconfig,
    dataDir,
    pid: child.pid as number,
    bringUpMs,
    processBringUpMs: ready.bringUpMs,
    logFile: logPath,
    stop,
  };
}

function readReadyLine(
  child: ChildProcess,
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
  timeoutMs: number,
): Promise<ReadyLine> {
  const stdout = child.stdout;
  if (!stdout) return Promise.reject(new Error('child has no stdout pipe'));
  return new Promise<ReadyLine>((res, rej) => {
    let buffered = '';
    const timer = setTimeout(() => {
      rej(new Error(`no ready line on stdout within ${timeoutMs} ms`));
    }, timeoutMs);
    const onData = (chunk: string): void => {
      buffered += chunk;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      const line = buffered.slice(0, nl);
      stdout.off('data', onData);
      clearTimeout(timer);
      // Keep draining: the Go side must never see EPIPE on stdout.
      stdout.resume();
      try {
        const parsed = JSON.parse(line) as ReadyLine;
        if (
          parsed.ready !== true ||
          typeof parsed.server !== 'string' ||
          typeof parsed.kubeconfig !== 'string'
        ) {
          throw new Error('fields ready/server/kubeconfig missing');
        }
        res(parsed);
      } catch (err) {
        rej(new Error(`expected a JSON ready line on stdout, got ${JSON.stringify(line)}`, { cause: err }));
      }
    };
    stdout.setEncoding('utf8');
    stdout.on('data', onData);
    // The pipe must not keep the event loop alive either (see child.unref()).
    (stdout as unknown as { unref?: () => void }).unref?.();
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      rej(
        new Error(
          `process exited before it was ready (${signal ? `signal ${signal}` : `exit code ${code}`})`,
        ),
      );
    });
  });
}
