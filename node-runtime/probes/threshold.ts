/**
 * The kubelet's result counting (pkg/kubelet/prober/worker.go): a probe's status flips only after
 * `successThreshold` consecutive successes or `failureThreshold` consecutive failures.
 */
export interface ThresholdState {
  /** Current verdict: undefined before the first flip (readiness starts "not ready", liveness "alive"). */
  healthy: boolean | undefined;
  successes: number;
  failures: number;
}

export function initialThreshold(): ThresholdState {
  return { healthy: undefined, successes: 0, failures: 0 };
}

/** Fold one result in; `changed` is true when the verdict flipped (or was set for the first time). */
export function recordResult(
  state: ThresholdState,
  ok: boolean,
  thresholds: { successThreshold: number; failureThreshold: number },
): { state: ThresholdState; changed: boolean } {
  const successes = ok ? state.successes + 1 : 0;
  const failures = ok ? 0 : state.failures + 1;
  let healthy = state.healthy;
  if (ok && successes >= thresholds.successThreshold) healthy = true;
  if (!ok && failures >= thresholds.failureThreshold) healthy = false;
  return { state: { healthy, successes, failures }, changed: healthy !== state.healthy };
}
