export type { CgroupStats } from './cgroups/index.ts';
export { Engine, type EngineOptions, type StopOptions } from './engine.ts';
export { InvalidSpecError } from './invalid-spec.ts';
export type { ProbeSpec } from './probes/types.ts';
export type { ProcessApi } from './supervisor/process-api.ts';
export type {
  EngineEvent,
  EnvVar,
  LastExit,
  Namespace,
  PortSpec,
  ProcessSpec,
  ProcessState,
  ProcessStatus,
  WorkloadPhase,
  WorkloadSpec,
  WorkloadStatus,
} from './supervisor/spec.ts';
export { validateWorkloadSpec } from './supervisor/spec.ts';
export type { ExitReason, RestartType, SupervisionSpec, SupervisionStrategy } from './supervisor/types.ts';
