import type { Informer } from './informer.ts';
import { type Logger, silentLogger } from './log.ts';
import { type KubeObject, objectKey } from './types.ts';
import type { WorkQueue } from './workqueue.ts';

/**
 * The controller-runtime model (sigs.k8s.io/controller-runtime/pkg/internal/controller):
 * workers take keys from the queue and call reconcile(key), which reads current state and
 * converges it. Success forgets the key's failure history; an error requeues it with
 * per-key exponential backoff; `requeueAfterMs` asks to be called again later.
 */

export type ReconcileResult = { requeueAfterMs?: number; requeue?: boolean } | undefined;

export interface ControllerOptions<K = string> {
  name: string;
  queue: WorkQueue<K>;
  reconcile: (key: K) => Promise<ReconcileResult>;
  /** Concurrent workers; a key is never reconciled by two workers at once (the queue guarantees it). */
  workers?: number;
  log?: Logger;
  /** Informers whose caches must be synced before the first reconcile. */
  waitFor?: { waitForSync(opts?: { signal?: AbortSignal }): Promise<void> }[];
  /** Called after every reconcile with its outcome; for metrics. */
  onReconciled?: (key: K, outcome: { ms: number; error?: unknown; result?: ReconcileResult }) => void;
}

export interface RunningController {
  readonly name: string;
  /** Shut the queue down, let in-flight reconciles finish, resolve when all workers exited. */
  stop(): Promise<void>;
  /** Resolves when all workers have exited. */
  readonly done: Promise<void>;
}

export function runController<K = string>(opts: ControllerOptions<K>): RunningController {
  const workers = opts.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1) {
    throw new TypeError(`controller ${opts.name}: workers must be a positive integer, got ${workers}`);
  }
  const log = (opts.log ?? silentLogger).child({ controller: opts.name });
  const queue = opts.queue;

  async function worker(): Promise<void> {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      const started = performance.now();
      try {
        const result = (await opts.reconcile(key)) ?? undefined;
        if (result?.requeueAfterMs !== undefined && result.requeueAfterMs > 0) {
          queue.forget(key);
          queue.addAfter(key, result.requeueAfterMs);
        } else if (result?.requeue) {
          queue.addRateLimited(key);
        } else {
          queue.forget(key);
        }
        opts.onReconciled?.(key, { ms: performance.now() - started, result });
      } catch (error) {
        const retries = queue.numRequeues(key);
        // Logged once here, where it is handled; the key goes back with backoff.
        log.error({ err: error, key, retries }, 'reconcile failed; requeueing with backoff');
        queue.addRateLimited(key);
        opts.onReconciled?.(key, { ms: performance.now() - started, error });
      } finally {
        queue.done(key);
      }
    }
  }

  // stop() before the caches synced: their informers are being stopped too and may never sync.
  const stopped = new AbortController();
  const done = (async () => {
    if (opts.waitFor && opts.waitFor.length > 0) {
      try {
        await Promise.all(opts.waitFor.map((i) => i.waitForSync({ signal: stopped.signal })));
      } catch (err) {
        if (stopped.signal.aborted) return;
        throw err;
      }
    }
    log.info({ workers }, 'starting workers');
    await Promise.all(Array.from({ length: workers }, () => worker()));
    log.info('workers stopped');
  })();

  return {
    name: opts.name,
    done,
    async stop() {
      queue.shutdown();
      stopped.abort();
      await done;
    },
  };
}

/** What an event maps to: the keys to reconcile (none, one, several). */
export type KeyMapper<T> = (obj: T) => string | string[] | undefined;

/**
 * Feed a queue from an informer. Without a mapper, each object enqueues its own key; with one,
 * whatever keys the mapper returns (for an update, both the old and the new object's keys, so
 * a label or owner change reaches the previous target too, as controller-runtime's
 * EnqueueRequestsFromMapFunc does).
 */
export function enqueueFromInformer<T extends KubeObject>(
  informer: Informer<T>,
  queue: WorkQueue<string>,
  map: KeyMapper<T> = objectKey,
): () => void {
  const enqueue = (obj: T) => {
    const keys = map(obj);
    if (keys === undefined) return;
    if (typeof keys === 'string') queue.add(keys);
    else for (const k of keys) queue.add(k);
  };
  return informer.addHandlers({
    add: enqueue,
    update: (oldObj, newObj) => {
      if (oldObj !== newObj) enqueue(oldObj);
      enqueue(newObj);
    },
    delete: enqueue,
  });
}

/**
 * Key of the controlling owner of the given kind (controller-runtime's EnqueueRequestForOwner
 * with OnlyControllerOwner): a Replica event enqueues `namespace/<its Instance>`.
 */
export function ownerKeyMapper<T extends KubeObject>(
  ownerKind: string,
  ownerApiGroup?: string,
): KeyMapper<T> {
  return (obj) => {
    const ns = obj.metadata?.namespace;
    for (const ref of obj.metadata?.ownerReferences ?? []) {
      if (!ref.controller || ref.kind !== ownerKind) continue;
      if (ownerApiGroup !== undefined && groupOf(ref.apiVersion) !== ownerApiGroup) continue;
      return ns ? `${ns}/${ref.name}` : ref.name;
    }
    return undefined;
  };
}

/** Shorthand: `enqueueOwner(replicaInformer, instanceQueue, 'Instance', 'orrery.dev')`. */
export function enqueueOwner<T extends KubeObject>(
  informer: Informer<T>,
  queue: WorkQueue<string>,
  ownerKind: string,
  ownerApiGroup?: string,
): () => void {
  return enqueueFromInformer(informer, queue, ownerKeyMapper<T>(ownerKind, ownerApiGroup));
}

function groupOf(apiVersion: string): string {
  const i = apiVersion.indexOf('/');
  return i < 0 ? '' : apiVersion.slice(0, i);
}

/**
 * Whether an update changed nothing but the object's status (and resourceVersion, managedFields):
 * the same generation (spec), uid, labels, annotations, finalizers and deletion. A status write's
 * echo, which most controllers need not reconcile at once. False for an object without a generation.
 */
export function onlyStatusChanged(old: KubeObject, obj: KubeObject): boolean {
  const a = old.metadata ?? {};
  const b = obj.metadata ?? {};
  return (
    a.generation !== undefined &&
    a.generation === b.generation &&
    a.uid === b.uid &&
    a.deletionTimestamp === b.deletionTimestamp &&
    sameStrings(a.labels, b.labels) &&
    sameStrings(a.annotations, b.annotations) &&
    (a.finalizers ?? []).join('\n') === (b.finalizers ?? []).join('\n')
  );
}

function sameStrings(a: Record<string, string> | undefined, b: Record<string, string> | undefined): boolean {
  if (a === b) return true;
  const ka = Object.keys(a ?? {});
  if (ka.length !== Object.keys(b ?? {}).length) return false;
  return ka.every((k) => a?.[k] === b?.[k]);
}
