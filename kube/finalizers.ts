// Removing a finalizer without dropping one that someone else added meanwhile.
import { isConflict, isInvalid, isNotFound } from './errors.ts';
import type { ResourceClient } from './resources.ts';
import type { KubeObject } from './types.ts';

/**
 * Removes `finalizer` from `obj` with a JSON patch (RFC 6902) whose `test` op makes it conditional
 * on the finalizer still being at the index read: a finalizer added or removed meanwhile fails the
 * test (422) instead of being lost to a stale list, while writes that change only the
 * resourceVersion (status updates) do not get in the way, as a resourceVersion precondition would.
 * After a failed test the object is read again and the removal retried, `attempts` times in all;
 * then the conflict is thrown, for the caller's work queue to retry later. Done when the finalizer
 * is gone or the object is.
 */
export async function removeFinalizer<T extends KubeObject>(
  client: ResourceClient<T>,
  obj: T,
  finalizer: string,
  attempts = 3,
): Promise<void> {
  let current: T | undefined = obj;
  for (let attempt = 1; current; attempt++) {
    const index = current.metadata?.finalizers?.indexOf(finalizer) ?? -1;
    if (index < 0) return;
    try {
      await client.patch(
        current.metadata?.name as string,
        [
          { op: 'test', path: `/metadata/finalizers/${index}`, value: finalizer },
          { op: 'remove', path: `/metadata/finalizers/${index}` },
        ],
        { namespace: current.metadata?.namespace, type: 'json' },
      );
      return;
    } catch (err) {
      if (isNotFound(err)) return;
      // A failed test is 422 Invalid; a conflict may still come from the storage layer.
      if ((!isConflict(err) && !isInvalid(err)) || attempt >= attempts) throw err;
    }
    current = await client
      .get(current.metadata?.name as string, { namespace: current.metadata?.namespace })
      .catch((err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      });
  }
}
