/**
 * The Kubernetes HorizontalPodAutoscaler's algorithm (pkg/controller/podautoscaler), for an
 * Instance's `spec.autoscale` on CPU utilisation. Pure: samples and a clock in, a replica count
 * and the reasons out; the controller feeds it metrics from the hosts and writes the result
 * through the scale subresource.
 *
 * 1. The raw recommendation: ratio = average utilisation / target over the ready replicas with a
 *    sample; within the tolerance (10 %) nothing changes. Replicas without a sample count, as the
 *    HPA counts them, at 0 % when scaling up and at 100 % of the target when scaling down;
 *    replicas not ready count at 0 % when scaling up (and are left out when scaling down). When
 *    counting them reverses the direction or brings the ratio within the tolerance, nothing
 *    changes. desired = ceil(ratio × replicas counted).
 * 2. Stabilisation: scaling down takes the highest recommendation of the last
 *    `scaleDownStabilizationSeconds` (default 300 s), scaling up the lowest of the last
 *    `scaleUpStabilizationSeconds` (default 0): a dip or a spike alone moves nothing.
 * 3. Rate: per 15 s, up by at most max(4 replicas, 100 %), down by at most 100 %, counted from
 *    the replicas there were at the start of the period (the HPA's default behavior policies).
 * 4. Within [minReplicas, maxReplicas].
 */

export const DEFAULT_TOLERANCE = 0.1;
export const DEFAULT_SCALE_DOWN_STABILIZATION_S = 300;
export const DEFAULT_SCALE_UP_STABILIZATION_S = 0;
/** The default policies' period and sizes: up max(4 pods, 100 %) per 15 s, down 100 % per 15 s. */
export const POLICY_PERIOD_S = 15;
const SCALE_UP_PODS = 4;
const SCALE_UP_PERCENT = 100;
const SCALE_DOWN_PERCENT = 100;

/** One replica as the autoscaler sees it. */
export interface ReplicaSample {
  name: string;
  ready: boolean;
  /** CPU used over the last window, millicores; undefined: no sample (yet). */
  cpuMillis: number | undefined;
}

export interface AutoscaleSpec {
  minReplicas: number;
  maxReplicas: number;
  scaleDownStabilizationSeconds?: number | undefined;
  scaleUpStabilizationSeconds?: number | undefined;
}

export interface Recommendation {
  /** The replica count this round asks for (before stabilisation and rate limits). */
  desired: number;
  /** The metric's average over the ready replicas with a sample (CPU: percent of the request); undefined with none. */
  utilization: number | undefined;
  /** Why nothing changed, or how the count was reached (for Events and conditions). */
  reason: string;
}

/** Step 1: the raw recommendation for `current` replicas each requesting `requestMillis`. */
export function recommend(
  current: number,
  samples: readonly ReplicaSample[],
  requestMillis: number,
  target: number,
  tolerance = DEFAULT_TOLERANCE,
): Recommendation {
  // Utilisation is the average of each replica's use as a percentage of its request.
  const perReplica = samples.map((s) => ({
    ready: s.ready,
    value: s.cpuMillis === undefined ? undefined : (s.cpuMillis * 100) / requestMillis,
  }));
  return recommendAverage(current, perReplica, target, { unit: '%', what: 'a CPU sample' }, tolerance);
}

/** One replica's value of a metric averaged over the replicas (CPU %, requests/s). */
export interface MetricSample {
  ready: boolean;
  /** undefined: no sample (yet). */
  value: number | undefined;
}

/**
 * Step 1 for any metric whose target is an average per replica (the HPA's resource utilisation
 * and its Pods metrics with an AverageValue target): ratio = average / target, within the
 * tolerance no change; replicas without a sample or not ready assumed conservatively, as the HPA
 * does (at 0 when scaling up, at the target when scaling down, not ready ones left out then).
 */
export function recommendAverage(
  current: number,
  samples: readonly MetricSample[],
  target: number,
  units: { unit: string; what: string },
  tolerance = DEFAULT_TOLERANCE,
): Recommendation {
  const { unit } = units;
  const measured = samples.filter((s) => s.ready && s.value !== undefined);
  if (measured.length === 0)
    return { desired: current, utilization: undefined, reason: `no ready replica has ${units.what} yet` };
  const used = measured.reduce((sum, s) => sum + (s.value as number), 0);
  const utilization = used / measured.length;
  const ratio = utilization / target;
  const missing = samples.filter((s) => s.ready && s.value === undefined).length;
  const unready = samples.filter((s) => !s.ready).length;
  if (missing === 0 && unready === 0) {
    if (Math.abs(ratio - 1) <= tolerance)
      return {
        desired: current,
        utilization,
        reason: `within tolerance (${fmt(utilization)}${unit} of ${target}${unit})`,
      };
    return {
      desired: Math.ceil(ratio * measured.length),
      utilization,
      reason: `${fmt(utilization)}${unit} over ${measured.length} replicas, target ${target}${unit}`,
    };
  }
  if (Math.abs(ratio - 1) <= tolerance)
    return {
      desired: current,
      utilization,
      reason: `within tolerance (${fmt(utilization)}${unit} of ${target}${unit})`,
    };
  // The HPA's conservative assumptions for the replicas it cannot measure.
  let assumedUsed = used;
  let counted = measured.length;
  if (ratio > 1) {
    // Scaling up: missing and not-ready replicas as if they used nothing.
    counted += missing + unready;
  } else {
    // Scaling down: missing replicas as if exactly at the target; not-ready ones left out.
    assumedUsed += missing * target;
    counted += missing;
  }
  const newRatio = assumedUsed / counted / target;
  if (Math.abs(newRatio - 1) <= tolerance || ratio > 1 !== newRatio > 1)
    return {
      desired: current,
      utilization,
      reason: `no change once ${missing + unready} replicas without a sample or not ready are counted`,
    };
  return {
    desired: Math.ceil(newRatio * counted),
    utilization,
    reason: `${fmt(utilization)}${unit} over ${measured.length} measured of ${counted} counted, target ${target}${unit}`,
  };
}

function fmt(n: number): string {
  return n >= 10 ? n.toFixed(0) : n.toFixed(1);
}

/** A recommendation or a scale made at a time (seconds, monotonic). */
interface Stamped {
  at: number;
  replicas: number;
}

/** Steps 2 to 4 for one Instance, across rounds: the history the HPA keeps per target. */
export class ScaleHistory {
  readonly #recommendations: Stamped[] = [];
  /** Scale changes made: at, and the count before and after. */
  readonly #changes: { at: number; from: number; to: number }[] = [];

  /**
   * The replica count to set now, from this round's raw recommendation, `current` replicas, the
   * spec and the time `now` (seconds); records the recommendation.
   */
  decide(
    now: number,
    current: number,
    raw: number,
    spec: AutoscaleSpec,
  ): { replicas: number; limitedBy: string | undefined } {
    const downWindow = spec.scaleDownStabilizationSeconds ?? DEFAULT_SCALE_DOWN_STABILIZATION_S;
    const upWindow = spec.scaleUpStabilizationSeconds ?? DEFAULT_SCALE_UP_STABILIZATION_S;
    this.#recommendations.push({ at: now, replicas: raw });
    const keep = Math.max(downWindow, upWindow, POLICY_PERIOD_S);
    while ((this.#recommendations[0]?.at ?? now) < now - keep) this.#recommendations.shift();
    while ((this.#changes[0]?.at ?? now) < now - POLICY_PERIOD_S) this.#changes.shift();

    let desired = raw;
    let limitedBy: string | undefined;
    // Stabilisation: down to the highest recommendation in the down window, up to the lowest in the up window.
    const inWindow = (w: number) =>
      this.#recommendations.filter((r) => r.at >= now - w).map((r) => r.replicas);
    if (desired < current) {
      const highest = Math.max(...inWindow(downWindow));
      if (highest > desired) {
        desired = Math.min(current, highest);
        limitedBy = `scale-down stabilization window (${downWindow} s)`;
      }
    } else if (desired > current && upWindow > 0) {
      const lowest = Math.min(...inWindow(upWindow));
      if (lowest < desired) {
        desired = Math.max(current, lowest);
        limitedBy = `scale-up stabilization window (${upWindow} s)`;
      }
    }
    // Rate: from the count at the start of the period.
    const added = this.#changes.reduce((n, c) => n + Math.max(0, c.to - c.from), 0);
    const removed = this.#changes.reduce((n, c) => n + Math.max(0, c.from - c.to), 0);
    if (desired > current) {
      const start = current - added;
      const limit = Math.max(start + SCALE_UP_PODS, Math.floor((start * (100 + SCALE_UP_PERCENT)) / 100));
      if (desired > limit) {
        desired = Math.max(current, limit);
        limitedBy = `scale-up rate (max of ${SCALE_UP_PODS} replicas or ${SCALE_UP_PERCENT}% per ${POLICY_PERIOD_S} s)`;
      }
    } else if (desired < current) {
      const start = current + removed;
      const limit = Math.ceil((start * (100 - SCALE_DOWN_PERCENT)) / 100);
      if (desired < limit) {
        desired = Math.min(current, limit);
        limitedBy = `scale-down rate (${SCALE_DOWN_PERCENT}% per ${POLICY_PERIOD_S} s)`;
      }
    }
    if (desired > spec.maxReplicas) {
      desired = spec.maxReplicas;
      limitedBy = `maxReplicas (${spec.maxReplicas})`;
    } else if (desired < spec.minReplicas) {
      desired = spec.minReplicas;
      limitedBy = `minReplicas (${spec.minReplicas})`;
    }
    return { replicas: desired, limitedBy };
  }

  /** A scale to `to` was written at `now`: it counts against the rate of this period. */
  scaled(now: number, from: number, to: number): void {
    this.#changes.push({ at: now, from, to });
  }
}
