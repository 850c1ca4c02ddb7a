// TypeScript face of the native spawn/supervision addon (see README.md). Requests are validated
// and normalized here, once, at the edge (execa's habit); the C side trusts what it gets.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { constants } from 'node:os';
import { isAbsolute } from 'node:path';
import { packagePath } from '../../platform/package.ts';
import { readProcStat } from '../../platform/proc.ts';

export type Namespace = 'pid' | 'mount' | 'uts' | 'ipc' | 'net';

export interface SpawnRequest {
  file: string; // absolute path of the executable (the caller resolves PATH)
  argv: string[]; // argv[0] included
  env: string[]; // 'K=V' exactly as given, nothing added by the addon
  cwd?: string;
  namespaces: Namespace[]; // [] = none; 'net' gives a new net ns with only loopback (brought up)
  hostname?: string; // with 'uts'
  init?: boolean; // default: true when namespaces includes 'pid'
  // v2Dir: the CLONE_INTO_CGROUP target. procsFiles: files the child writes "0" to before execve,
  // i.e. joins as itself: v1 `tasks` (cheapest, see node-runtime/cgroups/README.md) or `cgroup.procs`.
  cgroup?: { v2Dir?: string; procsFiles?: string[] };
  logFile: string; // stdout and stderr both go here: opened by the child O_WRONLY|O_CREAT|O_APPEND, 0640
  uid?: number;
  gid?: number; // setgroups(0), setgid, setuid in the child (inside its user namespace, if any)
  // A new user namespace whose ids 0..size-1 are hostUid.. and hostGid.. on the host, written by
  // the parent before the child goes on (README.md "User namespace"). Without it the process
  // keeps the runtime's identity (host root) unless uid/gid drop it. no_new_privs is always set.
  userNamespace?: { hostUid: number; hostGid: number; size: number };
  // With 'mount': absolute paths covered by an empty read-only tmpfs in the new mount namespace
  // (the runtime's own directories); a missing one is skipped.
  maskPaths?: string[];
  // With 'mount': the directory that becomes the process's root (pivot_root, the runtime's root
  // detached), before /proc and maskPaths, which are then paths inside it; `file` and `cwd` are
  // too. A runtime in a container runs workloads on the node's filesystem this way (/host).
  root?: string;
  // With 'mount': volumes, each source directory (a runtime path) attached at target (a path inside
  // the root), nosuid and nodev, read-only when asked; after /proc and before maskPaths. The
  // parent makes each a detached mount (open_tree), so the child need not reach the source.
  /**
   * Volumes: `source` attached at `target` (a path inside `root` of the request). With `root`,
   * `source` is resolved below that directory (openat2 RESOLVE_IN_ROOT) and through no symbolic
   * link (RESOLVE_NO_SYMLINKS: ELOOP), as a hostPath volume must be. With `userNamespace` the
   * volumes are locked (README.md "Locked volumes"): root of the replica cannot remount one
   * read-write or unmount it.
   */
  binds?: { source: string; target: string; readOnly: boolean; root?: string }[];
  exitStatusFile?: string; // where orrery-init records the workload's real exit (README.md)
  // Join these namespaces of a running process instead of creating any (an exec probe entering
  // its replica, like `nsenter -t PID -i -u -n -p -m`). A process cannot enter a pid namespace
  // itself, only its children do: with 'pid' the workload is started inside it by the child,
  // which then becomes orrery-init outside it (init defaults to true), as nsenter forks.
  joinNamespacesOf?: { pidfd: number; pid: number; namespaces: Namespace[] };
}

export interface Spawned {
  pid: number;
  pidfd: number;
  startTime: bigint; // /proc/<pid>/stat field 22
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class SpawnError extends Error {
  code: string;
  errno: number;
  step: string;
  path?: string;

  constructor(errno: number, step: string, path?: string, options?: ErrorOptions) {
    const code = errnoName(errno);
    const kind = step === 'execve' ? 'ExecFailed' : 'SpawnFailed';
    const where = step === 'execve' ? '' : ` at ${step}`;
    super(`${kind}: ${code}${where}${path ? ` ${path}` : ''}`, options);
    this.name = 'SpawnError';
    this.code = code;
    this.errno = errno;
    this.step = step;
    if (path !== undefined) this.path = path;
  }
}

interface NativeSpawnResult {
  pid?: number;
  pidfd?: number;
  startTime?: bigint; // 0n when the addon could not tell
  errno?: number;
  step?: string | null;
  path?: string | null;
}

interface NativeBinding {
  spawn(req: Record<string, unknown>): NativeSpawnResult;
  spawnAsync(req: Record<string, unknown>): Promise<NativeSpawnResult>;
  watchExit(pidfd: number, cb: (code: number | null, signo: number | null, source: string) => void): number;
  cancelWatch(id: number): void;
  sendSignal(pidfd: number, signo: number): number;
  pidfdOpen(pid: number): number;
  closeFd(fd: number): number;
  mountTmpfs(target: string, options: string): number;
  unmount(target: string): number;
  remountReadOnly(target: string): number;
  writableClone(source: string): number;
  forceCloneFallback(level: number): void;
  spawnTrace(on: boolean): [string, number, number][];
  netnsConnect(
    pidfd: number,
    pid: number,
    host: string,
    port: number,
    timeoutMs: number,
  ): Promise<{ fd?: number; errno?: number; step?: string | null }>;
  kernelFeatures(): {
    clone3: boolean;
    cloneIntoCgroup: boolean;
    pidfdInfoExit: boolean;
    cgroupKill: boolean;
  };
}

const buildDir = `${packagePath('node-runtime', 'native', 'build', 'Release')}/`;
const native = loadBinding();

function loadBinding(): NativeBinding {
  const file = `${buildDir}orrery_native.node`;
  if (!existsSync(file)) {
    // npm skips a global package's install script unless allowed (--allow-scripts=orrery).
    throw new Error(
      `the native addon is not built (${file} is missing): run \`node ${packagePath('node-runtime', 'native', 'build.mjs')}\``,
    );
  }
  return createRequire(import.meta.url)(file) as NativeBinding;
}

/** Absolute path of the orrery-init helper built next to the addon. */
const initPath = `${buildDir}orrery-init`;

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));
const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
);
const namespaceNames: ReadonlySet<string> = new Set<Namespace>(['pid', 'mount', 'uts', 'ipc', 'net']);

function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

function describe(value: unknown): string {
  return `${JSON.stringify(value) ?? String(value)} (${value === null ? 'null' : typeof value})`;
}

function expectAbsolute(field: string, value: unknown): string {
  if (typeof value !== 'string' || !isAbsolute(value) || value.includes('\0')) {
    throw new TypeError(
      `SpawnRequest.${field} must be an absolute path without NUL bytes, got ${describe(value)}`,
    );
  }
  return value;
}

function expectStrings(
  field: string,
  value: unknown,
  check?: (s: string) => boolean,
  expected = 'strings',
): string[] {
  if (!Array.isArray(value))
    throw new TypeError(`SpawnRequest.${field} must be an array, got ${describe(value)}`);
  value.forEach((s, i) => {
    if (typeof s !== 'string' || s.includes('\0') || (check && !check(s))) {
      throw new TypeError(`SpawnRequest.${field}[${i}] must be one of ${expected}, got ${describe(s)}`);
    }
  });
  return value as string[];
}

function expectId(field: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xfffffffe) {
    throw new TypeError(`SpawnRequest.${field} must be an integer in 0..4294967294, got ${describe(value)}`);
  }
  return value;
}

function normalize(req: SpawnRequest): Record<string, unknown> {
  if (typeof req !== 'object' || req === null)
    throw new TypeError(`spawn() expects a SpawnRequest, got ${describe(req)}`);
  const file = expectAbsolute('file', req.file);
  const argv = expectStrings('argv', req.argv);
  if (argv.length === 0) throw new TypeError('SpawnRequest.argv must hold at least argv[0], got []');
  const env = expectStrings('env', req.env, (s) => s.includes('='), "'KEY=VALUE' strings");
  const namespaces = expectStrings(
    'namespaces',
    req.namespaces,
    (s) => namespaceNames.has(s),
    [...namespaceNames].join('|'),
  );
  if (req.hostname !== undefined) {
    if (typeof req.hostname !== 'string' || req.hostname.length === 0 || req.hostname.length > 64) {
      throw new TypeError(
        `SpawnRequest.hostname must be a string of 1..64 bytes, got ${describe(req.hostname)}`,
      );
    }
    if (!namespaces.includes('uts')) {
      throw new TypeError(
        "SpawnRequest.hostname needs 'uts' in namespaces (it would rename the host otherwise)",
      );
    }
  }
  const join = req.joinNamespacesOf;
  const init = req.init ?? (namespaces.includes('pid') || (join?.namespaces?.includes('pid') ?? false));
  const procsFiles = req.cgroup?.procsFiles ?? [];
  if (join !== undefined) {
    for (const key of ['pidfd', 'pid'] as const) {
      if (!Number.isInteger(join?.[key]) || join[key] < 0)
        throw new TypeError(
          `SpawnRequest.joinNamespacesOf.${key} must be a non-negative integer, got ${describe(join?.[key])}`,
        );
    }
    expectStrings(
      'joinNamespacesOf.namespaces',
      join.namespaces,
      (s) => namespaceNames.has(s),
      [...namespaceNames].join('|'),
    );
    if (namespaces.length > 0)
      throw new TypeError('SpawnRequest.joinNamespacesOf joins existing namespaces: namespaces must be []');
    if (join.namespaces.includes('pid') && !init)
      throw new TypeError(
        "SpawnRequest.joinNamespacesOf with 'pid' needs init (only a child can enter a pid namespace)",
      );
  }
  expectStrings('cgroup.procsFiles', procsFiles, isAbsolute, 'absolute paths');
  const maskPaths = req.maskPaths ?? [];
  expectStrings('maskPaths', maskPaths, isAbsolute, 'absolute paths');
  if (maskPaths.length > 0 && !namespaces.includes('mount'))
    throw new TypeError(
      "SpawnRequest.maskPaths needs 'mount' in namespaces (it would cover the host's paths otherwise)",
    );
  const binds = req.binds ?? [];
  if (!Array.isArray(binds) || binds.length > 32)
    throw new TypeError(`SpawnRequest.binds must be an array of at most 32 volumes, got ${describe(binds)}`);
  binds.forEach((b, i) => {
    expectAbsolute(`binds[${i}].source`, b?.source);
    expectAbsolute(`binds[${i}].target`, b?.target);
    if (b.root !== undefined) expectAbsolute(`binds[${i}].root`, b.root);
  });
  if (binds.length > 0 && !namespaces.includes('mount'))
    throw new TypeError(
      "SpawnRequest.binds needs 'mount' in namespaces (it would mount on the host otherwise)",
    );
  if (req.root !== undefined) {
    expectAbsolute('root', req.root);
    if (!namespaces.includes('mount'))
      throw new TypeError(
        "SpawnRequest.root needs 'mount' in namespaces (it would move the runtime's own root)",
      );
  }
  const userns = userNamespaceFields(req.userNamespace);
  for (const id of ['uid', 'gid'] as const) {
    const v = req[id];
    if (userns.userNsSize !== undefined && v !== undefined && v >= userns.userNsSize)
      throw new TypeError(
        `SpawnRequest.${id} must be below userNamespace.size (${userns.userNsSize}): it is an id inside the namespace, got ${v}`,
      );
  }
  return {
    file,
    argv,
    env,
    cwd: req.cwd === undefined ? undefined : expectAbsolute('cwd', req.cwd),
    namespaces,
    hostname: req.hostname,
    init,
    initPath: init ? initPath : undefined,
    v2Dir: req.cgroup?.v2Dir === undefined ? undefined : expectAbsolute('cgroup.v2Dir', req.cgroup.v2Dir),
    procsFiles,
    maskPaths,
    bindSources: binds.map((b) => b.source),
    bindTargets: binds.map((b) => b.target),
    bindModes: binds.map((b) => (b.readOnly ? 'ro' : 'rw')),
    bindRoots: binds.map((b) => b.root ?? ''),
    root: req.root,
    logFile: expectAbsolute('logFile', req.logFile),
    uid: expectId('uid', req.uid),
    gid: expectId('gid', req.gid),
    ...userns,
    // orrery-init's record: without init nobody writes it, so it is not created either.
    exitStatusFile:
      req.exitStatusFile === undefined || !init
        ? undefined
        : expectAbsolute('exitStatusFile', req.exitStatusFile),
    ...(join ? { joinPidfd: join.pidfd, joinPid: join.pid, joinNamespaces: join.namespaces } : {}),
  };
}

function userNamespaceFields(userns: SpawnRequest['userNamespace']): Record<string, number> {
  if (userns === undefined) return {};
  const hostUid = expectId('userNamespace.hostUid', userns?.hostUid);
  const hostGid = expectId('userNamespace.hostGid', userns?.hostGid);
  const size = userns?.size;
  if (hostUid === undefined || hostGid === undefined || !Number.isInteger(size) || size < 1)
    throw new TypeError(
      `SpawnRequest.userNamespace must be {hostUid, hostGid, size >= 1} integers, got ${describe(userns)}`,
    );
  if (hostUid + size > 0xffffffff || hostGid + size > 0xffffffff)
    throw new TypeError(`SpawnRequest.userNamespace range ends past 4294967294, got ${describe(userns)}`);
  return { userNsHostUid: hostUid, userNsHostGid: hostGid, userNsSize: size };
}

// pidfd -> orrery-init status file, so watchExit can report the workload's own exit.
const statusFiles = new Map<number, string>();

/** Start a process; returns once it has exec'd (or throws SpawnError saying which step failed). */
export function spawn(req: SpawnRequest): Spawned {
  const normalized = normalize(req);
  return spawned(normalized, native.spawn(normalized));
}

/**
 * spawn() off the event loop: the clone and the wait for the exec run on a libuv threadpool
 * thread, so a runtime starting many replicas keeps serving its API, watches and status writes
 * meanwhile. Same request, result and errors (a bad request rejects with the same TypeError).
 */
export async function spawnAsync(req: SpawnRequest): Promise<Spawned> {
  const normalized = normalize(req);
  return spawned(normalized, await native.spawnAsync(normalized));
}

function spawned(normalized: Record<string, unknown>, res: NativeSpawnResult): Spawned {
  if (res.pid === undefined || res.pidfd === undefined) {
    throw new SpawnError(res.errno ?? 0, res.step ?? 'unknown', res.path ?? undefined);
  }
  if (normalized.init && typeof normalized.exitStatusFile === 'string') {
    statusFiles.set(res.pidfd, normalized.exitStatusFile);
  }
  // The addon derives it from the clock around clone (spawn.c, start_time_of); the process exists
  // until we reap it (we hold the only waiter), so its stat line is there if that failed.
  const startTime = res.startTime || (processStartTime(res.pid) ?? 0n);
  return { pid: res.pid, pidfd: res.pidfd, startTime };
}

/**
 * Parse an orrery-init exit record ("exited CODE" / "killed SIGNAME"); null when the file is
 * missing or empty (init itself was killed before it could write, e.g. by cgroup.kill).
 */
export function readExitStatusFile(path: string): ExitStatus | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
  const m = /^(exited|killed) (\S+)$/.exec(text);
  if (!m || m[2] === undefined) return null;
  if (m[1] === 'exited') {
    const code = Number(m[2]);
    return Number.isInteger(code) ? { code, signal: null } : null;
  }
  const n = Number(m[2]);
  const signal = Number.isInteger(n) ? (signalNames.get(n) ?? null) : (m[2] as NodeJS.Signals);
  return { code: null, signal };
}

/**
 * Where an exit status came from: waitid(P_PIDFD) on our own child; for a process that is not our
 * child, the zombie's /proc/<pid>/stat exit_code (before its parent reaps it) or PIDFD_INFO_EXIT
 * (after); 'unknown' when neither is available (kernel < 6.15 and already reaped).
 */
export type ExitSource = 'waitid' | 'zombie-stat' | 'pidfd-info' | 'unknown';
export interface ExitDetail {
  source: ExitSource;
}

export interface WatchExitOptions {
  /** orrery-init's record for this process (defaults to the one given to spawn for this pidfd). */
  exitStatusFile?: string;
}

/**
 * Call onExit once when the process behind pidfd exits, then close the pidfd. Ref policy: an
 * active watch keeps Node's event loop alive (as a child_process handle does). The returned
 * function cancels the watch and leaves the pidfd open.
 */
export function watchExit(
  pidfd: number,
  onExit: (status: ExitStatus, detail: ExitDetail) => void,
  options: WatchExitOptions = {},
): () => void {
  const statusFile = options.exitStatusFile ?? statusFiles.get(pidfd);
  let active = true;
  const id = native.watchExit(pidfd, (code, signo, source) => {
    active = false;
    statusFiles.delete(pidfd);
    let status: ExitStatus = { code, signal: signo === null ? null : (signalNames.get(signo) ?? null) };
    // orrery-init exits 128+N after "killed SIG"; when init itself died by a signal (SIGKILL from
    // the runtime or cgroup.kill) its own status is the truth.
    if (statusFile !== undefined && code !== null) status = readExitStatusFile(statusFile) ?? status;
    onExit(status, { source: source as ExitSource });
  });
  return () => {
    if (!active) return;
    active = false;
    native.cancelWatch(id);
  };
}

/** pidfd_send_signal(2); a process that already exited (ESRCH) is not an error. */
export function sendSignal(pidfd: number, signal: NodeJS.Signals | number): void {
  const signo = typeof signal === 'number' ? signal : constants.signals[signal];
  if (signo === undefined || !Number.isInteger(signo) || signo < 0) {
    throw new TypeError(`sendSignal: signal must be a signal name or number, got ${describe(signal)}`);
  }
  const rc = native.sendSignal(pidfd, signo);
  if (rc < 0) throw new SpawnError(-rc, 'pidfd_send_signal');
}

/**
 * A TCP connection to host:port made inside the network namespace of the process behind `pidfd`
 * (`pid` is the same process, for kernels without setns on a pidfd): how the probes reach a
 * replica that has its own loopback-only network. Resolves with a connected, non-blocking socket
 * fd (wrap it with `new net.Socket({ fd })`); rejects with SpawnError, step `setns`, `address`,
 * `socket` or `connect` (`ETIMEDOUT` after timeoutMs). `host` must be a numeric IP address.
 */
export async function netnsConnect(
  pidfd: number,
  pid: number,
  target: { host: string; port: number; timeoutMs: number },
): Promise<number> {
  for (const [name, value] of [
    ['pidfd', pidfd],
    ['pid', pid],
  ] as const) {
    if (!Number.isInteger(value) || value < 0)
      throw new TypeError(`netnsConnect: ${name} must be a non-negative integer, got ${describe(value)}`);
  }
  if (isIP(target.host) === 0)
    throw new TypeError(
      `netnsConnect: host must be a numeric IP address (a replica's own network has no resolver), got ${describe(target.host)}`,
    );
  if (!Number.isInteger(target.port) || target.port < 1 || target.port > 65535)
    throw new TypeError(`netnsConnect: port must be an integer 1-65535, got ${describe(target.port)}`);
  if (!Number.isInteger(target.timeoutMs) || target.timeoutMs < 0)
    throw new TypeError(
      `netnsConnect: timeoutMs must be a non-negative integer, got ${describe(target.timeoutMs)}`,
    );
  const r = await native.netnsConnect(pidfd, pid, target.host, target.port, target.timeoutMs);
  if (r.fd === undefined)
    throw new SpawnError(r.errno ?? 0, r.step ?? 'connect', `${target.host}:${target.port}`);
  return r.fd;
}

/** pidfd_open(2) for re-adoption; throws SpawnError with code ESRCH when the pid is gone. */
export function pidfdOpen(pid: number): number {
  if (!Number.isInteger(pid) || pid <= 0)
    throw new TypeError(`pidfdOpen: pid must be a positive integer, got ${describe(pid)}`);
  const rc = native.pidfdOpen(pid);
  if (rc < 0) throw new SpawnError(-rc, 'pidfd_open');
  return rc;
}

export function closeFd(fd: number): void {
  statusFiles.delete(fd);
  const rc = native.closeFd(fd);
  if (rc < 0) throw new SpawnError(-rc, 'close');
}

/** Mounts a tmpfs (nosuid, nodev) at target with tmpfs's options, e.g. `size=1m,mode=0700,uid=5`. */
export function mountTmpfs(target: string, options: string): void {
  expectAbsolute('target', target);
  const rc = native.mountTmpfs(target, options);
  if (rc < 0) throw new SpawnError(-rc, 'mount-tmpfs', target);
}

/**
 * Makes the mount at `target` (a volume's tmpfs, in the runtime's mount namespace) read-only,
 * nosuid and nodev. A read-only volume bound from it in a user namespace is locked by the
 * kernel's copy of the mount namespace, without the spawn's mount helper (README.md, "Locked
 * volumes"): volumes/manager.ts keeps each replica's configMap and secret tmpfs so, and writes
 * through writableClone.
 */
export function remountReadOnly(target: string): void {
  expectAbsolute('target', target);
  const rc = native.remountReadOnly(target);
  if (rc < 0) throw new SpawnError(-rc, 'remount-read-only', target);
}

/**
 * A writable clone of the mount at `source`, attached nowhere: its files are reached through
 * `/proc/self/fd/<fd>`, and closeFd(fd) unmounts it. How the runtime writes a read-only tmpfs.
 */
export function writableClone(source: string): number {
  expectAbsolute('source', source);
  const fd = native.writableClone(source);
  if (fd < 0) throw new SpawnError(-fd, 'writable-clone', source);
  return fd;
}

/** Detaches the mount at target (umount2 MNT_DETACH); EINVAL (not a mount point) and ENOENT are not errors. */
export function unmount(target: string): void {
  const rc = native.unmount(target);
  if (rc < 0 && -rc !== 22 && -rc !== 2) throw new SpawnError(-rc, 'umount', target);
}

/** /proc/<pid>/stat field 22 (starttime, clock ticks since boot); null when the pid does not exist. */
export function processStartTime(pid: number): bigint | null {
  const stat = readProcStat(pid);
  return stat === undefined ? null : BigInt(stat.startTime);
}

export function kernelFeatures(): {
  clone3: boolean;
  cloneIntoCgroup: boolean;
  pidfdInfoExit: boolean;
  cgroupKill: boolean;
} {
  return native.kernelFeatures();
}

/** Which clone path spawn may use; tests exercise each fallback with it on a kernel that has all. */
export type CloneFallback = 'none' | 'no-into-cgroup' | 'no-clone3' | 'fork';

/** For tests and diagnostics: behave as if the kernel refused the faster paths (README.md). */
export function forceCloneFallback(level: CloneFallback): void {
  native.forceCloneFallback(['none', 'no-into-cgroup', 'no-clone3', 'fork'].indexOf(level));
}

/** One stamp of a traced spawn: `ns` on CLOCK_MONOTONIC (as process.hrtime), `cpu` the task ran on. */
export interface SpawnTracePoint {
  step: string;
  ns: number;
  cpu: number;
}

/**
 * For diagnostics and `bench/spawn.bench.ts --trace`: turns per-step tracing of spawn() on or off
 * and returns the stamps of the last traced spawn (README.md, "Where the time goes").
 */
export function spawnTrace(on: boolean): SpawnTracePoint[] {
  return native.spawnTrace(on).map(([step, ns, cpu]) => ({ step, ns, cpu }));
}
