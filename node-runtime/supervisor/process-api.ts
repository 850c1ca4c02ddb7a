/**
 * The few kernel operations the supervisor needs, as an interface, so the supervision code does
 * not depend on the addon's loading details. `loadProcessApi()` binds it to node-runtime/native.
 */
export type NamespaceName = 'pid' | 'mount' | 'uts' | 'ipc' | 'net';

export interface SpawnRequest {
  file: string;
  argv: string[];
  env: string[];
  cwd?: string;
  namespaces: NamespaceName[];
  hostname?: string;
  init?: boolean;
  cgroup?: { v2Dir?: string; procsFiles?: string[] };
  logFile: string;
  uid?: number;
  gid?: number;
  noNewPrivs?: boolean;
  exitStatusFile?: string;
}

export interface Spawned {
  pid: number;
  pidfd: number;
  startTime: bigint;
}

export interface ExitStatus {
  code: number | null;
  signal: string | null;
}

export interface ProcessApi {
  spawn(req: SpawnRequest): Spawned;
  watchExit(pidfd: number, cb: (status: ExitStatus) => void): () => void;
  sendSignal(pidfd: number, signal: string): void;
  pidfdOpen(pid: number): number;
  closeFd(fd: number): void;
  processStartTime(pid: number): bigint | null;
}

/** Error thrown by spawn when the workload could not be exec'd (mirrors the addon's SpawnError). */
export interface SpawnFailure {
  code?: string;
  errno?: number;
  step?: string;
  path?: string;
  message: string;
}

export async function loadProcessApi(): Promise<ProcessApi> {
  // A variable specifier: the addon's TypeScript entry may be absent while it is being built.
  const entry = '../native/index.ts';
  const native = (await import(entry)) as ProcessApi;
  return {
    spawn: (req) => native.spawn(req),
    watchExit: (pidfd, cb) => native.watchExit(pidfd, cb),
    sendSignal: (pidfd, sig) => native.sendSignal(pidfd, sig),
    pidfdOpen: (pid) => native.pidfdOpen(pid),
    closeFd: (fd) => native.closeFd(fd),
    processStartTime: (pid) => native.processStartTime(pid),
  };
}
