/**
 * The few kernel operations the supervisor needs, as an interface over node-runtime/native, so
 * tests of the engine and other embedders can see exactly what it relies on.
 */
import * as native from '../native/index.ts';

export type { ExitStatus, Spawned, SpawnRequest } from '../native/index.ts';

export interface ProcessApi {
  spawn(req: native.SpawnRequest): native.Spawned;
  /** spawn() with the wait for the exec off the event loop. */
  spawnAsync(req: native.SpawnRequest): Promise<native.Spawned>;
  /** Calls back once on exit and then closes the pidfd itself; the canceller leaves it open. */
  watchExit(
    pidfd: number,
    cb: (status: native.ExitStatus) => void,
    options?: { exitStatusFile?: string },
  ): () => void;
  sendSignal(pidfd: number, signal: string): void;
  pidfdOpen(pid: number): number;
  closeFd(fd: number): void;
  processStartTime(pid: number): bigint | null;
  /** orrery-init's record of the workload's exit, if it wrote one. */
  readExitStatusFile(path: string): native.ExitStatus | null;
  /** A connected TCP socket fd made inside the network namespace of the process (probes). */
  netnsConnect(
    pidfd: number,
    pid: number,
    target: { host: string; port: number; timeoutMs: number },
  ): Promise<number>;
}

/** Shape of the addon's SpawnError (and of CommandNotFoundError). */
export interface SpawnFailure {
  code?: string;
  errno?: number;
  step?: string;
  path?: string;
  message: string;
}

export async function loadProcessApi(): Promise<ProcessApi> {
  return {
    spawn: native.spawn,
    spawnAsync: native.spawnAsync,
    watchExit: native.watchExit,
    sendSignal: (pidfd, signal) => native.sendSignal(pidfd, signal as NodeJS.Signals),
    pidfdOpen: native.pidfdOpen,
    closeFd: native.closeFd,
    processStartTime: native.processStartTime,
    readExitStatusFile: native.readExitStatusFile,
    netnsConnect: native.netnsConnect,
  };
}
