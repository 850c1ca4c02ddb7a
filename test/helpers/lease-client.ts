// A Lease client whose get, create and replace calls go through a test's function around them
// (to record, time or slow them); everything else is the real client's.
import type { Lease } from '../../kube/lease.ts';
import type { ResourceClient } from '../../kube/resources.ts';

export type LeaseMethod = 'get' | 'create' | 'replace';

/**
 * `client` with each get, create and replace made by `around(method, args, call)`, where `call()`
 * makes the real request with those arguments.
 */
export function aroundLeaseCalls(
  client: ResourceClient<Lease>,
  around: (method: LeaseMethod, args: unknown[], call: () => Promise<Lease>) => Promise<Lease>,
): ResourceClient<Lease> {
  return new Proxy(client, {
    get(target, prop) {
      // The class keeps private fields: its own methods run on it, not on the proxy.
      const value = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      if (prop === 'get' || prop === 'create' || prop === 'replace') {
        const method = value as (...args: unknown[]) => Promise<Lease>;
        return (...args: unknown[]) => around(prop, args, () => method.apply(target, args));
      }
      return value.bind(target);
    },
  });
}
