/**
 * Runs `fn` over `items` with at most `limit` calls in flight (API writes of one reconcile: a
 * 1,000-replica Instance must not create its Replicas one round trip at a time, nor all at once;
 * the reads of a thousand hosts' runtimes or proxies, likewise).
 * Rejects with the first error after the calls in flight have settled.
 */
export async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (next < items.length && !failure) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
}
