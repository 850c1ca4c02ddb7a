// What this host offers, for tests that depend on it: the cgroup layout (v2, v1 or hybrid, with
// the v2 mount point and the v1 controller mounts, from the product's detectCgroupLayout), what
// the native addon's kernelFeatures() found (PIDFD_INFO_EXIT, clone3, ...), the kernel release,
// root or not, and whether cgroups can be created. The decisions are pure and unit-tested
// (host-facts.ts); this module only gathers the facts, once per test worker.
//
// A test that cannot run here is registered skipped, with the reason printed once:
//   test.runIf(runs(cgroupSkipReason({ v2: true })))('...', async (t) => { ... });
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { detectCgroupLayout } from '../../node-runtime/cgroups/detect.ts';
import { kernelFeatures } from '../../node-runtime/native/index.ts';
import { type CgroupNeeds, cgroupProblem, type HostFeatures, hostFeaturesFromFacts } from './host-facts.ts';

export {
  type CgroupNeeds,
  cgroupProblem,
  describeCgroupLayout,
  type HostFeatures,
  managerRoots,
  parseKernelRelease,
} from './host-facts.ts';
export { runs } from './skip.ts';

function readOrUndefined(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function detectHost(): HostFeatures {
  let cgroups: ReturnType<typeof detectCgroupLayout> | Error;
  try {
    cgroups = detectCgroupLayout();
  } catch (error) {
    cgroups = error instanceof Error ? error : new Error(String(error));
  }
  const procStatus = readOrUndefined('/proc/self/status');
  return hostFeaturesFromFacts({
    kernelRelease: release(),
    uid: process.geteuid?.() ?? -1,
    ...(procStatus === undefined ? {} : { procStatus }),
    cgroups,
    native: kernelFeatures(),
  });
}

/** This host, detected once per test worker. */
export const host: HostFeatures = detectHost();

const writableRoots = new Map<string, boolean>();

/**
 * Whether a cgroup can be created under `root`: a probe directory is made and removed at once
 * (mkdir in a cgroup hierarchy creates a cgroup; rmdir of an empty one removes it).
 */
export function cgroupRootWritable(root: string): boolean {
  let writable = writableRoots.get(root);
  if (writable === undefined) {
    const probe = join(root, `orrery-test-probe-${process.pid}-${randomBytes(3).toString('hex')}`);
    try {
      mkdirSync(probe);
      rmdirSync(probe);
      writable = true;
    } catch {
      writable = false;
    }
    writableRoots.set(root, writable);
  }
  return writable;
}

/** Why a cgroup test with `needs` cannot run on this host (probing writability), or undefined. */
export function cgroupSkipReason(needs: CgroupNeeds): string | undefined {
  return cgroupProblem(host.cgroups, needs, cgroupRootWritable);
}
