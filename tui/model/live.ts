// The hosts' runtimes as they happen: one event stream per host (`GET /v1/events`, server-sent
// events, docs/DESIGN.md §5.8), so an exit or a restart shows at once (process state, pid,
// restart count, last exit) rather than after the runtime's status write and the Replica watch.
//
// Per host: the stream opens with a snapshot of every replica the runtime runs (its own status of
// each); every event about a replica after it has its status read again from that runtime
// (`GET /v1/replicas/:ns/:name`, after 20 ms of gathering its events, one read in flight per
// replica, four per host), so what is kept
// is exactly the runtime's word, never a guess from an event. While a host's stream is up, that
// word is what the Replica rows show of phase, readiness, restarts and processes (overlay());
// when it fails, the host's entries go (the API's status applies again), the host is marked as
// the usage model marks it (hostError()), and the stream is opened again with back-off (250 ms
// doubling to 5 s). A stream silent for `idleMs` (three of the runtime's 15 s pings) is opened
// again. What is kept is bounded by the replicas the runtimes run.
import type { ReplicaStatus as ApiReplicaStatus, Replica } from '../../crds/types.ts';
import { Backoff } from '../../kube/index.ts';
import { type HostTarget, runtimeGet } from '../../platform/runtime-api.ts';
import { SseParser } from '../../platform/sse.ts';

/** A process as a runtime reports it (node-runtime's ProcessStatus, read by its shape). */
export interface RuntimeProcess {
  name: string;
  pid: number | null;
  state: string;
  ready: boolean;
  restarts: number;
  startedAt: string | null;
  lastExit: {
    code: number | null;
    signal: string | null;
    reason: string;
    message?: string;
    at: string;
  } | null;
}

/** A replica as a runtime reports it (node-runtime's WorkloadStatus, the fields shown). */
export interface RuntimeReplica {
  id: string;
  phase: string;
  ready: boolean;
  startedAt: string | null;
  processes: RuntimeProcess[];
}

export interface LiveReader {
  /** The Replica with what its host's runtime says now in its status, or as it is. */
  overlay(replica: Replica): Replica;
  /** Why the host's event stream is down, or undefined while it is up (or not tried yet). */
  hostError(host: string): string | undefined;
}

export interface RuntimeEventsOptions {
  /** The hosts to follow, as the cache has them now (looked at every `hostsEveryMs`). */
  hosts(): readonly HostTarget[];
  token(host: string): Promise<string>;
  /** Default runtimeGet (platform/runtime-api.ts: token, pinned certificate). */
  get?: typeof runtimeGet;
  /** Default 1000. */
  hostsEveryMs?: number;
  /** Default 45,000. */
  idleMs?: number;
  /** Back-off of a failed stream: default 250 ms doubling to 5 s. */
  backoffMs?: { initial: number; max: number };
}

/** Reads of replicas' statuses in flight per host at most. */
const READS_PER_HOST = 4;
/**
 * A replica's events are read after this many ms of gathering: an exit and the restart that
 * follows it (exited, restarting, started, within a few ms) cost one read, which shows both.
 */
const GATHER_MS = 20;

/** `namespace/name` of a runtime replica id `<namespace>.<name>` (namespaces hold no dot). */
export function keyOfRuntimeId(id: string): string | undefined {
  const dot = id.indexOf('.');
  if (dot <= 0 || dot === id.length - 1) return undefined;
  return `${id.slice(0, dot)}/${id.slice(dot + 1)}`;
}

/** A runtime's status, checked by its shape; undefined when it is not one. */
export function runtimeReplicaOf(data: unknown): RuntimeReplica | undefined {
  const r = data as Partial<RuntimeReplica> | null;
  if (typeof r !== 'object' || r === null || typeof r.id !== 'string' || typeof r.phase !== 'string')
    return undefined;
  if (!Array.isArray(r.processes)) return undefined;
  return {
    id: r.id,
    phase: r.phase,
    ready: r.ready === true,
    startedAt: typeof r.startedAt === 'string' ? r.startedAt : null,
    processes: r.processes.filter((p) => typeof p?.name === 'string'),
  };
}

/** The runtime's status as the API's Replica status says it (node-runtime/agent/status.ts). */
export function apiStatusFields(
  r: RuntimeReplica,
): Pick<ApiReplicaStatus, 'phase' | 'ready' | 'restarts' | 'processes' | 'startedAt'> {
  const processes = r.processes.map((p) => {
    const out: NonNullable<ApiReplicaStatus['processes']>[number] = {
      name: p.name,
      state: p.state as never,
      ready: p.ready,
      restarts: p.restarts,
    };
    if (p.pid !== null) out.pid = p.pid;
    if (p.startedAt !== null) out.startedAt = p.startedAt;
    if (p.lastExit) {
      const e: NonNullable<(typeof out)['lastExit']> = {
        reason: p.lastExit.reason as never,
        at: p.lastExit.at,
      };
      if (p.lastExit.code !== null) e.code = p.lastExit.code;
      if (p.lastExit.signal !== null) e.signal = p.lastExit.signal;
      if (p.lastExit.message) e.message = p.lastExit.message;
      out.lastExit = e;
    }
    return out;
  });
  const fields: ReturnType<typeof apiStatusFields> = {
    phase: r.phase as never,
    ready: r.ready,
    restarts: r.processes.reduce((n, p) => n + p.restarts, 0),
    processes,
  };
  if (r.startedAt !== null) fields.startedAt = r.startedAt;
  return fields;
}

interface Entry {
  readonly host: string;
  readonly status: RuntimeReplica;
}

interface HostStream {
  target: HostTarget;
  abort: AbortController;
  backoff: Backoff;
  connected: boolean;
  error: string | undefined;
  /** Replicas whose status is to be read again, and those being read. */
  dirty: Set<string>;
  reading: Set<string>;
  /** The next read of the dirty ones, once scheduled. */
  gather: NodeJS.Timeout | undefined;
}

export class RuntimeEventsModel implements LiveReader {
  readonly #o: RuntimeEventsOptions;
  readonly #get: typeof runtimeGet;
  readonly #streams = new Map<string, HostStream>();
  readonly #entries = new Map<string, Entry>();
  readonly #merged = new WeakMap<Replica, { entry: Entry; merged: Replica }>();
  readonly #listeners = new Set<() => void>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(opts: RuntimeEventsOptions) {
    this.#o = opts;
    this.#get = opts.get ?? runtimeGet;
  }

  start(): this {
    this.#sync();
    this.#timer = setInterval(() => this.#sync(), this.#o.hostsEveryMs ?? 1000);
    this.#timer.unref();
    return this;
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    for (const s of this.#streams.values()) {
      s.abort.abort();
      clearTimeout(s.gather);
    }
    this.#streams.clear();
  }

  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  hostError(host: string): string | undefined {
    const s = this.#streams.get(host);
    return s && !s.connected ? s.error : undefined;
  }

  /** Whether the host's stream is up (tests, the title). */
  connected(host: string): boolean {
    return this.#streams.get(host)?.connected === true;
  }

  /** What the runtime said last of `namespace/name`, while its host's stream is up. */
  status(key: string): RuntimeReplica | undefined {
    return this.#entries.get(key)?.status;
  }

  overlay(replica: Replica): Replica {
    const key = `${replica.metadata.namespace}/${replica.metadata.name}`;
    const entry = this.#entries.get(key);
    if (!entry || replica.spec?.host !== entry.host) return replica;
    const cached = this.#merged.get(replica);
    if (cached?.entry === entry) return cached.merged;
    const fields = apiStatusFields(entry.status);
    const status: ApiReplicaStatus = { ...replica.status, ...fields };
    // The API's reason and message explain the phase it has; another phase has other reasons.
    if (replica.status?.phase !== fields.phase) {
      delete status.reason;
      delete status.message;
    }
    const merged = { ...replica, status };
    this.#merged.set(replica, { entry, merged });
    return merged;
  }

  #notify(): void {
    if (this.#stopped) return;
    for (const l of this.#listeners) l();
  }

  /** Streams opened for new hosts (or a changed endpoint or certificate), closed for gone ones. */
  #sync(): void {
    if (this.#stopped) return;
    const want = new Map(this.#o.hosts().map((h) => [h.name, h]));
    for (const [name, s] of this.#streams) {
      const t = want.get(name);
      if (t && t.endpoint === s.target.endpoint && t.certificate === s.target.certificate) continue;
      s.abort.abort();
      clearTimeout(s.gather);
      this.#streams.delete(name);
      this.#dropHost(name);
    }
    for (const [name, target] of want) {
      if (this.#streams.has(name)) continue;
      const b = this.#o.backoffMs ?? { initial: 250, max: 5_000 };
      const s: HostStream = {
        target,
        abort: new AbortController(),
        backoff: new Backoff(b.initial, b.max),
        connected: false,
        error: undefined,
        dirty: new Set(),
        reading: new Set(),
        gather: undefined,
      };
      this.#streams.set(name, s);
      void this.#run(s);
    }
  }

  #dropHost(host: string): boolean {
    let dropped = false;
    for (const [key, e] of this.#entries) {
      if (e.host !== host) continue;
      this.#entries.delete(key);
      dropped = true;
    }
    return dropped;
  }

  async #run(s: HostStream): Promise<void> {
    const host = s.target.name;
    const { signal } = s.abort;
    while (!signal.aborted && !this.#stopped) {
      try {
        await this.#follow(s);
        throw new Error(`host ${host}: the event stream ended`);
      } catch (err) {
        if (signal.aborted || this.#stopped) return;
        const was = s.connected;
        const before = s.error;
        s.connected = false;
        s.error = (err as Error).message;
        s.dirty.clear();
        const dropped = this.#dropHost(host);
        // A host that stays unreachable redraws nothing per retry: only a change is told.
        if (was || dropped || s.error !== before) this.#notify();
      }
      const delay = s.backoff.next();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        timer.unref();
        signal.addEventListener('abort', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** One connection: resolves when the stream ends, rejects when it fails. */
  async #follow(s: HostStream): Promise<void> {
    const host = s.target.name;
    const idleMs = this.#o.idleMs ?? 45_000;
    const attempt = new AbortController();
    const onAbort = () => attempt.abort();
    s.abort.signal.addEventListener('abort', onAbort);
    let idle: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => attempt.abort(new Error(`no byte for ${idleMs} ms`)), idleMs);
      idle.unref();
    };
    try {
      arm();
      const token = await this.#o.token(host);
      const res = await this.#get(s.target, token, '/v1/events', attempt.signal);
      const parser = new SseParser(({ type, data }) => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(data);
        } catch {
          return;
        }
        this.#onEvent(s, token, type, parsed);
      });
      const decoder = new TextDecoder();
      for await (const chunk of (res.body ?? []) as AsyncIterable<Uint8Array>) {
        arm();
        parser.push(decoder.decode(chunk, { stream: true }));
      }
    } catch (err) {
      const why =
        attempt.signal.aborted && attempt.signal.reason instanceof Error ? attempt.signal.reason : err;
      const message = (why as Error).message;
      // runtimeGet's errors name the host already; one that breaks off mid-stream does not.
      throw new Error(
        message.startsWith(`host ${host}:`) ? message : `host ${host}: event stream: ${message}`,
      );
    } finally {
      clearTimeout(idle);
      s.abort.signal.removeEventListener('abort', onAbort);
      attempt.abort();
    }
  }

  #onEvent(s: HostStream, token: string, type: string, data: unknown): void {
    const host = s.target.name;
    if (type === 'snapshot') {
      const replicas = (data as { replicas?: unknown })?.replicas;
      this.#dropHost(host);
      for (const r of Array.isArray(replicas) ? replicas : []) {
        const status = runtimeReplicaOf(r);
        const key = status && keyOfRuntimeId(status.id);
        if (status && key) this.#entries.set(key, { host, status });
      }
      s.connected = true;
      s.error = undefined;
      s.backoff.reset();
      this.#notify();
      return;
    }
    if (!s.connected) return;
    const e = data as { replica?: unknown; namespace?: unknown; name?: unknown };
    const key =
      typeof e?.namespace === 'string' && typeof e.name === 'string'
        ? `${e.namespace}/${e.name}`
        : typeof e?.replica === 'string'
          ? keyOfRuntimeId(e.replica)
          : undefined;
    if (!key) return;
    if (type === 'stopped') {
      s.dirty.delete(key);
      if (this.#entries.get(key)?.host === host) {
        this.#entries.delete(key);
        this.#notify();
      }
      return;
    }
    s.dirty.add(key);
    this.#gather(s, token);
  }

  /** The dirty replicas read after GATHER_MS (the events of one restart come together). */
  #gather(s: HostStream, token: string): void {
    if (s.gather || s.abort.signal.aborted) return;
    s.gather = setTimeout(() => {
      s.gather = undefined;
      this.#readDirty(s, token);
    }, GATHER_MS);
    s.gather.unref();
  }

  /** Reads the dirty replicas' statuses, one read per replica and READS_PER_HOST per host at most. */
  #readDirty(s: HostStream, token: string): void {
    const host = s.target.name;
    for (const key of s.dirty) {
      if (s.reading.size >= READS_PER_HOST) return;
      if (s.reading.has(key)) continue;
      s.dirty.delete(key);
      s.reading.add(key);
      const [namespace = '', name = ''] = key.split('/');
      const path = `/v1/replicas/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`;
      void this.#get(s.target, token, path, s.abort.signal)
        .then((res) => res.json())
        .then(
          (body: unknown) => {
            const status = runtimeReplicaOf((body as { status?: unknown })?.status);
            if (!status || !s.connected || this.#streams.get(host) !== s) return;
            this.#entries.set(key, { host, status });
            this.#notify();
          },
          (err: Error) => {
            // Gone meanwhile (404): its `stopped` event says so; other failures: the next event reads again.
            if (/answered 404/.test(err.message) && this.#entries.get(key)?.host === host) {
              this.#entries.delete(key);
              this.#notify();
            }
          },
        )
        .finally(() => {
          s.reading.delete(key);
          if (s.dirty.size > 0) this.#gather(s, token);
        });
    }
  }
}
