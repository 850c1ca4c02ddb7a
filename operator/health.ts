/**
 * What the operator's /healthz says: whether this replica leads, who does, and, while it leads,
 * whether its informers are synced and watching. A standby is healthy: it only waits for the
 * Lease. A leader whose watches have failed for `watchFailingMs`, or that has not synced within
 * `syncGraceMs` of taking the lead, is not: its controllers work from a stale cache, and a
 * restart (the kubelet's liveness probe) hands the Lease to a replica that can reach the API.
 */
import type { InformerHealth } from '../kube/index.ts';

export interface HealthThresholds {
  /** How long a leader's informers may take to sync; default 60 s. */
  syncGraceMs: number;
  /** How long a leader's watch may keep failing; default 30 s. */
  watchFailingMs: number;
}

export const DEFAULT_HEALTH_THRESHOLDS: HealthThresholds = { syncGraceMs: 60_000, watchFailingMs: 30_000 };

export interface OperatorFacts {
  identity: string;
  stopped: boolean;
  leader: boolean;
  /** The holder last seen on the Lease (possibly us); undefined before the first read. */
  leaderIdentity: string | undefined;
  /** When this replica took the lead (ms since epoch), while it leads. */
  leadingSince: number | undefined;
  /** Each informer's health, by name, while it leads. */
  informers: Record<string, InformerHealth>;
}

export interface OperatorHealth {
  ok: boolean;
  identity: string;
  role: 'leader' | 'standby' | 'stopped';
  leaderIdentity: string | null;
  leadingSince: string | null;
  informers: Record<string, { synced: boolean; watching: boolean; lastError: string | null }>;
  /** Why it is not ok, one sentence each. */
  problems: string[];
}

export function operatorHealth(
  facts: OperatorFacts,
  now: number,
  thresholds: HealthThresholds = DEFAULT_HEALTH_THRESHOLDS,
): OperatorHealth {
  const problems: string[] = [];
  if (facts.stopped) problems.push('the operator is stopped');
  const informers: OperatorHealth['informers'] = {};
  for (const [name, h] of Object.entries(facts.informers)) {
    informers[name] = { synced: h.synced, watching: h.watching, lastError: h.lastError ?? null };
    if (!facts.leader) continue;
    if (h.failingSince !== undefined && now - h.failingSince >= thresholds.watchFailingMs) {
      problems.push(
        `the ${name} watch has failed for ${Math.round((now - h.failingSince) / 1000)}s: ${h.lastError ?? 'unknown error'}`,
      );
    } else if (
      !h.synced &&
      facts.leadingSince !== undefined &&
      now - facts.leadingSince >= thresholds.syncGraceMs
    ) {
      problems.push(
        `the ${name} informer has not synced ${Math.round((now - facts.leadingSince) / 1000)}s after taking the lead`,
      );
    }
  }
  return {
    ok: problems.length === 0,
    identity: facts.identity,
    role: facts.stopped ? 'stopped' : facts.leader ? 'leader' : 'standby',
    leaderIdentity: facts.leaderIdentity ?? null,
    leadingSince: facts.leadingSince === undefined ? null : new Date(facts.leadingSince).toISOString(),
    informers,
    problems,
  };
}
