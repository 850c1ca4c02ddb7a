export { type Agent, type AgentStopOptions, startAgent } from './agent.ts';
export { AgentMetrics } from './metrics.ts';
export {
  type AgentOptions,
  type CapacityOverrides,
  defaultHostName,
  defaultStateDir,
  type NormalizedAgentOptions,
  normalizeAgentOptions,
  type PortRange,
  parseListen,
  parsePortRange,
} from './options.ts';
export { PortAllocator } from './ports.ts';
export { buildReplicaSpec, keyOfReplicaId, replicaDigest, replicaId, templateOf } from './replica-spec.ts';
export { apiStatusOf, StatusWriter } from './status.ts';
export { bearerMatches, ensureToken, TOKEN_FILE, tokenPath } from './token.ts';
