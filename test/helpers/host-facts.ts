// The pure half of test/helpers/features.ts: from facts about a host (kernel release, uid,
// /proc/self/status, the cgroup layout the product detects from /proc/self/mountinfo, the native
// addon's kernelFeatures()) to what the tests need to know, and to the reason a test cannot run
// there. Nothing here reads the machine, so test/unit/host-facts.test.ts feeds it v2-only,
// v1-only and hybrid hosts. The layout itself comes from the product's own detection
// (node-runtime/cgroups/detect.ts), the kernel features from the addon (kernel_features.c):
// nothing is detected twice.
import { dirname } from 'node:path';
import type { CgroupLayout, V1Controller } from '../../node-runtime/cgroups/detect.ts';
import { planReplicaCgroup } from '../../node-runtime/cgroups/paths.ts';

export interface KernelVersion {
  major: number;
  minor: number;
  patch: number;
}

/** `uname -r` (`6.18.44-fc`, `6.1.0-18-amd64`, `4.19`) as numbers; undefined when it does not start with one. */
export function parseKernelRelease(release: string): KernelVersion | undefined {
  const match = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release.trim());
  if (!match) return undefined;
  return { major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3] ?? 0) };
}

export type SeccompMode = 'disabled' | 'strict' | 'filter';

/** The `Seccomp:` line of /proc/<pid>/status (0, 1, 2; proc(5)); undefined when absent. */
export function seccompModeOf(procStatus: string): SeccompMode | undefined {
  const match = /^Seccomp:\s*(\d)\s*$/m.exec(procStatus);
  if (!match) return undefined;
  return (['disabled', 'strict', 'filter'] as const)[Number(match[1])];
}

/** What node-runtime/native's kernelFeatures() reports. */
export interface NativeKernelFeatures {
  clone3: boolean;
  cloneIntoCgroup: boolean;
  pidfdInfoExit: boolean;
  cgroupKill: boolean;
}

export interface HostFeatures {
  kernelRelease: string;
  kernel: KernelVersion | undefined;
  /** Effective uid 0. Not the same as being allowed to create cgroups: see cgroupProblem. */
  root: boolean;
  /** A seccomp filter can hide syscalls (Docker's default profile answers clone3 with ENOSYS). */
  seccomp: SeccompMode | undefined;
  /** The product's detectCgroupLayout(), or undefined with cgroupsError when it found none. */
  cgroups: CgroupLayout | undefined;
  cgroupsError: string | undefined;
  /** The addon's view: PIDFD_INFO_EXIT (Linux 6.15+) gives the exit of a reaped non-child. */
  native: NativeKernelFeatures;
}

export interface HostFacts {
  kernelRelease: string;
  uid: number;
  procStatus?: string;
  cgroups: CgroupLayout | Error;
  native: NativeKernelFeatures;
}

export function hostFeaturesFromFacts(facts: HostFacts): HostFeatures {
  const layout = facts.cgroups instanceof Error ? undefined : facts.cgroups;
  return {
    kernelRelease: facts.kernelRelease,
    kernel: parseKernelRelease(facts.kernelRelease),
    root: facts.uid === 0,
    seccomp: facts.procStatus === undefined ? undefined : seccompModeOf(facts.procStatus),
    cgroups: layout,
    cgroupsError: facts.cgroups instanceof Error ? facts.cgroups.message : undefined,
    native: { ...facts.native },
  };
}

/** One line for a log or a skip reason: `hybrid: cgroup2 at /sys/fs/cgroup/unified (no controllers), v1 cpu at ...`. */
export function describeCgroupLayout(layout: CgroupLayout): string {
  const parts: string[] = [];
  if (layout.v2Root !== undefined) {
    const controllers = layout.v2Controllers.length > 0 ? layout.v2Controllers.join(' ') : 'no controllers';
    parts.push(`cgroup2 at ${layout.v2Root} (${controllers})`);
  }
  const v1 = Object.entries(layout.v1).map(([controller, mount]) => `${controller} at ${mount}`);
  if (v1.length > 0) parts.push(`v1 ${v1.join(', ')}`);
  return `${layout.mode}: ${parts.join('; ')}`;
}

export type LimitKind = 'cpu' | 'memory' | 'pids';

/** What a cgroup test needs from the host. */
export interface CgroupNeeds {
  /** Creates cgroups as CgroupManager does: every hierarchy root its plans use must be writable. */
  manager?: boolean;
  /** A writable cgroup2 hierarchy (membership, cgroup.events, the CLONE_INTO_CGROUP target). */
  v2?: boolean;
  /** Writable v1 hierarchies carrying these controllers. */
  v1?: V1Controller[];
  /** Limits the product can enforce here, from whichever hierarchy carries the controller. */
  limits?: LimitKind[];
  /** cgroup.kill (v2, Linux 5.14+). */
  kill?: boolean;
  /** Freezing through v2's cgroup.freeze (Linux 5.2+) or the v1 freezer controller. */
  freeze?: 'v2' | 'v1';
}

/** The hierarchy roots CgroupManager creates directories in for `layout` (derived from its own plan). */
export function managerRoots(layout: CgroupLayout): string[] {
  return planReplicaCgroup(layout, 'probe', 'replica').parentDirs.map((dir) => dirname(dir));
}

const LIMIT_FILES: Record<LimitKind, (f: ReturnType<typeof planReplicaCgroup>['files']) => boolean> = {
  cpu: (f) => f.cpuMax !== undefined || f.cpuCfsQuota !== undefined,
  memory: (f) => f.memoryMax !== undefined || f.memoryLimit !== undefined,
  pids: (f) => f.pidsMax !== undefined,
};

/**
 * Why a test with `needs` cannot run on a host with `layout`, or undefined when it can.
 * `writable(dir)` says whether a cgroup directory can be created under `dir` (features.ts probes
 * it with mkdir + rmdir); it is only asked about hierarchy roots the test would use.
 */
export function cgroupProblem(
  layout: CgroupLayout | undefined,
  needs: CgroupNeeds,
  writable: (dir: string) => boolean = () => true,
): string | undefined {
  if (layout === undefined) return 'no cgroup hierarchy is mounted';
  const where = describeCgroupLayout(layout);
  if (needs.v2 && layout.v2Root === undefined) return `no cgroup2 hierarchy is mounted (${where})`;
  for (const controller of needs.v1 ?? []) {
    if (layout.v1[controller] === undefined) return `no v1 ${controller} hierarchy is mounted (${where})`;
  }
  const files = planReplicaCgroup(layout, 'probe', 'replica').files;
  for (const limit of needs.limits ?? []) {
    if (!LIMIT_FILES[limit](files)) return `no hierarchy carries the ${limit} controller (${where})`;
  }
  if (needs.kill && !layout.cgroupKill) return `no cgroup.kill (needs cgroup2 and Linux 5.14+; ${where})`;
  if (needs.freeze === 'v2' && (layout.v2Root === undefined || !layout.cgroupFreeze))
    return `no cgroup.freeze (needs cgroup2 and Linux 5.2+; ${where})`;
  if (needs.freeze === 'v1' && layout.v1.freezer === undefined)
    return `no v1 freezer hierarchy is mounted (${where})`;
  const roots = new Set<string>();
  if (needs.manager) for (const root of managerRoots(layout)) roots.add(root);
  if (needs.v2 && layout.v2Root !== undefined) roots.add(layout.v2Root);
  for (const controller of needs.v1 ?? []) roots.add(layout.v1[controller] as string);
  for (const root of roots) {
    if (!writable(root)) return `cannot create cgroups under ${root} (not root, or a read-only cgroup mount)`;
  }
  return undefined;
}
