// Order statistics of benchmark samples: one definition of a quantile for every benchmark, so
// the p50 and p99 of one table mean what they mean in the next.

/**
 * The q-quantile (0 ≤ q ≤ 1) of `samples`: the sorted samples' element at index floor(q·n)
 * (0-based), the last one for q = 1. So the p50 of an even count is the upper of the two middle samples, and the p99 of 1,000
 * samples is their 10th largest. NaN when there are no samples.
 */
export function quantile(samples: readonly number[], q: number): number {
  return ofSorted(sorted(samples), q);
}

export const median = (samples: readonly number[]): number => quantile(samples, 0.5);

export interface Summary {
  p50: number;
  p99: number;
  mean: number;
  max: number;
}

/** p50, p99 (as quantile() defines them), mean and max of `samples`; NaN for each when there are none. */
export function summarize(samples: readonly number[]): Summary {
  const s = sorted(samples);
  return {
    p50: ofSorted(s, 0.5),
    p99: ofSorted(s, 0.99),
    mean: s.reduce((sum, v) => sum + v, 0) / s.length,
    max: s[s.length - 1] ?? Number.NaN,
  };
}

function ofSorted(s: readonly number[], q: number): number {
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
}

function sorted(samples: readonly number[]): number[] {
  return [...samples].sort((a, b) => a - b);
}
