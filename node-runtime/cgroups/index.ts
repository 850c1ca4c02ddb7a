export {
  type CgroupLayout,
  detectCgroupLayout,
  layoutFromFacts,
  parseMountinfo,
  type V1Controller,
} from './detect.ts';
export { type CgroupLimits, validateLimits } from './limits.ts';
export {
  CgroupManager,
  type CgroupManagerOptions,
  childCgroups,
  ReplicaCgroup,
  removeCgroupDir,
  type SpawnTarget,
} from './manager.ts';
export { assertSafeName } from './names.ts';
export { planReplicaCgroup, type ReplicaCgroupPlan } from './paths.ts';
export type { CgroupStats } from './stats.ts';
