export { KubeApi, type Query, type RequestOptions, WatchIdleError, type WatchStreamOptions } from './api.ts';
export { Backoff, sleep } from './backoff.ts';
export { kubeConfigFromString, type LoadKubeConfigOptions, loadKubeConfig } from './config.ts';
export {
  type ControllerOptions,
  enqueueFromInformer,
  enqueueOwner,
  type KeyMapper,
  onlyStatusChanged,
  ownerKeyMapper,
  type ReconcileResult,
  type RunningController,
  runController,
} from './controller.ts';
export {
  isAlreadyExists,
  isConflict,
  isForbidden,
  isGone,
  isInvalid,
  isNotFound,
  isRetryable,
  isUnauthorized,
  KubeApiError,
  type KubeStatus,
} from './errors.ts';
export { type CoreEvent, EventRecorder, type EventRecorderOptions, type EventType } from './events.ts';
export { removeFinalizer } from './finalizers.ts';
export {
  type DeleteInfo,
  Informer,
  type InformerHandlers,
  type InformerHealth,
  type InformerOptions,
  type InformerStats,
} from './informer.ts';
export {
  type AuthProvider,
  type ExecPlugin,
  type KubeCluster,
  KubeConfig,
  KubeConfigError,
  type KubeConfigFile,
  type KubeContext,
  type KubeUser,
  parseKubeConfig,
} from './kubeconfig.ts';
export { LeaderElector, type LeaderElectorOptions } from './leader.ts';
export {
  type Lease,
  LeaseHeartbeat,
  type LeaseHeartbeatOptions,
  type LeaseSpec,
  leaseClient,
  leaseExpired,
  leaseExpiresAt,
  microTime,
  type RenewLeaseOptions,
  renewLease,
} from './lease.ts';
export { type Logger, silentLogger } from './log.ts';
export { ensureNamespace } from './namespaces.ts';
export {
  BucketRateLimiter,
  defaultControllerRateLimiter,
  ItemExponentialRateLimiter,
  MaxOfRateLimiter,
  type RateLimiter,
} from './ratelimit.ts';
export { diffRelist, type RelistDiff } from './relist.ts';
export {
  type Applied,
  type ApplyOptions,
  CONFIGMAPS,
  type DeepPartial,
  type DeleteOptions,
  EVENTS,
  LEASES,
  type ListOptions,
  type MutateOptions,
  NAMESPACES,
  type PatchType,
  ResourceClient,
  type ResourceClientOptions,
  type ResourceDescriptor,
  ROLE_BINDINGS,
  ROLES,
  resourceClient,
  type Scale,
  SECRETS,
  SERVICE_ACCOUNTS,
  typed,
  type WatchEventType,
  type WatchOptions,
} from './resources.ts';
export {
  type KubeList,
  type KubeObject,
  type ListMeta,
  type ObjectMeta,
  type OwnerReference,
  objectKey,
  splitKey,
} from './types.ts';
export { WorkQueue, type WorkQueueOptions } from './workqueue.ts';
