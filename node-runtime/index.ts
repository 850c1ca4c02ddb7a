export type { CgroupStats } from './cgroups/index.ts';
export { Runtime, type RuntimeOptions, type StopOptions } from './engine.ts';
export { InvalidSpecError } from './invalid-spec.ts';
export type { ProbeSpec } from './probes/types.ts';
export type { ProcessApi } from './supervisor/process-api.ts';
export type {
  EnvVar,
  LastExit,
  Namespace,
  PortSpec,
  ProcessSpec,
  ProcessState,
  ProcessStatus,
  ReplicaPhase,
  ReplicaSpec,
  ReplicaStatus,
  RuntimeEvent,
} from './supervisor/spec.ts';
export { validateReplicaSpec } from './supervisor/spec.ts';
export type { ExitReason, RestartType, SupervisionSpec, SupervisionStrategy } from './supervisor/types.ts';
