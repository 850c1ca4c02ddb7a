/**
 * Per-replica persistent data (issue 19, part 4; docs/DESIGN.md §5.1 "Persistent data"): where a
 * replica's persistent volumes live on this host, what the host tells the scheduler it holds
 * (Host.status.persistentData), and when their data is removed.
 *
 * The key of a volume is `<namespace>/<instance>/<ordinal>/<volume>` under the engine's persistent
 * root: an ordinal's data, not a Replica's, so a re-created `db-0` (rollout, failover, a new
 * Instance of the same name after a `Retain` deletion) finds it, as a StatefulSet pod finds its
 * claim `data-db-0`.
 */
import { PERSISTENT_DATA_ANNOTATION } from '../../crds/labels.ts';
import type { HostStatus, Replica, ReplicaTemplate } from '../../crds/types.ts';

export type PersistentData = NonNullable<HostStatus['persistentData']>[number];

export function persistentKey(namespace: string, instance: string, ordinal: number, volume: string): string {
  return `${namespace}/${instance}/${ordinal}/${volume}`;
}

/** The keys of a Replica's persistent volumes. */
export function persistentKeysOf(
  replica: Replica,
  template: ReplicaTemplate = replica.spec.template,
): string[] {
  return (template.volumes ?? [])
    .filter((v) => v.persistent)
    .map((v) =>
      persistentKey(
        replica.metadata.namespace as string,
        replica.spec.instance,
        replica.spec.ordinal,
        v.name,
      ),
    );
}

/** Host.status.persistentData from the keys on disk: one entry per ordinal, sorted. */
export function persistentDataOf(keys: readonly string[]): PersistentData[] {
  const byOrdinal = new Map<string, PersistentData>();
  for (const key of keys) {
    const [namespace, instance, ordinalText, volume] = key.split('/');
    const ordinal = Number(ordinalText);
    if (!namespace || !instance || !volume || !Number.isInteger(ordinal) || ordinal < 0) continue;
    const id = `${namespace}/${instance}/${ordinal}`;
    let entry = byOrdinal.get(id);
    if (!entry) {
      entry = { namespace, instance, ordinal, volumes: [] };
      byOrdinal.set(id, entry);
    }
    entry.volumes?.push(volume);
  }
  return [...byOrdinal.values()].sort(
    (a, b) =>
      a.namespace.localeCompare(b.namespace) || a.instance.localeCompare(b.instance) || a.ordinal - b.ordinal,
  );
}

/** Whether the operator asked for the data of this Replica, being deleted, to go with it. */
export function deletesPersistentData(replica: Replica): boolean {
  return replica.metadata.annotations?.[PERSISTENT_DATA_ANNOTATION] === 'Delete';
}
