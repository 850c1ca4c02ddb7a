// Skipping a test that cannot run on this host, visibly: ava registers it skipped (not passed),
// and the run's output says why. Needs nothing from the host, so unit tests can use it too.
//   test.runIf(runs(reason, 'my-file'))('...', (t) => { ... });

const printed = new Set<string>();

/**
 * For `test.runIf(runs(reason))`: true when `reason` is undefined; otherwise prints
 * `skip: [<where>: ]<reason>` (once per line and worker) and returns false, so the test is
 * registered skipped and the run's output says why.
 */
export function runs(reason: string | undefined, where?: string): boolean {
  if (reason === undefined) return true;
  const line = `skip: ${where === undefined ? '' : `${where}: `}${reason}`;
  if (!printed.has(line)) {
    printed.add(line);
    console.log(line);
  }
  return false;
}
