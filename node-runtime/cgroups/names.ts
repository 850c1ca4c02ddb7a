/**
 * Replica ids and process names become directory and file names (cgroup dirs, log files), so
 * they are checked once, here at the edge: a Kubernetes-style name (DNS label/subdomain
 * characters plus `_`), never `.`/`..`, never a path separator.
 */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

export function assertSafeName(value: unknown, argument: string): asserts value is string {
  if (typeof value !== 'string' || !SAFE_NAME.test(value)) {
    const got = typeof value === 'string' ? JSON.stringify(value) : `${typeof value} ${String(value)}`;
    throw new TypeError(
      `${argument} must be a safe file name (1-253 of [A-Za-z0-9._-], starting with a letter or digit), got ${got}`,
    );
  }
}

/** A cgroup parent such as `orrery/host-a`: one or more safe names joined by `/`. */
export function assertSafeParent(value: unknown, argument: string): asserts value is string {
  if (typeof value !== 'string' || value === '' || !value.split('/').every((s) => SAFE_NAME.test(s))) {
    const got = typeof value === 'string' ? JSON.stringify(value) : `${typeof value} ${String(value)}`;
    throw new TypeError(
      `${argument} must be a relative cgroup path of safe names joined by "/" (e.g. "orrery/host-a"), got ${got}`,
    );
  }
}
