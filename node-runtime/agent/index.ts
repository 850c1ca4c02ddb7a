// Light on purpose: `orrery runtime` imports this before its replicas are re-adopted, so nothing
// here may load kube/, the HTTP API or the metrics (start.ts loads agent.ts once they are).
export type { Agent, AgentStopOptions } from './agent.ts';
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
export { READOPTED_MESSAGE, startAgent } from './start.ts';
export { bearerMatches, ensureToken, tokenPath } from './token.ts';
