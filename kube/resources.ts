import type { KubeApi, Query } from './api.ts';
import type { KubeList, KubeObject, ObjectMeta } from './types.ts';

/**
 * A generic typed client for one kind, described by group/version/plural. Works the same
 * for core kinds (group ''), custom resources (Orrery's are in crds/resources.ts), namespaced and cluster-scoped kinds; it is a thin
 * URL builder over the API conventions
 * (https://kubernetes.io/docs/reference/using-api/api-concepts/).
 */

export interface ResourceDescriptor<T extends KubeObject = KubeObject> {
  /** API group; '' for the core group (served under /api). */
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  /** Phantom: the object type, so `resourceClient(api, INSTANCES)` infers T. Never set. */
  readonly __type?: T;
}

function apiVersionOf(d: ResourceDescriptor<KubeObject>): string {
  return d.group === '' ? d.version : `${d.group}/${d.version}`;
}

export const LEASES: ResourceDescriptor = {
  group: 'coordination.k8s.io',
  version: 'v1',
  plural: 'leases',
  kind: 'Lease',
  namespaced: true,
};
export const EVENTS: ResourceDescriptor = {
  group: '',
  version: 'v1',
  plural: 'events',
  kind: 'Event',
  namespaced: true,
};
export const CONFIGMAPS: ResourceDescriptor = {
  group: '',
  version: 'v1',
  plural: 'configmaps',
  kind: 'ConfigMap',
  namespaced: true,
};
export const SECRETS: ResourceDescriptor = {
  group: '',
  version: 'v1',
  plural: 'secrets',
  kind: 'Secret',
  namespaced: true,
};
export const SERVICE_ACCOUNTS: ResourceDescriptor = {
  group: '',
  version: 'v1',
  plural: 'serviceaccounts',
  kind: 'ServiceAccount',
  namespaced: true,
};
export const ROLES: ResourceDescriptor = {
  group: 'rbac.authorization.k8s.io',
  version: 'v1',
  plural: 'roles',
  kind: 'Role',
  namespaced: true,
};
export const ROLE_BINDINGS: ResourceDescriptor = {
  group: 'rbac.authorization.k8s.io',
  version: 'v1',
  plural: 'rolebindings',
  kind: 'RoleBinding',
  namespaced: true,
};
export const NAMESPACES: ResourceDescriptor = {
  group: '',
  version: 'v1',
  plural: 'namespaces',
  kind: 'Namespace',
  namespaced: false,
};

/**
 * What create and server-side apply accept: any subset of the object (schema defaults are
 * required in the generated types, but the API server fills them in), with a name.
 */
export type DeepPartial<T> = T extends (infer U)[]
  ? DeepPartial<U>[]
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;
export type Applied<T> = DeepPartial<T> & {
  apiVersion?: string | undefined;
  kind?: string | undefined;
  metadata?: ObjectMeta | undefined;
};

/** Retype a descriptor for a concrete object type: `typed<Instance>(INSTANCES)`. */
export function typed<T extends KubeObject>(d: ResourceDescriptor): ResourceDescriptor<T> {
  return d as ResourceDescriptor<T>;
}

export interface ListOptions {
  namespace?: string | undefined;
  labelSelector?: string | undefined;
  fieldSelector?: string | undefined;
  /** '' or unset: consistent read from etcd; '0': any cached version (cheaper, may be stale). */
  resourceVersion?: string | undefined;
  resourceVersionMatch?: 'Exact' | 'NotOlderThan' | undefined;
  limit?: number | undefined;
  continue?: string | undefined;
  signal?: AbortSignal | undefined;
}

export interface WatchOptions {
  namespace?: string | undefined;
  labelSelector?: string | undefined;
  fieldSelector?: string | undefined;
  resourceVersion?: string | undefined;
  /** Server closes the stream after this many seconds (the API server's own bound). */
  timeoutSeconds?: number | undefined;
  allowWatchBookmarks?: boolean | undefined;
  idleTimeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  onOpen?: () => void;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface DeleteOptions {
  namespace?: string | undefined;
  /** Delete only if the object still has this uid / resourceVersion (409 otherwise). */
  preconditions?: { uid?: string; resourceVersion?: string } | undefined;
  propagationPolicy?: 'Foreground' | 'Background' | 'Orphan' | undefined;
  gracePeriodSeconds?: number | undefined;
  dryRun?: boolean | undefined;
}

export interface MutateOptions {
  namespace?: string | undefined;
  /** Overrides the client's field manager for this call. */
  fieldManager?: string | undefined;
  dryRun?: boolean | undefined;
}

export interface ApplyOptions extends MutateOptions {
  /** Take ownership of fields another manager owns (server-side apply `force=true`). Default true: controllers own their fields. */
  force?: boolean | undefined;
}

export type PatchType = 'merge' | 'json' | 'strategic' | 'apply';

const PATCH_CONTENT_TYPES: Record<PatchType, string> = {
  merge: 'application/merge-patch+json',
  json: 'application/json-patch+json',
  strategic: 'application/strategic-merge-patch+json',
  apply: 'application/apply-patch+yaml',
};

export interface Scale {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  spec?: { replicas?: number };
  status?: { replicas?: number; selector?: string };
}

export interface ResourceClientOptions {
  /**
   * Field manager name recorded in managedFields for every write (server-side apply and
   * ordinary updates). One per component: `orrery-operator`, `orrery-runtime/<host>`, ...
   */
  fieldManager: string;
}

export class ResourceClient<T extends KubeObject = KubeObject> {
  readonly api: KubeApi;
  readonly descriptor: ResourceDescriptor<T>;
  readonly fieldManager: string;
  readonly apiVersion: string;

  constructor(api: KubeApi, descriptor: ResourceDescriptor<T>, opts: ResourceClientOptions) {
    if (!opts.fieldManager)
      throw new TypeError('ResourceClient needs a fieldManager name, got an empty value');
    this.api = api;
    this.descriptor = descriptor;
    this.fieldManager = opts.fieldManager;
    this.apiVersion = apiVersionOf(descriptor);
  }

  /** The collection path: `/apis/g/v[/namespaces/ns]/plural`; no namespace on a namespaced kind means all namespaces. */
  collectionPath(namespace?: string): string {
    const d = this.descriptor;
    const root = d.group === '' ? `/api/${d.version}` : `/apis/${d.group}/${d.version}`;
    if (d.namespaced && namespace) return `${root}/namespaces/${encodeURIComponent(namespace)}/${d.plural}`;
    return `${root}/${d.plural}`;
  }

  objectPath(name: string, namespace?: string, subresource?: string): string {
    if (!name)
      throw new TypeError(
        `${this.descriptor.kind}: name must be a non-empty string, got ${JSON.stringify(name)}`,
      );
    if (this.descriptor.namespaced && !namespace) {
      throw new TypeError(
        `${this.descriptor.kind} is namespaced: a namespace is required to address ${name}`,
      );
    }
    const base = `${this.collectionPath(namespace)}/${encodeURIComponent(name)}`;
    return subresource ? `${base}/${subresource}` : base;
  }

  #nameNs(
    obj: { metadata?: ObjectMeta | undefined },
    namespace?: string,
  ): { name: string; namespace: string | undefined } {
    const name = obj.metadata?.name;
    if (!name) throw new TypeError(`${this.descriptor.kind}: metadata.name is required`);
    return { name, namespace: namespace ?? obj.metadata?.namespace };
  }

  #withTypeMeta<O extends { apiVersion?: string | undefined; kind?: string | undefined }>(obj: O): O {
    return { ...obj, apiVersion: obj.apiVersion ?? this.apiVersion, kind: obj.kind ?? this.descriptor.kind };
  }

  async get(name: string, opts: { namespace?: string | undefined; signal?: AbortSignal } = {}): Promise<T> {
    return this.api.request<T>({
      method: 'GET',
      path: this.objectPath(name, opts.namespace),
      signal: opts.signal,
    });
  }

  /** One page of a list; `resourceVersion` of the list is where a watch should start. */
  async list(opts: ListOptions = {}): Promise<KubeList<T>> {
    const query: Query = {
      labelSelector: opts.labelSelector,
      fieldSelector: opts.fieldSelector,
      resourceVersion: opts.resourceVersion,
      resourceVersionMatch: opts.resourceVersionMatch,
      limit: opts.limit,
      continue: opts.continue,
    };
    const list = await this.api.request<KubeList<T>>({
      method: 'GET',
      path: this.collectionPath(opts.namespace),
      query,
      signal: opts.signal,
    });
    list.items ??= [];
    list.metadata ??= {};
    return list;
  }

  /** All pages (limit/continue); the returned resourceVersion is the first page's, which is the snapshot's. */
  async listAll(opts: Omit<ListOptions, 'continue'> = {}): Promise<{ items: T[]; resourceVersion: string }> {
    const items: T[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      const page = await this.list({ ...opts, limit: opts.limit ?? 500, continue: cont });
      if (!cont) rv = page.metadata.resourceVersion ?? '';
      items.push(...page.items);
      cont = page.metadata.continue || undefined;
    } while (cont);
    return { items, resourceVersion: rv };
  }

  async create(obj: Applied<T>, opts: MutateOptions = {}): Promise<T> {
    const ns = opts.namespace ?? obj.metadata?.namespace;
    return this.api.request<T>({
      method: 'POST',
      path: this.collectionPath(ns),
      query: {
        fieldManager: opts.fieldManager ?? this.fieldManager,
        dryRun: opts.dryRun ? 'All' : undefined,
      },
      body: this.#withTypeMeta(obj),
    });
  }

  /** PUT: optimistic concurrency on metadata.resourceVersion (409 Conflict if stale). */
  async replace(obj: T, opts: MutateOptions = {}): Promise<T> {
    const { name, namespace } = this.#nameNs(obj, opts.namespace);
    return this.api.request<T>({
      method: 'PUT',
      path: this.objectPath(name, namespace),
      query: {
        fieldManager: opts.fieldManager ?? this.fieldManager,
        dryRun: opts.dryRun ? 'All' : undefined,
      },
      body: this.#withTypeMeta(obj),
    });
  }

  /** PUT to /status (optimistic concurrency like replace). */
  async replaceStatus(obj: T, opts: MutateOptions = {}): Promise<T> {
    const { name, namespace } = this.#nameNs(obj, opts.namespace);
    return this.api.request<T>({
      method: 'PUT',
      path: this.objectPath(name, namespace, 'status'),
      query: { fieldManager: opts.fieldManager ?? this.fieldManager },
      body: this.#withTypeMeta(obj),
    });
  }

  /**
   * DELETE. Returns the object (when it has finalizers or a grace period it still exists,
   * with deletionTimestamp set) or the server's Status.
   */
  async delete(name: string, opts: DeleteOptions = {}): Promise<T | { kind: 'Status' }> {
    const body: Record<string, unknown> = { apiVersion: 'v1', kind: 'DeleteOptions' };
    if (opts.preconditions) body.preconditions = opts.preconditions;
    if (opts.propagationPolicy) body.propagationPolicy = opts.propagationPolicy;
    if (opts.gracePeriodSeconds !== undefined) body.gracePeriodSeconds = opts.gracePeriodSeconds;
    if (opts.dryRun) body.dryRun = ['All'];
    return this.api.request({ method: 'DELETE', path: this.objectPath(name, opts.namespace), body });
  }

  /** Generic PATCH of the object or a subresource. */
  async patch(
    name: string,
    patch: unknown,
    opts: MutateOptions & { type?: PatchType; subresource?: string; force?: boolean } = {},
  ): Promise<T> {
    const type = opts.type ?? 'merge';
    return this.api.request<T>({
      method: 'PATCH',
      path: this.objectPath(name, opts.namespace, opts.subresource),
      query: {
        fieldManager: opts.fieldManager ?? this.fieldManager,
        force: type === 'apply' ? (opts.force ?? true) : undefined,
        dryRun: opts.dryRun ? 'All' : undefined,
      },
      contentType: PATCH_CONTENT_TYPES[type],
      body: patch,
    });
  }

  /** RFC 7386 JSON merge patch of the main resource (spec, metadata). */
  async mergePatch(name: string, patch: unknown, opts: MutateOptions = {}): Promise<T> {
    return this.patch(name, patch, { ...opts, type: 'merge' });
  }

  /** Merge patch of the status subresource; other fields in the patch are ignored by the server. */
  async patchStatus(name: string, status: unknown, opts: MutateOptions = {}): Promise<T> {
    return this.patch(name, { status }, { ...opts, type: 'merge', subresource: 'status' });
  }

  /**
   * Server-side apply (https://kubernetes.io/docs/reference/using-api/server-side-apply/):
   * send the fields this manager wants to own; fields it stops sending are removed if it
   * was their only manager. `obj` needs metadata.name (and namespace for namespaced kinds).
   */
  async apply(obj: Applied<T>, opts: ApplyOptions = {}): Promise<T> {
    const { name, namespace } = this.#nameNs(obj, opts.namespace);
    return this.patch(name, this.#withTypeMeta(obj), { ...opts, namespace, type: 'apply' });
  }

  /** Server-side apply to the status subresource: `{metadata: {name, namespace}, status: {...}}`. */
  async applyStatus(obj: Applied<T>, opts: ApplyOptions = {}): Promise<T> {
    const { name, namespace } = this.#nameNs(obj, opts.namespace);
    return this.patch(name, this.#withTypeMeta(obj), {
      ...opts,
      namespace,
      type: 'apply',
      subresource: 'status',
    });
  }

  async getScale(name: string, opts: { namespace?: string | undefined } = {}): Promise<Scale> {
    return this.api.request<Scale>({ method: 'GET', path: this.objectPath(name, opts.namespace, 'scale') });
  }

  /** Set spec.replicas through the scale subresource (what `kubectl scale` and the HPA do). */
  async scale(name: string, replicas: number, opts: MutateOptions = {}): Promise<Scale> {
    if (!Number.isInteger(replicas) || replicas < 0) {
      throw new TypeError(`replicas must be a non-negative integer, got ${replicas}`);
    }
    return this.api.request<Scale>({
      method: 'PATCH',
      path: this.objectPath(name, opts.namespace, 'scale'),
      query: { fieldManager: opts.fieldManager ?? this.fieldManager },
      contentType: PATCH_CONTENT_TYPES.merge,
      body: { spec: { replicas } },
    });
  }

  /** Low-level watch stream; informers are the normal way to watch. */
  async watch(opts: WatchOptions, onEvent: (type: WatchEventType, object: T) => void): Promise<void> {
    return this.api.watchStream({
      path: this.collectionPath(opts.namespace),
      query: {
        labelSelector: opts.labelSelector,
        fieldSelector: opts.fieldSelector,
        resourceVersion: opts.resourceVersion,
        timeoutSeconds: opts.timeoutSeconds,
        allowWatchBookmarks: opts.allowWatchBookmarks,
      },
      signal: opts.signal,
      idleTimeoutMs: opts.idleTimeoutMs,
      ...(opts.onOpen ? { onOpen: opts.onOpen } : {}),
      onEvent: (e) => onEvent(e.type as WatchEventType, e.object as T),
    });
  }
}

/** Convenience: `resourceClient(api, INSTANCES, 'orrery-operator')`. */
export function resourceClient<T extends KubeObject>(
  api: KubeApi,
  descriptor: ResourceDescriptor<T>,
  fieldManager: string,
): ResourceClient<T> {
  return new ResourceClient(api, descriptor, { fieldManager });
}
