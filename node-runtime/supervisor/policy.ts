/**
 * Pure supervision decisions: functions of (spec, state, event, now), no processes, no timers.
 *
 * Semantics follow Erlang/OTP's supervisor
 * (https://www.erlang.org/doc/apps/stdlib/supervisor.html):
 * - restart types: permanent always, transient only after an abnormal exit, temporary never;
 * - strategies: one-for-one restarts the one, one-for-all stops the others (reverse start order)
 *   and restarts all in order, rest-for-one does the same for the processes started after it;
 * - temporary siblings stopped by one-for-all/rest-for-one are not restarted ("a temporary child
 *   is never restarted, even when a sibling's death causes it to be terminated");
 * - transient siblings that had finished normally are started again with their group (OTP keeps
 *   their child spec and `start_children` starts the whole list);
 * - intensity: more than maxRestarts restarts within periodSeconds. Where OTP would terminate
 *   the supervisor (and let its parent restart it), we stop the whole replica and start it again
 *   after an exponential delay, the Kubernetes CrashLoopBackOff.
 * Restarts within the intensity are immediate (no delay).
 */
import type { ExitFacts, ExitReason, RestartType, SupervisionSpec } from './types.ts';

/** What the policy needs to know about each process of the group, in start order. */
export interface ProcessView {
  restart: RestartType;
  /** The process currently has a live pid (it would have to be stopped before a group restart). */
  alive: boolean;
}

export interface IntensityState {
  /** Times (ms) of the restarts inside the current intensity window, oldest first. */
  restarts: number[];
  /** CrashLoopBackOff entries since the last stable run; the exponent of the next delay. */
  crashLoops: number;
  /** When the group was last started from scratch (first start or end of a backoff), ms. */
  groupStartedAt: number;
}

export type ExitDecision =
  /** Nothing to do: the process stays down, siblings are untouched. */
  | { action: 'none'; why: 'temporary' | 'normal-exit' }
  /** Stop `stop` (indices, in this order: reverse start order), then start `start` (in order) now. */
  | { action: 'restart'; stop: number[]; start: number[] }
  /** Intensity exceeded: stop `stop` (all live, reverse order) and start everything after `delayMs`. */
  | { action: 'backoff'; stop: number[]; delayMs: number };

export function initialIntensity(now: number): IntensityState {
  return { restarts: [], crashLoops: 0, groupStartedAt: now };
}

/**
 * Abnormal in OTP terms: anything but a clean exit(0) or the death by the signal we sent.
 * Exec failures, OOM kills and liveness kills are abnormal whatever the status says.
 */
export function isAbnormalExit(exit: ExitFacts): boolean {
  if (exit.execFailed || exit.oomKilled || exit.livenessFailed) return true;
  if (exit.signal !== null) return !exit.stopRequested;
  return exit.code !== 0;
}

function shouldRestart(restart: RestartType, exit: ExitFacts): boolean {
  switch (restart) {
    case 'permanent':
      return true;
    case 'transient':
      return isAbnormalExit(exit);
    case 'temporary':
      return false;
  }
}

/** The `lastExit.reason` reported for an exit (docs/DESIGN.md §3.3). */
export function exitReason(exit: ExitFacts): ExitReason {
  if (exit.execFailed) return 'ExecFailed';
  if (exit.oomKilled) return 'OOMKilled';
  if (exit.signal !== null) return 'Killed';
  return exit.code === 0 ? 'Completed' : 'Error';
}

/** Indices affected by a restart of `index` under `strategy`, in start order. */
function affectedIndices(strategy: SupervisionSpec['strategy'], count: number, index: number): number[] {
  switch (strategy) {
    case 'one-for-one':
      return [index];
    case 'one-for-all':
      return range(0, count);
    case 'rest-for-one':
      return range(index, count);
  }
}

/**
 * A run counts as stable (and the backoff exponent resets) when the group has been up longer than
 * one intensity period since it was last started from scratch: by then every restart it made has
 * left the window, which is the OTP notion of a fresh supervisor.
 */
function stableRunMs(spec: SupervisionSpec): number {
  return spec.periodSeconds * 1000;
}

/** Delay before the replica is started again after its `crashLoops`-th consecutive CrashLoopBackOff. */
export function backoffDelayMs(spec: SupervisionSpec, crashLoops: number): number {
  const seconds = Math.min(spec.backoff.initialSeconds * 2 ** crashLoops, spec.backoff.maxSeconds);
  return Math.round(seconds * 1000);
}

/**
 * Decide what follows the exit of process `index`. `processes[index].alive` is ignored (it just
 * exited). Returns the decision and the next intensity state.
 */
export function decideOnExit(
  spec: SupervisionSpec,
  processes: readonly ProcessView[],
  state: IntensityState,
  index: number,
  exit: ExitFacts,
  now: number,
): { decision: ExitDecision; state: IntensityState } {
  const self = processes[index];
  if (self === undefined)
    throw new RangeError(`process index ${index} is not in a group of ${processes.length}`);
  if (!shouldRestart(self.restart, exit)) {
    return {
      decision: { action: 'none', why: self.restart === 'temporary' ? 'temporary' : 'normal-exit' },
      state,
    };
  }

  const windowStart = now - spec.periodSeconds * 1000;
  const restarts = [...state.restarts.filter((t) => t > windowStart), now];
  const alive = (i: number) => i !== index && processes[i]?.alive === true;

  if (restarts.length > spec.maxRestarts) {
    const crashLoops = now - state.groupStartedAt > stableRunMs(spec) ? 0 : state.crashLoops;
    const stop = range(0, processes.length).filter(alive).reverse();
    return {
      decision: { action: 'backoff', stop, delayMs: backoffDelayMs(spec, crashLoops) },
      state: { restarts: [], crashLoops: crashLoops + 1, groupStartedAt: state.groupStartedAt },
    };
  }

  const affected = affectedIndices(spec.strategy, processes.length, index);
  const stop = affected.filter(alive).reverse();
  const start = affected.filter((i) => i === index || processes[i]?.restart !== 'temporary');
  return { decision: { action: 'restart', stop, start }, state: { ...state, restarts } };
}

/** State after a backoff delay ran out and the whole group is started again. */
export function afterBackoff(state: IntensityState, now: number): IntensityState {
  return { restarts: [], crashLoops: state.crashLoops, groupStartedAt: now };
}

/**
 * Terminal phase of a group where no process is alive and none is waiting to be started:
 * Succeeded when every process's last exit completed cleanly, else Failed (Kubernetes pod phases).
 */
export function finishedPhase(lastReasons: readonly (ExitReason | null)[]): 'Succeeded' | 'Failed' {
  return lastReasons.every((r) => r === 'Completed') ? 'Succeeded' : 'Failed';
}

function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = from; i < to; i++) out.push(i);
  return out;
}
