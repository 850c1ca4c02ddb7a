import { readFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';

/** v1 controllers Orrery knows how to use (limits, stats, freezing). */
const V1_CONTROLLERS = ['cpu', 'cpuacct', 'memory', 'pids', 'freezer', 'cpuset'] as const;
export type V1Controller = (typeof V1_CONTROLLERS)[number];

export interface CgroupLayout {
  /** v2: unified only; v1: legacy only; hybrid: both mounted (v2 usually without controllers). */
  mode: 'v2' | 'v1' | 'hybrid';
  /** Mount point of the cgroup2 hierarchy, when one is mounted. */
  v2Root?: string;
  /** Controllers listed in `<v2Root>/cgroup.controllers` (empty in the usual hybrid setup). */
  v2Controllers: string[];
  /** Mount point of each v1 controller; co-mounted controllers (`cpu,cpuacct`) share one path. */
  v1: Partial<Record<V1Controller, string>>;
  /** `cgroup.kill` exists in non-root v2 cgroups (Linux 5.14+). */
  cgroupKill: boolean;
  /** `cgroup.freeze` exists in non-root v2 cgroups (Linux 5.2+), controllers enabled or not. */
  cgroupFreeze: boolean;
  /**
   * Mount points of the v1 hierarchies (cpuset aside) in which this process is below the root: in
   * its container's cgroup (deploy/'s DaemonSet) or its systemd unit's. A replica joins each of
   * them too, under the per-host parent, even those whose controller Orrery does not use: left in
   * the runtime's own cgroup there, it would be killed with the runtime (runc kills every process
   * of a host-pid container's `devices` cgroup when the container ends; systemd every process of
   * the unit's `name=systemd` cgroup). Empty for a runtime at the root of them all.
   */
  v1Nested: string[];
}

interface MountEntry {
  /** `major:minor`: one per superblock, so one per cgroup hierarchy however often it is mounted. */
  device: string;
  /** The mounted directory of the filesystem (`/` for a whole hierarchy). */
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

/** mountinfo escapes space, tab, newline and backslash as `\ooo` octal (proc(5), show_mountinfo). */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/**
 * Parses /proc/<pid>/mountinfo lines (proc(5)): `id parent major:minor root mountPoint opts
 * [optional fields...] - fsType source superOptions`. The optional fields end at the lone `-`.
 */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    const mountPoint = fields[4];
    const fsType = fields[dash + 1];
    if (dash < 0 || mountPoint === undefined || fsType === undefined) continue;
    entries.push({
      device: fields[2] ?? '',
      root: unescapeMountField(fields[3] ?? ''),
      mountPoint: unescapeMountField(mountPoint),
      fsType,
      superOptions: (fields[dash + 3] ?? '').split(','),
    });
  }
  return entries;
}

/** True when `release` (uname -r, e.g. `6.18.44-fc`) is at least major.minor. */
export function kernelAtLeast(kernelRelease: string, major: number, minor: number): boolean {
  const match = /^(\d+)\.(\d+)/.exec(kernelRelease);
  if (!match) return false;
  const [maj, min] = [Number(match[1]), Number(match[2])];
  return maj > major || (maj === major && min >= minor);
}

export interface LayoutFacts {
  /** Text of /proc/self/mountinfo. */
  mountinfo: string;
  /** Text of `<v2Root>/cgroup.controllers`, if a cgroup2 mount exists and is readable. */
  v2ControllersText?: string;
  /** `uname -r`. */
  kernelRelease: string;
  /** Text of /proc/self/cgroup (`id:controllers:path` per hierarchy); absent: at the root of all. */
  ownCgroups?: string;
}

/** The v1 hierarchies (by their controller lists, e.g. `cpu,cpuacct`, `name=systemd`) this process is below the root of. */
function nestedHierarchies(ownCgroups: string | undefined): string[][] {
  const nested: string[][] = [];
  for (const line of (ownCgroups ?? '').split('\n')) {
    const match = /^\d+:([^:]+):(.*)$/.exec(line);
    if (match?.[1] && match[2] !== '/') nested.push(match[1].split(','));
  }
  return nested;
}

/**
 * One mount per cgroup hierarchy: a hierarchy mounted more than once (a container that sees its
 * node's / at /host besides its own /sys/fs/cgroup, as deploy/'s runtime does) is the same
 * superblock. The whole hierarchy (root `/`) is preferred, then the shortest path.
 */
function oneMountPerHierarchy(mounts: MountEntry[]): MountEntry[] {
  const best = new Map<string, MountEntry>();
  for (const mount of mounts) {
    if (mount.fsType !== 'cgroup' && mount.fsType !== 'cgroup2') continue;
    const seen = best.get(mount.device);
    const better =
      seen === undefined ||
      (mount.root === '/' && seen.root !== '/') ||
      (mount.root === seen.root && mount.mountPoint.length < seen.mountPoint.length);
    if (better) best.set(mount.device, mount);
  }
  return mounts.filter((m) => best.get(m.device) === m);
}

/** Pure: decides the layout from the mount table and a few kernel facts. */
export function layoutFromFacts(facts: LayoutFacts): CgroupLayout {
  const mounts = oneMountPerHierarchy(parseMountinfo(facts.mountinfo));
  let v2Root: string | undefined;
  const v1: Partial<Record<V1Controller, string>> = {};
  const nested = nestedHierarchies(facts.ownCgroups);
  const v1Nested: string[] = [];
  for (const mount of mounts) {
    if (mount.fsType === 'cgroup2') {
      // The first cgroup2 mount wins; later ones are bind mounts of the same hierarchy.
      v2Root ??= mount.mountPoint;
    } else if (mount.fsType === 'cgroup') {
      // A v1 cpuset refuses tasks until cpuset.cpus/mems are set: never joined (README.md).
      const isNested = nested.some((names) => names.every((n) => mount.superOptions.includes(n)));
      if (isNested && !mount.superOptions.includes('cpuset') && !v1Nested.includes(mount.mountPoint)) {
        v1Nested.push(mount.mountPoint);
      }
      for (const option of mount.superOptions) {
        if ((V1_CONTROLLERS as readonly string[]).includes(option)) {
          v1[option as V1Controller] ??= mount.mountPoint;
        }
      }
    }
  }
  const hasV1 = Object.keys(v1).length > 0;
  if (v2Root === undefined && !hasV1) {
    throw new Error('no cgroup hierarchy is mounted: expected a cgroup2 or cgroup v1 mount in mountinfo');
  }
  const mode = v2Root === undefined ? 'v1' : hasV1 ? 'hybrid' : 'v2';
  const v2Controllers =
    v2Root === undefined ? [] : (facts.v2ControllersText ?? '').split(/\s+/).filter((c) => c !== '');
  const layout: CgroupLayout = {
    mode,
    v2Controllers,
    v1,
    cgroupKill: v2Root !== undefined && kernelAtLeast(facts.kernelRelease, 5, 14),
    cgroupFreeze: v2Root !== undefined && kernelAtLeast(facts.kernelRelease, 5, 2),
    v1Nested,
  };
  if (v2Root !== undefined) layout.v2Root = v2Root;
  return layout;
}

/** Reads the mount table and kernel facts of this machine and returns its cgroup layout. */
export function detectCgroupLayout(procMounts = '/proc/self/mountinfo'): CgroupLayout {
  const mountinfo = readFileSync(procMounts, 'utf8');
  const facts: LayoutFacts = { mountinfo, kernelRelease: release() };
  try {
    facts.ownCgroups = readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    // No /proc/self/cgroup: nothing known to be nested.
  }
  const probe = layoutFromFacts(facts);
  if (probe.v2Root !== undefined) {
    try {
      facts.v2ControllersText = readFileSync(join(probe.v2Root, 'cgroup.controllers'), 'utf8');
    } catch {
      // An unreadable cgroup.controllers means no usable v2 controllers; membership still works.
    }
  }
  return layoutFromFacts(facts);
}
