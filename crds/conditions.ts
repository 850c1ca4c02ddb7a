// metav1.Condition bookkeeping, as apimachinery's meta.SetStatusCondition does it:
// lastTransitionTime changes only when status changes.
import type { Condition } from './types.ts';

export type ConditionInput = Pick<Condition, 'type' | 'status' | 'reason' | 'message'>;

export function setConditions(
  previous: readonly Condition[] | undefined,
  updates: readonly ConditionInput[],
  observedGeneration: number | undefined,
  now: Date = new Date(),
): Condition[] {
  const result = (previous ?? []).map((c) => ({ ...c }));
  for (const update of updates) {
    const existing = result.find((c) => c.type === update.type);
    const next: Condition = {
      ...update,
      lastTransitionTime:
        existing && existing.status === update.status && existing.lastTransitionTime
          ? existing.lastTransitionTime
          : now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
      ...(observedGeneration !== undefined ? { observedGeneration } : {}),
    };
    if (existing) Object.assign(existing, next);
    else result.push(next);
  }
  return result;
}

/**
 * Conditions equal but for lastTransitionTime (to skip status writes that change nothing); with
 * `ignoreMessages`, also but for their messages (which may carry counts, "3 of 5 available").
 */
export function sameConditions(
  a: readonly Condition[] | undefined,
  b: readonly Condition[] | undefined,
  opts: { ignoreMessages?: boolean } = {},
): boolean {
  const strip = (list: readonly Condition[] | undefined) =>
    JSON.stringify(
      (list ?? [])
        .map(({ lastTransitionTime: _, message, ...rest }) =>
          opts.ignoreMessages ? rest : { ...rest, message },
        )
        .sort((x, y) => (x.type < y.type ? -1 : 1)),
    );
  return strip(a) === strip(b);
}
