// What the Instance controller should do next, as a pure function of the Instance and the
// Replicas it owns. Level-triggered: it only looks at what exists now, so missed, repeated or
// reordered events cannot make it wrong.
//
// Replicas have stable ordinals 0..replicas-1 (web-0, web-1, ...). A template change rolls them
// one by one *in place* (delete web-i, recreate web-i with the new template, as a StatefulSet
// does), and maxSurge buys the room to do so without losing capacity: while old replicas remain,
// up to maxSurge extra replicas run the new template at ordinals replicas..replicas+maxSurge-1,
// and every ready one lets one more old replica be replaced. They are removed when the rollout is
// complete. At every step, ready replicas >= replicas - maxUnavailable unless they already were
// fewer (then only replicas that are not ready are replaced).
import type { Instance, InstanceStatus, Replica } from '../../crds/types.ts';

export interface InstancePlan {
  /** Ordinals to create with the current template, lowest first. */
  create: number[];
  /** Replicas to delete, by name, highest ordinal first. */
  delete: string[];
  /** Aggregated counts (conditions are added by the controller, which knows the previous ones). */
  counts: Required<
    Pick<InstanceStatus, 'replicas' | 'readyReplicas' | 'updatedReplicas' | 'availableReplicas'>
  >;
  /** Every desired ordinal exists with the current template and is ready, and nothing else exists. */
  complete: boolean;
  /** Old-template replicas still in 0..replicas-1. */
  outdated: number;
}

export function replicaName(instance: string, ordinal: number): string {
  return `${instance}-${ordinal}`;
}

function isTerminating(replica: Replica): boolean {
  return Boolean(replica.metadata.deletionTimestamp);
}

export function isReady(replica: Replica): boolean {
  return !isTerminating(replica) && replica.status?.ready === true && replica.status.phase === 'Running';
}

export function planInstance(
  instance: Instance,
  replicas: readonly Replica[],
  currentHash: string,
): InstancePlan {
  const desired = instance.spec.replicas;
  const { maxSurge, maxUnavailable } = instance.spec.updateStrategy;
  const byOrdinal = new Map<number, Replica>();
  for (const replica of replicas) byOrdinal.set(replica.spec.ordinal, replica);
  const isCurrent = (r: Replica) => r.spec.templateHash === currentHash;

  const create: number[] = [];
  const remove: Replica[] = [];

  // Every desired ordinal must exist; a missing one is unavailable anyway, so creating it is always safe.
  for (let ordinal = 0; ordinal < desired; ordinal++) {
    if (!byOrdinal.has(ordinal)) create.push(ordinal);
  }

  const live = replicas.filter((r) => !isTerminating(r));
  const outdated = live.filter((r) => r.spec.ordinal < desired && !isCurrent(r)).sort(byOrdinalDescending);
  const rolling = outdated.length > 0;

  // Surge slots run the new template while a rollout needs the room, and are kept until every
  // desired ordinal runs the new template and is ready (removing them earlier would cost capacity).
  const desiredAllReady = Array.from({ length: desired }, (_, i) => byOrdinal.get(i)).every(
    (r) => r !== undefined && isCurrent(r) && isReady(r),
  );
  const surgeEnd = rolling || !desiredAllReady ? desired + maxSurge : desired;
  for (let ordinal = desired; ordinal < surgeEnd; ordinal++) {
    const replica = byOrdinal.get(ordinal);
    if (!replica) {
      if (rolling) create.push(ordinal);
    } else if (!isCurrent(replica) && !isTerminating(replica)) remove.push(replica);
  }
  // Beyond the desired (and surge) range: scale down.
  for (const replica of live) {
    if (replica.spec.ordinal >= surgeEnd) remove.push(replica);
  }

  if (rolling) {
    // Replace outdated replicas while enough ready ones remain: not-ready ones first (they cost
    // no availability), then ready ones from the highest ordinal down.
    const minReady = desired - maxUnavailable;
    let ready = live.filter((r) => isReady(r) && r.spec.ordinal < surgeEnd).length;
    const ordered = [...outdated.filter((r) => !isReady(r)), ...outdated.filter(isReady)];
    for (const replica of ordered) {
      if (isReady(replica)) {
        if (ready - 1 < minReady) break;
        ready--;
      }
      remove.push(replica);
    }
  }

  const counts = {
    replicas: replicas.length,
    readyReplicas: replicas.filter(isReady).length,
    updatedReplicas: live.filter(isCurrent).length,
    availableReplicas: replicas.filter((r) => isReady(r) && r.spec.ordinal < desired).length,
  };
  const complete =
    create.length === 0 &&
    remove.length === 0 &&
    replicas.length === desired &&
    replicas.every((r) => isCurrent(r) && isReady(r));
  return {
    create,
    delete: remove.sort(byOrdinalDescending).map((r) => r.metadata.name as string),
    counts,
    complete,
    outdated: outdated.length,
  };
}

function byOrdinalDescending(a: Replica, b: Replica): number {
  return b.spec.ordinal - a.spec.ordinal;
}
