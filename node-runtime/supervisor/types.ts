/**
 * Supervision vocabulary shared by the pure policy and the engine.
 * Mirrors Erlang/OTP's supervisor (https://www.erlang.org/doc/system/sup_princ.html):
 * restart types per child, a restart strategy per group, and a restart intensity.
 */

/** OTP restart types: permanent is always restarted, transient only after an abnormal exit, temporary never. */
export type RestartType = 'permanent' | 'transient' | 'temporary';

/** OTP restart strategies over the ordered group of processes of one replica. */
export type SupervisionStrategy = 'one-for-one' | 'one-for-all' | 'rest-for-one';

export interface BackoffSpec {
  initialSeconds: number;
  maxSeconds: number;
}

export interface SupervisionSpec {
  strategy: SupervisionStrategy;
  /** More than this many restarts within `periodSeconds` sends the replica to CrashLoopBackOff. */
  maxRestarts: number;
  periodSeconds: number;
  backoff: BackoffSpec;
}

/** Why a process stopped, as reported in `lastExit.reason` (docs/DESIGN.md §3.3). */
export type ExitReason = 'Completed' | 'Error' | 'OOMKilled' | 'ExecFailed' | 'Killed';

/** The facts the policy needs about one exit. */
export interface ExitFacts {
  /** Exit code when the process exited, else null. */
  code: number | null;
  /** Signal name (e.g. 'SIGKILL') when the process was killed by a signal, else null. */
  signal: string | null;
  /** The runtime itself asked this process to stop (stop signal of a stop or of a strategy restart). */
  stopRequested: boolean;
  /** The exec never happened (binary missing, permission denied). Always abnormal. */
  execFailed?: boolean;
  /** The runtime killed it because its liveness probe failed: abnormal even though we sent the signal. */
  livenessFailed?: boolean;
  /** The kernel OOM killer killed it (cgroup oom_kill counter went up). Always abnormal. */
  oomKilled?: boolean;
}
