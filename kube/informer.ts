import { WatchIdleError } from './api.ts';
import { Backoff, linkedAbort, sleep } from './backoff.ts';
import { errorFromWatchStatus, isGone, type KubeStatus } from './errors.ts';
import { type Logger, silentLogger } from './log.ts';
import { diffRelist } from './relist.ts';
import type { ResourceClient, WatchEventType } from './resources.ts';
import { type KubeObject, objectKey } from './types.ts';

/**
 * List+watch with a local cache, in the manner of client-go's Reflector + Store + shared
 * informer (k8s.io/client-go/tools/cache). It keeps the cache converged through everything a
 * long-lived watch meets:
 *  - 410 Gone / "too old resource version" (etcd compacted, watch cache window passed):
 *    relist and emit the differences against the cache (adds, updates, deletes);
 *  - dropped connections and API server restarts: reconnect with jittered backoff and resume
 *    from the last resourceVersion seen (the server answers 410 if that is gone → relist);
 *  - silently dead watches: the server closes after `timeoutSeconds`, and a client-side idle
 *    timer aborts a stream that delivers nothing (bookmarks count as activity);
 *  - periodic resync: every cached object re-delivered to `update` handlers, so level-driven
 *    controllers re-check state even without changes.
 * Controllers never see any of this: they get add/update/delete callbacks and read the cache.
 */

export interface DeleteInfo {
  /** True when the delete was inferred by a relist (the object vanished while we were not watching). */
  finalStateUnknown: boolean;
}

export interface InformerHandlers<T> {
  add?(obj: T): void;
  update?(oldObj: T, newObj: T): void;
  delete?(obj: T, info: DeleteInfo): void;
}

export interface InformerOptions<T extends KubeObject = KubeObject> {
  /** Restrict to one namespace; all namespaces (or a cluster-scoped kind) when unset. */
  namespace?: string | undefined;
  labelSelector?: string | undefined;
  /**
   * Field selector. CRDs support only metadata.name/metadata.namespace unless the CRD declares
   * `selectableFields` (CRDSelectableFields, beta and on by default since Kubernetes 1.31).
   */
  fieldSelector?: string | undefined;
  /** Re-deliver every cached object as an update this often; 0 disables. Default 10 min. */
  resyncPeriodMs?: number | undefined;
  /**
   * Server-side watch timeout (the API server ends the stream); each watch picks a random value
   * in [min, 2·min) like client-go so many informers do not reconnect in lockstep. Default 300 s.
   */
  minWatchTimeoutSeconds?: number | undefined;
  /** Abort a watch that delivers nothing for this long; default: its timeoutSeconds + 30 s. */
  idleTimeoutMs?: number | undefined;
  /** Reconnect backoff bounds; default 100 ms .. 30 s. */
  backoffInitialMs?: number | undefined;
  backoffMaxMs?: number | undefined;
  /** Page size for relists. */
  pageSize?: number | undefined;
  /**
   * Applied to every object before it enters the cache (client-go's TransformFunc). By default
   * metadata.managedFields is dropped: it is often the bulk of an object and no controller
   * reads it from the cache. Set `keepManagedFields` to keep it.
   */
  transform?: ((obj: T) => T) | undefined;
  keepManagedFields?: boolean | undefined;
  log?: Logger | undefined;
  /** Name in log lines; defaults to the kind's plural. */
  name?: string | undefined;
}

export interface InformerStats {
  lists: number;
  watches: number;
  /** 410 Gone answers that forced a relist. */
  gone: number;
  idleTimeouts: number;
  /** Failed list/watch attempts (network, 5xx) that were retried with backoff. */
  errors: number;
  events: number;
  bookmarks: number;
  resyncs: number;
}

export interface InformerHealth {
  synced: boolean;
  /** A watch stream is open right now. */
  watching: boolean;
  /** The last list/watch failure (network, 5xx, 403...), cleared when a watch opens again. */
  lastError: string | undefined;
  /** When the current outage began (ms since epoch), if there is one. */
  failingSince: number | undefined;
}

export class Informer<T extends KubeObject = KubeObject> {
  readonly client: ResourceClient<T>;
  readonly name: string;
  readonly #opts: InformerOptions<T>;
  readonly #transform: (obj: T) => T;
  readonly #indexes = new Map<string, Index<T>>();
  readonly #log: Logger;
  readonly #handlers = new Set<InformerHandlers<T>>();
  #store = new Map<string, T>();
  #rv: string | undefined;
  #synced = false;
  #syncWaiters: (() => void)[] = [];
  #stop = new AbortController();
  #watchAbort: AbortController | undefined;
  #restart: { resourceVersion?: string | undefined; after?: Promise<unknown> | undefined } | undefined;
  #loop: Promise<void> | undefined;
  #resyncTimer: NodeJS.Timeout | undefined;
  #watching = false;
  #lastError: string | undefined;
  #failingSince: number | undefined;
  readonly #stats: InformerStats = {
    lists: 0,
    watches: 0,
    gone: 0,
    idleTimeouts: 0,
    errors: 0,
    events: 0,
    bookmarks: 0,
    resyncs: 0,
  };

  constructor(client: ResourceClient<T>, opts: InformerOptions<T> = {}) {
    for (const k of ['resyncPeriodMs', 'minWatchTimeoutSeconds', 'idleTimeoutMs', 'pageSize'] as const) {
      const v = opts[k];
      if (v !== undefined && !(typeof v === 'number' && v >= 0 && Number.isFinite(v))) {
        throw new TypeError(`informer option ${k} must be a non-negative number, got ${JSON.stringify(v)}`);
      }
    }
    this.client = client;
    this.#opts = opts;
    const user = opts.transform;
    const strip = !opts.keepManagedFields;
    this.#transform = (obj) => {
      if (strip && obj.metadata?.managedFields) delete obj.metadata.managedFields;
      return user ? user(obj) : obj;
    };
    this.name = opts.name ?? client.descriptor.plural;
    this.#log = (opts.log ?? silentLogger).child({ informer: this.name });
  }

  /** Register handlers; if already synced, the current cache is delivered as adds (as client-go does). Returns an unsubscribe function. */
  addHandlers(handlers: InformerHandlers<T>): () => void {
    this.#handlers.add(handlers);
    if (this.#synced)
      for (const obj of this.#store.values()) this.#call(handlers, 'add', () => handlers.add?.(obj));
    return () => this.#handlers.delete(handlers);
  }

  /** Start list+watch in the background. Idempotent. */
  start(): this {
    if (this.#loop) return this;
    this.#loop = this.#run().catch((err) => this.#log.error({ err }, 'informer loop ended unexpectedly'));
    const resync = this.#opts.resyncPeriodMs ?? 600_000;
    if (resync > 0) {
      this.#resyncTimer = setInterval(() => this.resync(), resync);
      this.#resyncTimer.unref();
    }
    return this;
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    this.#watchAbort?.abort();
    if (this.#resyncTimer) clearInterval(this.#resyncTimer);
    await this.#loop;
  }

  hasSynced(): boolean {
    return this.#synced;
  }

  /** Resolves once the first list is in the cache; rejects after timeoutMs (if given) or when the signal aborts. */
  waitForSync(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    if (this.#synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => reject(new Error(`informer ${this.name}: wait for sync aborted`));
      const done = () => {
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      this.#syncWaiters.push(done);
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(
          () => reject(new Error(`informer ${this.name}: not synced within ${opts.timeoutMs} ms`)),
          opts.timeoutMs,
        );
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Cached object by `namespace/name` (or `name` for cluster-scoped kinds). Treat as read-only. */
  get(key: string): T | undefined {
    return this.#store.get(key);
  }

  list(filter?: (obj: T) => boolean): T[] {
    const all = [...this.#store.values()];
    return filter ? all.filter(filter) : all;
  }

  keys(): string[] {
    return [...this.#store.keys()];
  }

  /**
   * Add a secondary index (client-go Indexers, controller-runtime field indexes): `fn` returns the
   * index values of an object; `byIndex(name, value)` returns the cached objects with that value.
   * E.g. Replicas by `spec.host`, or by owner uid.
   */
  addIndex(name: string, fn: (obj: T) => string | string[] | undefined): void {
    if (this.#indexes.has(name))
      throw new Error(`informer ${this.name}: index ${JSON.stringify(name)} already exists`);
    const index: Index<T> = { fn, values: new Map(), byKey: new Map() };
    this.#indexes.set(name, index);
    for (const [key, obj] of this.#store) indexAdd(index, key, obj);
  }

  byIndex(name: string, value: string): T[] {
    const index = this.#indexes.get(name);
    if (!index)
      throw new Error(
        `informer ${this.name}: no index named ${JSON.stringify(name)}; add it with addIndex()`,
      );
    const out: T[] = [];
    for (const key of index.values.get(value) ?? []) {
      const obj = this.#store.get(key);
      if (obj) out.push(obj);
    }
    return out;
  }

  #set(key: string, obj: T): void {
    this.#store.set(key, obj);
    for (const index of this.#indexes.values()) {
      indexRemove(index, key);
      indexAdd(index, key, obj);
    }
  }

  #remove(key: string): void {
    this.#store.delete(key);
    for (const index of this.#indexes.values()) indexRemove(index, key);
  }

  /** The resourceVersion the next watch would resume from. */
  lastSyncResourceVersion(): string | undefined {
    return this.#rv;
  }

  /** For UIs and health endpoints: is this informer connected, and if not, why (k9s-style "API unreachable"). */
  health(): InformerHealth {
    return {
      synced: this.#synced,
      watching: this.#watching,
      lastError: this.#lastError,
      failingSince: this.#failingSince,
    };
  }

  stats(): Readonly<InformerStats> {
    return { ...this.#stats };
  }

  /** Re-deliver every cached object as an update (old === new), like client-go's resync. */
  resync(): void {
    if (!this.#synced) return;
    this.#stats.resyncs++;
    for (const obj of this.#store.values()) this.#emit('update', (h) => h.update?.(obj, obj));
  }

  /**
   * Drop the current watch and resume from `resourceVersion` (default: the last one seen),
   * optionally after a promise settles. Exists to exercise recovery paths (an expired
   * resourceVersion must lead to a relist); production code has no reason to call it.
   */
  restartWatch(opts: { resourceVersion?: string; after?: Promise<unknown> } = {}): void {
    this.#restart = opts;
    this.#watchAbort?.abort();
  }

  #call(_h: InformerHandlers<T>, kind: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.error({ err, handler: kind }, 'informer handler threw; continuing');
    }
  }

  #emit(kind: 'add' | 'update' | 'delete', fn: (h: InformerHandlers<T>) => void): void {
    for (const h of this.#handlers) this.#call(h, kind, () => fn(h));
  }

  async #relist(): Promise<void> {
    this.#stats.lists++;
    const { items, resourceVersion } = await this.client.listAll({
      namespace: this.#opts.namespace,
      labelSelector: this.#opts.labelSelector,
      fieldSelector: this.#opts.fieldSelector,
      limit: this.#opts.pageSize ?? 500,
      signal: this.#stop.signal,
    });
    const diff = diffRelist(this.#store, items.map(this.#transform));
    this.#store = diff.next;
    for (const index of this.#indexes.values()) {
      index.values.clear();
      index.byKey.clear();
      for (const [key, obj] of this.#store) indexAdd(index, key, obj);
    }
    this.#rv = resourceVersion;
    for (const obj of diff.deleted) this.#emit('delete', (h) => h.delete?.(obj, { finalStateUnknown: true }));
    for (const obj of diff.added) this.#emit('add', (h) => h.add?.(obj));
    for (const u of diff.updated) this.#emit('update', (h) => h.update?.(u.old, u.new));
    this.#log.debug(
      {
        resourceVersion,
        items: items.length,
        added: diff.added.length,
        updated: diff.updated.length,
        deleted: diff.deleted.length,
      },
      'listed',
    );
    if (!this.#synced) {
      this.#synced = true;
      for (const w of this.#syncWaiters.splice(0)) w();
    }
  }

  #onEvent(type: WatchEventType, obj: T): void {
    if (type === 'ERROR') {
      throw errorFromWatchStatus(
        obj as unknown as KubeStatus,
        'WATCH',
        this.client.collectionPath(this.#opts.namespace),
      );
    }
    const rv = obj.metadata?.resourceVersion;
    if (type === 'BOOKMARK') {
      this.#stats.bookmarks++;
      if (rv) this.#rv = rv;
      return;
    }
    this.#stats.events++;
    obj = this.#transform(obj);
    const key = objectKey(obj);
    if (type === 'DELETED') {
      this.#remove(key);
      if (rv) this.#rv = rv;
      this.#emit('delete', (h) => h.delete?.(obj, { finalStateUnknown: false }));
      return;
    }
    const old = this.#store.get(key);
    this.#set(key, obj);
    if (rv) this.#rv = rv;
    if (old === undefined) this.#emit('add', (h) => h.add?.(obj));
    else this.#emit('update', (h) => h.update?.(old, obj));
  }

  async #run(): Promise<void> {
    const backoff = new Backoff(this.#opts.backoffInitialMs ?? 100, this.#opts.backoffMaxMs ?? 30_000);
    const stop = this.#stop.signal;
    const minTimeout = this.#opts.minWatchTimeoutSeconds ?? 300;
    let goneInARow = 0;
    while (!stop.aborted) {
      const restart = this.#restart;
      if (restart) {
        this.#restart = undefined;
        await restart.after?.catch(() => {});
        if (restart.resourceVersion !== undefined) this.#rv = restart.resourceVersion;
      }
      let opened = 0;
      let delivered = false;
      try {
        if (this.#rv === undefined) await this.#relist();
        if (stop.aborted) break;
        if (this.#restart) continue; // asked for during the relist
        const timeoutSeconds = Math.max(1, Math.floor(minTimeout * (1 + Math.random())));
        const link = linkedAbort(stop);
        this.#watchAbort = link.controller;
        this.#stats.watches++;
        await this.client
          .watch(
            {
              namespace: this.#opts.namespace,
              labelSelector: this.#opts.labelSelector,
              fieldSelector: this.#opts.fieldSelector,
              resourceVersion: this.#rv,
              allowWatchBookmarks: true,
              timeoutSeconds,
              idleTimeoutMs: this.#opts.idleTimeoutMs ?? (timeoutSeconds + 30) * 1000,
              signal: link.controller.signal,
              onOpen: () => {
                opened = Date.now();
                this.#watching = true;
                this.#lastError = undefined;
                this.#failingSince = undefined;
              },
            },
            (type, obj) => {
              delivered = true;
              this.#onEvent(type, obj);
            },
          )
          .finally(() => link.dispose());
        // Server closed the stream (timeoutSeconds, shutdown) or we restarted it: resume from #rv.
        goneInARow = 0;
        if (delivered || (opened > 0 && Date.now() - opened > 1000)) backoff.reset();
        else if (!this.#restart && !stop.aborted) await sleep(backoff.next(), stop);
      } catch (err) {
        if (stop.aborted) break;
        if (isGone(err)) {
          // The resourceVersion we hold is compacted away: only a fresh list can resync us.
          // Twice in a row without progress (a lagging watch cache refusing the list's own
          // resourceVersion) and we back off instead of spinning list → 410 → list.
          this.#stats.gone++;
          goneInARow = delivered ? 1 : goneInARow + 1;
          if (goneInARow > 1) await sleep(backoff.next(), stop);
          this.#log.info(
            { resourceVersion: this.#rv, err: (err as Error).message },
            'resource version expired; relisting',
          );
          this.#rv = undefined;
          continue;
        }
        if (err instanceof WatchIdleError) {
          this.#stats.idleTimeouts++;
          this.#log.warn({ resourceVersion: this.#rv }, 'watch idle too long; reconnecting');
          continue;
        }
        this.#stats.errors++;
        this.#lastError = (err as Error).message;
        this.#failingSince ??= Date.now();
        if (delivered || (opened > 0 && Date.now() - opened > 1000)) backoff.reset();
        const delay = backoff.next();
        this.#log.warn(
          { err: (err as Error).message, retryInMs: Math.round(delay), resourceVersion: this.#rv },
          this.#rv === undefined ? 'list failed; retrying' : 'watch failed; reconnecting',
        );
        await sleep(delay, stop);
      } finally {
        this.#watchAbort = undefined;
        this.#watching = false;
      }
    }
  }
}

interface Index<T> {
  fn: (obj: T) => string | string[] | undefined;
  /** index value → object keys */
  values: Map<string, Set<string>>;
  /** object key → its index values, to remove them when it changes */
  byKey: Map<string, string[]>;
}

function indexAdd<T>(index: Index<T>, key: string, obj: T): void {
  const raw = index.fn(obj);
  const vals = raw === undefined ? [] : typeof raw === 'string' ? [raw] : raw;
  if (vals.length === 0) return;
  index.byKey.set(key, vals);
  for (const v of vals) {
    const set = index.values.get(v);
    if (set) set.add(key);
    else index.values.set(v, new Set([key]));
  }
}

function indexRemove<T>(index: Index<T>, key: string): void {
  const vals = index.byKey.get(key);
  if (!vals) return;
  index.byKey.delete(key);
  for (const v of vals) {
    const set = index.values.get(v);
    set?.delete(key);
    if (set?.size === 0) index.values.delete(v);
  }
}
