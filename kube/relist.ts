import { type KubeObject, objectKey } from './types.ts';

/**
 * What a relist changes in an informer's cache. client-go's Reflector hands the full list to
 * DeltaFIFO.Replace, which emits Replaced/Sync deltas for every listed object and a
 * DeletedFinalStateUnknown tombstone for every cached key missing from the list
 * (k8s.io/client-go/tools/cache/delta_fifo.go). We keep the same three outcomes but only
 * report updates whose resourceVersion moved, so a relist after a 410 wakes controllers only
 * for what they actually missed; periodic resync is the separate "re-deliver everything" path.
 */
export interface RelistDiff<T extends KubeObject> {
  added: T[];
  updated: { old: T; new: T }[];
  /** Cached objects absent from the list: deleted while we were not watching (final state unknown). */
  deleted: T[];
  /** The new cache content, keyed like the old one. */
  next: Map<string, T>;
}

export function diffRelist<T extends KubeObject>(
  cache: ReadonlyMap<string, T>,
  items: readonly T[],
): RelistDiff<T> {
  const next = new Map<string, T>();
  const added: T[] = [];
  const updated: { old: T; new: T }[] = [];
  const replaced: T[] = [];
  for (const item of items) {
    const key = objectKey(item);
    next.set(key, item);
    const old = cache.get(key);
    if (old === undefined) added.push(item);
    else if (old.metadata?.uid && item.metadata?.uid && old.metadata.uid !== item.metadata.uid) {
      // Same name, new object: deleted and recreated while we were away. Report the delete
      // and the add, so handlers keyed by uid (owners, finalizer logic) see the old one go.
      replaced.push(old);
      added.push(item);
    } else if (old.metadata?.resourceVersion !== item.metadata?.resourceVersion)
      updated.push({ old, new: item });
  }
  const deleted: T[] = replaced;
  for (const [key, old] of cache) if (!next.has(key)) deleted.push(old);
  return { added, updated, deleted, next };
}
