// The TUI's live state: one informer per kind (Instances, Replicas, Services, Hosts, core
// Events) in the namespace shown, or in all of them. Views read its caches through
// ClusterReader and re-render when `version()` changes; nothing here knows of React. The writes
// the keys ask for (delete, scale, restart) go through the same clients.
import { RESTARTED_AT_ANNOTATION } from '../../crds/labels.ts';
import { ENDPOINT_SLICES, HOSTS, INSTANCES, REPLICAS, SERVICES } from '../../crds/resources.ts';
import type { Replica } from '../../crds/types.ts';
import {
  type CoreEvent,
  EVENTS,
  Informer,
  type KubeApi,
  type KubeObject,
  type ResourceClient,
  resourceClient,
  splitKey,
  typed,
} from '../../kube/index.ts';
import type { LiveReader } from './live.ts';
import type { MeshReader } from './mesh.ts';
import type { UsageReader } from './usage.ts';
import type { ClusterReader, KindId, KindObjects } from './views.ts';

/** The field manager of the TUI's writes. */
export const FIELD_MANAGER = 'orrery-tui';

/** How the connection to the API server is, as the title bar shows it. */
export interface ClusterHealth {
  /** Every informer has listed once. */
  readonly synced: boolean;
  /** No informer is failing: what is shown is current. */
  readonly connected: boolean;
  /** Failed list or watch attempts since the outage began (the banner's "reconnecting (n)"). */
  readonly attempts: number;
  /** The last failure, while failing. */
  readonly error?: string | undefined;
}

export interface ClusterModelOptions {
  api: KubeApi;
  /** The namespace shown; undefined for all namespaces. */
  namespace: string | undefined;
  /** Changes are coalesced into one notification per this many ms (default 30). */
  coalesceMs?: number;
  /** How often informer health is looked at (default 250 ms). */
  healthPollMs?: number;
  /** Reconnect backoff ceiling of the informers (default 5 s: a UI should come back quickly). */
  backoffMaxMs?: number;
  /** CPU and memory from the runtimes; its changes are the cluster's changes. */
  usage?: (UsageReader & { subscribe(listener: () => void): () => void }) | undefined;
  /** Requests per second and p99 per Service, from the mesh proxies. */
  mesh?: (MeshReader & { subscribe(listener: () => void): () => void }) | undefined;
  /**
   * The runtimes' event streams (live.ts): what a host's runtime says of its replicas overlays
   * their status while its stream is up, and a host whose stream fails is marked as `usage` marks it.
   */
  live?: (LiveReader & { subscribe(listener: () => void): () => void }) | undefined;
}

/** What the views hold of the cluster: its caches, a change counter to re-render on, and the writes the keys make. */
export interface LiveCluster extends ClusterReader {
  subscribe(listener: () => void): () => void;
  version(): number;
  health(): ClusterHealth;
  setNamespace(namespace: string | undefined): void;
  delete(kind: KindId, key: string): Promise<void>;
  scale(key: string, replicas: number): Promise<void>;
  restart(key: string): Promise<void>;
}

/**
 * An API error without the request it came from (`watch /api/v1/...: connect ECONNREFUSED` →
 * `connect ECONNREFUSED`): the banner has one line, and what went wrong is the part that fits.
 */
export function shortError(message: string): string {
  return message.replace(/^(?:GET|POST|PUT|PATCH|DELETE|WATCH|watch) \S+(?:: | failed with )/, '');
}

type Informers = { [K in KindId]: Informer<KindObjects[K]> };

const NAMESPACED: readonly KindId[] = ['instances', 'replicas', 'services', 'events', 'endpointslices'];
const EVENT_UID_INDEX = 'involvedObject.uid';

export class ClusterModel implements LiveCluster {
  readonly #api: KubeApi;
  readonly #opts: Required<Omit<ClusterModelOptions, 'api' | 'namespace' | 'usage' | 'mesh' | 'live'>>;
  readonly usage: UsageReader | undefined;
  readonly #live: LiveReader | undefined;
  #offLive: (() => void) | undefined;
  readonly mesh: MeshReader | undefined;
  #offMesh: (() => void) | undefined;
  readonly #clients: { [K in KindId]: ResourceClient<KindObjects[K]> };
  readonly #informers: Informers;
  readonly #unsubscribe = new Map<KindId, () => void>();
  readonly #listeners = new Set<() => void>();
  /** Per informer, its error count when it was last seen healthy. */
  readonly #errorBaseline = new Map<KindId, number>();
  #namespace: string | undefined;
  #version = 0;
  #notifyTimer: NodeJS.Timeout | undefined;
  #healthTimer: NodeJS.Timeout | undefined;
  #health: ClusterHealth = { synced: false, connected: true, attempts: 0 };
  #stopped = false;
  #offUsage: (() => void) | undefined;

  constructor(opts: ClusterModelOptions) {
    this.#api = opts.api;
    this.#namespace = opts.namespace;
    this.#opts = {
      coalesceMs: opts.coalesceMs ?? 30,
      healthPollMs: opts.healthPollMs ?? 250,
      backoffMaxMs: opts.backoffMaxMs ?? 5_000,
    };
    const { usage, live } = opts;
    this.#live = live;
    // A host is marked when its stats cannot be read, or its event stream is down.
    this.usage =
      usage && live
        ? {
            series: (key) => usage.series(key),
            hostError: (host) => usage.hostError(host) ?? live.hostError(host),
          }
        : (usage ?? (live && { series: () => undefined, hostError: (host) => live.hostError(host) }));
    this.#offLive = live?.subscribe(() => this.#changed());
    this.mesh = opts.mesh;
    this.#offMesh = opts.mesh?.subscribe(() => this.#changed());
    const offUsage = opts.usage?.subscribe(() => this.#changed());
    if (offUsage) this.#offUsage = offUsage;
    this.#clients = {
      instances: resourceClient(opts.api, INSTANCES, FIELD_MANAGER),
      replicas: resourceClient(opts.api, REPLICAS, FIELD_MANAGER),
      services: resourceClient(opts.api, SERVICES, FIELD_MANAGER),
      hosts: resourceClient(opts.api, HOSTS, FIELD_MANAGER),
      events: resourceClient(opts.api, typed<CoreEvent>(EVENTS), FIELD_MANAGER),
      endpointslices: resourceClient(opts.api, ENDPOINT_SLICES, FIELD_MANAGER),
    };
    this.#informers = {
      instances: this.#informer('instances'),
      replicas: this.#informer('replicas'),
      services: this.#informer('services'),
      hosts: this.#informer('hosts'),
      events: this.#informer('events'),
      endpointslices: this.#informer('endpointslices'),
    };
  }

  #informer<K extends KindId>(kind: K): Informers[K] {
    const namespaced = NAMESPACED.includes(kind);
    const informer = new Informer<KindObjects[K]>(this.#clients[kind], {
      namespace: namespaced ? this.#namespace : undefined,
      resyncPeriodMs: 0,
      backoffMaxMs: this.#opts.backoffMaxMs,
      name: kind,
    }) as Informers[K];
    if (kind === 'events') {
      (informer as Informer<CoreEvent>).addIndex(EVENT_UID_INDEX, (ev) => ev.involvedObject?.uid);
    }
    const changed = () => this.#changed();
    this.#unsubscribe.set(kind, informer.addHandlers({ add: changed, update: changed, delete: changed }));
    this.#errorBaseline.set(kind, 0);
    return informer;
  }

  /** Start watching; returns at once (the first lists arrive as changes). */
  start(): this {
    for (const informer of Object.values(this.#informers)) informer.start();
    this.#healthTimer = setInterval(() => this.#pollHealth(), this.#opts.healthPollMs);
    this.#healthTimer.unref();
    return this;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#healthTimer);
    clearTimeout(this.#notifyTimer);
    for (const off of this.#unsubscribe.values()) off();
    this.#offUsage?.();
    this.#offMesh?.();
    this.#offLive?.();
    await Promise.all(Object.values(this.#informers).map((i) => i.stop()));
    this.#api.close();
  }

  /** The namespace shown; undefined when all are. */
  get namespace(): string | undefined {
    return this.#namespace;
  }

  /** Show another namespace (undefined: all): the namespaced informers start over from a fresh list. */
  setNamespace(namespace: string | undefined): void {
    if (namespace === this.#namespace || this.#stopped) return;
    this.#namespace = namespace;
    for (const kind of NAMESPACED) {
      this.#unsubscribe.get(kind)?.();
      void this.#informers[kind].stop();
      this.#replaceInformer(kind);
    }
    this.#health = this.#computeHealth();
    this.#bump();
  }

  #replaceInformer<K extends KindId>(kind: K): void {
    this.#informers[kind] = this.#informer(kind).start();
  }

  list<K extends KindId>(kind: K): readonly KindObjects[K][] {
    const all = this.#informers[kind].list();
    const live = this.#live;
    if (kind !== 'replicas' || !live) return all;
    return (all as Replica[]).map((r) => live.overlay(r)) as KindObjects[K][];
  }

  get<K extends KindId>(kind: K, key: string): KindObjects[K] | undefined {
    const obj = this.#informers[kind].get(key);
    if (kind !== 'replicas' || !this.#live || !obj) return obj;
    return this.#live.overlay(obj as Replica) as KindObjects[K];
  }

  eventsFor(obj: KubeObject): readonly CoreEvent[] {
    const uid = obj.metadata?.uid;
    return uid ? this.#informers.events.byIndex(EVENT_UID_INDEX, uid) : [];
  }

  health(): ClusterHealth {
    return this.#health;
  }

  /** Bumped on every change of a cache or of health; views re-render when it moves. */
  version(): number {
    return this.#version;
  }

  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Delete the object with this key (`namespace/name`, or `name` for Hosts). */
  async delete(kind: KindId, key: string): Promise<void> {
    const { namespace, name } = splitKey(key);
    await this.#clients[kind].delete(name, { namespace });
  }

  /** Set an Instance's replicas through the scale subresource, as `kubectl scale` does. */
  async scale(key: string, replicas: number): Promise<void> {
    const { namespace, name } = splitKey(key);
    await this.#clients.instances.scale(name, replicas, { namespace });
  }

  /**
   * Ask a Replica's runtime to restart its processes in place: a new `orrery.dev/restartedAt`
   * (now, to the millisecond, so two restarts within a second are two), as `kubectl annotate
   * replica NAME orrery.dev/restartedAt=... --overwrite` would set it.
   */
  async restart(key: string): Promise<void> {
    const { namespace, name } = splitKey(key);
    await this.#clients.replicas.mergePatch(
      name,
      { metadata: { annotations: { [RESTARTED_AT_ANNOTATION]: new Date().toISOString() } } },
      { namespace },
    );
  }

  #changed(): void {
    if (this.#notifyTimer || this.#stopped) return;
    this.#notifyTimer = setTimeout(() => {
      this.#notifyTimer = undefined;
      this.#health = this.#computeHealth();
      this.#bump();
    }, this.#opts.coalesceMs);
  }

  #bump(): void {
    this.#version++;
    for (const listener of this.#listeners) listener();
  }

  #pollHealth(): void {
    const next = this.#computeHealth();
    const prev = this.#health;
    if (
      next.synced !== prev.synced ||
      next.connected !== prev.connected ||
      next.attempts !== prev.attempts ||
      next.error !== prev.error
    ) {
      this.#health = next;
      this.#bump();
    }
  }

  #computeHealth(): ClusterHealth {
    let synced = true;
    let connected = true;
    let attempts = 0;
    let error: string | undefined;
    for (const [kind, informer] of Object.entries(this.#informers) as [KindId, Informer<KubeObject>][]) {
      const health = informer.health();
      const errors = informer.stats().errors;
      synced &&= health.synced;
      if (health.failingSince === undefined) {
        this.#errorBaseline.set(kind, errors);
        continue;
      }
      connected = false;
      const n = errors - (this.#errorBaseline.get(kind) ?? 0);
      if (n >= attempts) {
        attempts = n;
        error = health.lastError && shortError(health.lastError);
      }
    }
    return { synced, connected, attempts, error };
  }
}
