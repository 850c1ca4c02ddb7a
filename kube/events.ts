import { hostname } from 'node:os';
import { LRUCache } from 'lru-cache';
import type { KubeApi } from './api.ts';
import { isNotFound } from './errors.ts';
import { type Logger, silentLogger } from './log.ts';
import { EVENTS, ResourceClient, typed } from './resources.ts';
import type { KubeObject } from './types.ts';

/**
 * Records core/v1 Events for objects so `kubectl describe` and `kubectl get events` show them.
 * Identical events (same object, type, reason, message, source) are aggregated the way
 * client-go's EventCorrelator does: the first creates an Event, repeats patch its `count`
 * and `lastTimestamp` instead of creating new objects.
 */

export type EventType = 'Normal' | 'Warning';

export interface CoreEvent extends KubeObject {
  involvedObject: {
    apiVersion?: string;
    kind?: string;
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    fieldPath?: string;
  };
  reason?: string;
  message?: string;
  type?: string;
  count?: number;
  firstTimestamp?: string;
  lastTimestamp?: string;
  source?: { component?: string; host?: string };
  reportingComponent?: string;
  reportingInstance?: string;
}

export interface EventRecorderOptions {
  /** The controller name shown as the event source, e.g. `orrery-operator`, `orrery-runtime`. */
  reportingController: string;
  /** This process, e.g. the host name or pod name. Default: os.hostname(). */
  reportingInstance?: string;
  /** How many distinct events to remember for aggregation (LRU). Default 4096, client-go's cache size. */
  cacheSize?: number;
  log?: Logger;
}

interface Seen {
  name: string;
  namespace: string;
  count: number;
  firstTimestamp: string;
}

/** Events of cluster-scoped objects go to `default`, as client-go's recorder does. */
const CLUSTER_EVENT_NAMESPACE = 'default';

/** Kubernetes truncates event messages at 1 KiB in the events API; keep ours bounded too. */
const MAX_MESSAGE = 1024;

export class EventRecorder {
  readonly client: ResourceClient<CoreEvent>;
  readonly #o: Required<Omit<EventRecorderOptions, 'log'>>;
  readonly #log: Logger;
  // Aggregation keys of the events written lately, least recently written evicted first.
  readonly #seen: LRUCache<string, Seen>;
  // Per aggregation key: the write in flight, and the batch waiting behind it. Repeats that
  // arrive while a write is in flight join one batch, so an event storm costs one PATCH per
  // round trip, not one per occurrence, and count increments stay ordered.
  readonly #inflight = new Map<string, Promise<CoreEvent | undefined>>();
  readonly #batches = new Map<string, { occurrences: number; done: Promise<CoreEvent | undefined> }>();

  constructor(api: KubeApi, opts: EventRecorderOptions) {
    if (!opts.reportingController) throw new TypeError('EventRecorder needs a reportingController name');
    this.#o = { reportingInstance: hostname(), cacheSize: 4096, ...opts };
    this.#seen = new LRUCache({ max: this.#o.cacheSize });
    this.client = new ResourceClient(api, typed<CoreEvent>(EVENTS), {
      fieldManager: opts.reportingController,
    });
    this.#log = (opts.log ?? silentLogger).child({ recorder: opts.reportingController });
  }

  /**
   * Record an event; never throws (an event is best effort and must not fail a reconcile).
   * Resolves with the written Event, or undefined if writing failed.
   */
  event(
    involved: KubeObject,
    type: EventType,
    reason: string,
    message: string,
  ): Promise<CoreEvent | undefined> {
    const meta = involved.metadata ?? {};
    const msg = message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE - 3)}...` : message;
    const key = [
      involved.apiVersion,
      involved.kind,
      meta.namespace ?? '',
      meta.name,
      meta.uid ?? '',
      type,
      reason,
      msg,
      this.#o.reportingController,
    ].join('\u0000');
    const waiting = this.#batches.get(key);
    if (waiting) {
      waiting.occurrences++;
      return waiting.done;
    }
    const batch = { occurrences: 1, done: undefined as unknown as Promise<CoreEvent | undefined> };
    this.#batches.set(key, batch);
    const prev = this.#inflight.get(key) ?? Promise.resolve(undefined);
    batch.done = prev
      .then(() => {
        // From here on, new occurrences form the next batch.
        this.#batches.delete(key);
        return this.#write(key, involved, type, reason, msg, batch.occurrences);
      })
      .catch((err: unknown) => {
        this.#log.warn({ err: (err as Error).message, reason, object: meta.name }, 'could not record event');
        return undefined;
      });
    this.#inflight.set(key, batch.done);
    void batch.done.then(() => {
      if (this.#inflight.get(key) === batch.done) this.#inflight.delete(key);
    });
    return batch.done;
  }

  normal(involved: KubeObject, reason: string, message: string): Promise<CoreEvent | undefined> {
    return this.event(involved, 'Normal', reason, message);
  }

  warning(involved: KubeObject, reason: string, message: string): Promise<CoreEvent | undefined> {
    return this.event(involved, 'Warning', reason, message);
  }

  async #write(
    key: string,
    involved: KubeObject,
    type: EventType,
    reason: string,
    message: string,
    occurrences: number,
  ): Promise<CoreEvent> {
    const now = new Date();
    const ts = now.toISOString().replace(/\.\d{3}Z$/, 'Z'); // metav1.Time: second precision
    // peek: only a successful write makes an entry recent.
    const seen = this.#seen.peek(key);
    if (seen) {
      try {
        const patched = await this.client.mergePatch(
          seen.name,
          { count: seen.count + occurrences, lastTimestamp: ts },
          { namespace: seen.namespace },
        );
        seen.count = patched.count ?? seen.count + occurrences;
        this.#seen.set(key, seen);
        return patched;
      } catch (err) {
        // Events expire (the API server's --event-ttl, 1 h by default): start a new series.
        if (!isNotFound(err)) throw err;
        this.#seen.delete(key);
      }
    }
    const meta = involved.metadata ?? {};
    const namespace = meta.namespace || CLUSTER_EVENT_NAMESPACE;
    // client-go names events <object>.<unix nanos in hex>, unique enough and sortable.
    const nanos = BigInt(now.getTime()) * 1_000_000n + BigInt(Math.floor(Math.random() * 1_000_000));
    const name = `${meta.name}.${nanos.toString(16)}`;
    const created = await this.client.create({
      metadata: { name, namespace },
      involvedObject: {
        apiVersion: involved.apiVersion,
        kind: involved.kind,
        name: meta.name,
        ...(meta.namespace ? { namespace: meta.namespace } : {}),
        ...(meta.uid ? { uid: meta.uid } : {}),
        ...(meta.resourceVersion ? { resourceVersion: meta.resourceVersion } : {}),
      },
      reason,
      message,
      type,
      count: occurrences,
      firstTimestamp: ts,
      lastTimestamp: ts,
      source: { component: this.#o.reportingController, host: this.#o.reportingInstance },
      reportingComponent: this.#o.reportingController,
      reportingInstance: this.#o.reportingInstance,
    });
    this.#seen.set(key, { name, namespace, count: occurrences, firstTimestamp: ts });
    return created;
  }
}
