// The Instance controller: reconcile(namespace/name) keeps the Instance's Replicas as
// planInstance says (create, scale, roll) and writes the aggregated status. It reads only the
// informer caches; its writes come back through them, so it converges however events arrive.

import { type ConditionInput, sameConditions, setConditions } from '../../crds/conditions.ts';
import {
  HOST_LABEL,
  INSTANCE_FINALIZER,
  INSTANCE_LABEL,
  ORDINAL_LABEL,
  PERSISTENT_DATA_ANNOTATION,
  RUNTIME_FINALIZER,
  TEMPLATE_HASH_LABEL,
} from '../../crds/labels.ts';
import type { Instance, InstanceStatus, Replica } from '../../crds/types.ts';
import {
  enqueueFromInformer,
  isAlreadyExists,
  isConflict,
  isNotFound,
  objectKey,
  onlyStatusChanged,
  ownerKeyMapper,
  type ReconcileResult,
  removeFinalizer,
  splitKey,
  type WorkQueue,
} from '../../kube/index.ts';
import { forEachLimited } from '../../platform/concurrency.ts';
import { type Controller, type OperatorContext, replicasLabelledFor } from '../context.ts';
import { templateHash } from '../hash.ts';
import type { Placer } from '../scheduler/fit.ts';
import { type InstancePlan, planInstance, replicaName } from './plan.ts';

/** API writes in flight at once within one reconcile. */
const API_CONCURRENCY = 16;
/** Instance status writes that change only replica counts: at most one per Instance per interval. */
const STATUS_COUNT_INTERVAL_MS = 500;
/**
 * Reconciles of one Instance started by Replica status changes alone: at most one per interval.
 * Each reads every Replica of the Instance, so while 1,000 start, one per status write (~2,000)
 * would cost the operator more than the rest of the burst; a status change (Running, ready) waits
 * at most this long, and any other Replica change (created, deleted, spec, labels) reconciles at once.
 */
export const STATUS_RECONCILE_SPACING_MS = 50;

export interface InstanceControllerOptions {
  /** Default 4. */
  workers?: number;
  /** Spacing of reconciles started by Replica status changes alone; default STATUS_RECONCILE_SPACING_MS. */
  statusReconcileSpacingMs?: number;
  /** Binds Replicas at creation (the scheduler's placeAtCreation); without it they are created unbound. */
  place?: Placer;
}

/** Instances and the Replicas they own (their events come back to the owner's key). */
export function instanceController(ctx: OperatorContext, opts: InstanceControllerOptions = {}): Controller {
  const expectations = new CreateExpectations();
  const statusSpacing = { intervalMs: STATUS_COUNT_INTERVAL_MS, written: new Map<string, number>() };
  /** When each Instance's last reconcile started (performance.now()). */
  const lastReconcile = new Map<string, number>();
  return {
    name: 'instances',
    workers: opts.workers ?? 4,
    watch(queue) {
      enqueueFromInformer(ctx.informers.instances, queue);
      enqueueReplicaOwners(ctx, queue, lastReconcile, opts.statusReconcileSpacingMs);
      ctx.informers.replicas.addHandlers({
        add: (r) => expectations.observed(objectKey(r)),
        delete: (r) => expectations.observed(objectKey(r)),
      });
    },
    reconcile: (key) => {
      lastReconcile.set(key, performance.now());
      if (!ctx.informers.instances.get(key)) lastReconcile.delete(key);
      return reconcileInstance(ctx, key, {
        expectations,
        statusSpacing,
        ...(opts.place ? { place: opts.place } : {}),
      });
    },
  };
}

const instanceOf = ownerKeyMapper<Replica>('Instance', 'orrery.dev');

/**
 * A Replica event enqueues its Instance (as enqueueOwner does); an update that changes only the
 * Replica's status (same generation, labels, owner and deletion) is spaced: at most one such
 * reconcile per `spacingMs` per Instance, counted from the start of the last reconcile.
 */
function enqueueReplicaOwners(
  ctx: OperatorContext,
  queue: WorkQueue<string>,
  lastReconcile: Map<string, number>,
  spacingMs = STATUS_RECONCILE_SPACING_MS,
): void {
  const now = (r: Replica) => {
    const key = instanceOf(r);
    if (typeof key === 'string') queue.add(key);
  };
  ctx.informers.replicas.addHandlers({
    add: now,
    delete: now,
    update: (old, r) => {
      const key = instanceOf(r);
      if (typeof key !== 'string' || !onlyStatusChanged(old, r) || instanceOf(old) !== key) {
        if (old !== r) now(old);
        now(r);
        return;
      }
      const wait = (lastReconcile.get(key) ?? Number.NEGATIVE_INFINITY) + spacingMs - performance.now();
      if (wait > 0) queue.addAfter(key, wait);
      else queue.add(key);
    },
  });
}

/** Replicas owned by the Instance (by label, then confirmed by ownerReference uid). */
function ownedReplicas(ctx: OperatorContext, instance: Instance): Replica[] {
  return replicasLabelledFor(
    ctx,
    instance.metadata.namespace as string,
    instance.metadata.name as string,
  ).filter((r) => (r.metadata.ownerReferences ?? []).some((o) => o.uid === instance.metadata.uid));
}

function newReplica(instance: Instance, ordinal: number, hash: string): Replica {
  const name = instance.metadata.name as string;
  const { metadata: templateMetadata } = instance.spec.template;
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Replica',
    metadata: {
      name: replicaName(name, ordinal),
      namespace: instance.metadata.namespace,
      labels: {
        ...templateMetadata?.labels,
        [INSTANCE_LABEL]: name,
        [TEMPLATE_HASH_LABEL]: hash,
        [ORDINAL_LABEL]: String(ordinal),
      },
      ...(templateMetadata?.annotations ? { annotations: { ...templateMetadata.annotations } } : {}),
      ownerReferences: [
        {
          apiVersion: 'orrery.dev/v1alpha1',
          kind: 'Instance',
          name,
          uid: instance.metadata.uid as string,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
      // Held by the runtime of spec.host until it has stopped the processes.
      finalizers: [RUNTIME_FINALIZER],
    },
    spec: { instance: name, ordinal, templateHash: hash, template: instance.spec.template },
  };
}

/**
 * Replicas created but not yet seen by the informer (the ReplicaSet controller's "expectations"):
 * while a burst is being created the cache lags, and without this every reconcile in between
 * would create the missing ordinals again, each a failed write (409). The caller deletes a key
 * when the informer reports it (added or deleted); an entry older than the TTL is ignored.
 */
export class CreateExpectations {
  readonly #pending = new Map<string, number>();
  readonly #ttlMs: number;

  constructor(ttlMs = 30_000) {
    this.#ttlMs = ttlMs;
  }

  expect(key: string, now = Date.now()): void {
    this.#pending.set(key, now);
  }

  observed(key: string): void {
    this.#pending.delete(key);
  }

  isPending(key: string, now = Date.now()): boolean {
    const at = this.#pending.get(key);
    if (at === undefined) return false;
    if (now - at <= this.#ttlMs) return true;
    this.#pending.delete(key);
    return false;
  }
}

export interface InstanceReconcileOptions {
  place?: Placer;
  expectations?: CreateExpectations;
  /**
   * Space status writes that change only counts: at most one per intervalMs per Instance;
   * `written` remembers when each Instance's status was last written (kept by the caller).
   */
  statusSpacing?: { intervalMs: number; written: Map<string, number> };
}

export async function reconcileInstance(
  ctx: OperatorContext,
  key: string,
  opts: InstanceReconcileOptions = {},
): Promise<ReconcileResult> {
  let instance = ctx.informers.instances.get(key);
  if (!instance) {
    opts.statusSpacing?.written.delete(key);
    return undefined;
  }
  const { namespace } = splitKey(key);
  const replicas = ownedReplicas(ctx, instance);

  if (instance.metadata.deletionTimestamp) return finalizeInstance(ctx, instance, replicas);
  if (!instance.metadata.finalizers?.includes(INSTANCE_FINALIZER)) {
    // Carry on with the object the patch returns rather than waiting for the watch to bring it:
    // a new Instance's first Replicas go out one round trip sooner.
    instance = await ctx.clients.instances.patch(
      instance.metadata.name as string,
      [
        { op: 'test', path: '/metadata/resourceVersion', value: instance.metadata.resourceVersion },
        instance.metadata.finalizers
          ? { op: 'add', path: '/metadata/finalizers/-', value: INSTANCE_FINALIZER }
          : { op: 'add', path: '/metadata/finalizers', value: [INSTANCE_FINALIZER] },
      ],
      { namespace, type: 'json' },
    );
  }

  const hash = templateHash(instance.spec.template);
  const plan = planInstance(instance, replicas, hash);

  const toCreate = plan.create.filter(
    (o) => !opts.expectations?.isPending(`${namespace}/${replicaName(instance.metadata.name as string, o)}`),
  );
  await forEachLimited(toCreate, API_CONCURRENCY, async (ordinal) => {
    const replica = newReplica(instance, ordinal, hash);
    const key = `${namespace}/${replica.metadata.name}`;
    const placed = opts.place?.(key, replica);
    if (placed) {
      replica.spec.host = placed.host;
      (replica.metadata.labels as Record<string, string>)[HOST_LABEL] = placed.host;
    }
    try {
      await ctx.clients.replicas.create(replica, { namespace });
      opts.expectations?.expect(key);
    } catch (error) {
      placed?.undo();
      // The cache had not seen it yet (or the old one is still terminating): the watch event requeues us.
      if (!isAlreadyExists(error)) throw error;
    }
  });
  await forEachLimited(plan.delete, API_CONCURRENCY, async (name) => {
    const replica = replicas.find((r) => r.metadata.name === name);
    try {
      // Scaled away (not replaced in place by a rollout): its data goes if the policy says so.
      if (
        replica &&
        replica.spec.ordinal >= instance.spec.replicas &&
        instance.spec.persistentRetentionPolicy.whenScaled === 'Delete'
      )
        await markPersistentDataForDeletion(ctx, replica);
      await ctx.clients.replicas.delete(name, {
        namespace,
        preconditions: { uid: replica?.metadata.uid as string },
      });
    } catch (error) {
      if (!isNotFound(error) && !isConflict(error)) throw error;
    }
  });
  if (toCreate.length > 0) {
    void ctx.recorder.normal(
      instance,
      'Created',
      `Created replicas ${toCreate.map((o) => replicaName(instance.metadata.name as string, o)).join(', ')}`,
    );
  }
  if (plan.delete.length > 0) {
    void ctx.recorder.normal(instance, 'Deleted', `Deleted replicas ${plan.delete.join(', ')}`);
  }

  return writeStatus(ctx, instance, replicas, plan, hash, opts.statusSpacing);
}

async function finalizeInstance(
  ctx: OperatorContext,
  instance: Instance,
  replicas: Replica[],
): Promise<ReconcileResult> {
  const namespace = instance.metadata.namespace;
  if (instance.spec.persistentRetentionPolicy?.whenDeleted === 'Delete') {
    // Those already terminating too (a scale-down just before): the Instance's deletion decides.
    await forEachLimited(replicas, API_CONCURRENCY, async (replica) => {
      try {
        await markPersistentDataForDeletion(ctx, replica);
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
    });
  }
  await forEachLimited(
    replicas.filter((r) => !r.metadata.deletionTimestamp),
    API_CONCURRENCY,
    async (replica) => {
      try {
        await ctx.clients.replicas.delete(replica.metadata.name as string, { namespace });
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
    },
  );
  if (replicas.length > 0) return undefined; // their deletions requeue us
  await removeFinalizer(ctx.clients.instances, instance, INSTANCE_FINALIZER);
  return undefined;
}

/**
 * Asks the runtime of a Replica with persistent volumes to remove their data when it finalizes
 * the Replica's deletion (the annotation must be on the object before its deletion is seen).
 */
async function markPersistentDataForDeletion(ctx: OperatorContext, replica: Replica): Promise<void> {
  if (!(replica.spec.template.volumes ?? []).some((v) => v.persistent)) return;
  if (replica.metadata.annotations?.[PERSISTENT_DATA_ANNOTATION] === 'Delete') return;
  await ctx.clients.replicas.mergePatch(
    replica.metadata.name as string,
    { metadata: { annotations: { [PERSISTENT_DATA_ANNOTATION]: 'Delete' } } },
    { namespace: replica.metadata.namespace },
  );
}

function conditionsFor(instance: Instance, replicas: Replica[], plan: InstancePlan): ConditionInput[] {
  const desired = instance.spec.replicas;
  // Unlike a Deployment's percentage default, maxUnavailable is a count (default 1), so a
  // 1-replica Instance would be "available" with nothing running; require one when any is wanted.
  const minAvailable = desired > 0 ? Math.max(1, desired - instance.spec.updateStrategy.maxUnavailable) : 0;
  const available = plan.counts.availableReplicas >= minAvailable;
  const unschedulable = replicas.filter((r) => r.status?.reason === 'Unschedulable');
  const crashing = replicas.filter(
    (r) => r.status?.phase === 'CrashLoopBackOff' || r.status?.phase === 'Failed',
  );
  const degraded = unschedulable[0] ?? crashing[0];
  return [
    {
      type: 'Available',
      status: available ? 'True' : 'False',
      reason: available ? 'MinimumReplicasAvailable' : 'MinimumReplicasUnavailable',
      message: `${plan.counts.availableReplicas} of ${desired} replicas available (at least ${minAvailable} required)`,
    },
    plan.complete
      ? {
          type: 'Progressing',
          status: 'False',
          reason: 'RolloutComplete',
          message: `${desired} replicas run the current template`,
        }
      : {
          type: 'Progressing',
          status: 'True',
          reason: plan.outdated > 0 ? 'RollingUpdate' : 'ReplicasUpdating',
          message: `${plan.counts.updatedReplicas} of ${desired} replicas updated, ${plan.counts.readyReplicas} ready`,
        },
    degraded
      ? {
          type: 'Degraded',
          status: 'True',
          reason: unschedulable.length > 0 ? 'Unschedulable' : (degraded.status?.phase as string),
          message: `${degraded.metadata.name}: ${degraded.status?.message ?? degraded.status?.phase}`,
        }
      : { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' },
  ];
}

async function writeStatus(
  ctx: OperatorContext,
  instance: Instance,
  replicas: Replica[],
  plan: InstancePlan,
  hash: string,
  spacing: InstanceReconcileOptions['statusSpacing'],
): Promise<ReconcileResult> {
  const previous = instance.status;
  const generation = instance.metadata.generation;
  const next: InstanceStatus = {
    ...plan.counts,
    selector: `${INSTANCE_LABEL}=${instance.metadata.name}`,
    templateHash: hash,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    conditions: setConditions(previous?.conditions, conditionsFor(instance, replicas, plan), generation),
  };
  const same = (fields: readonly (keyof InstanceStatus)[]) =>
    previous !== undefined && fields.every((field) => previous[field] === next[field]);
  const counts = ['replicas', 'readyReplicas', 'updatedReplicas', 'availableReplicas'] as const;
  const identity = ['selector', 'templateHash', 'observedGeneration'] as const;
  if (
    previous !== undefined &&
    sameConditions(previous.conditions, next.conditions) &&
    same([...identity, ...counts])
  )
    return undefined;
  // While 1,000 replicas start, every reconcile sees new counts (also in the conditions' messages,
  // "312 of 1000 replicas available"): those writes are spaced (the scale subresource and
  // `kubectl get` lag by at most the interval), while a change of a condition's status or reason
  // (Available, Progressing, Degraded) or of the generation is written at once.
  const sameButCounts =
    previous !== undefined &&
    sameConditions(previous.conditions, next.conditions, { ignoreMessages: true }) &&
    same(identity);
  if (spacing) {
    const key = `${instance.metadata.namespace}/${instance.metadata.name}`;
    const wait = (spacing.written.get(key) ?? 0) + spacing.intervalMs - Date.now();
    if (sameButCounts && wait > 0) return { requeueAfterMs: wait };
    spacing.written.set(key, Date.now());
  }
  if (
    plan.complete &&
    previous?.conditions?.find((c) => c.type === 'Progressing')?.reason !== 'RolloutComplete'
  ) {
    void ctx.recorder.normal(
      instance,
      'RolloutComplete',
      `All ${instance.spec.replicas} replicas run template ${hash} and are ready`,
    );
  }
  try {
    await ctx.clients.instances.patchStatus(instance.metadata.name as string, next, {
      namespace: instance.metadata.namespace,
    });
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  return undefined;
}
