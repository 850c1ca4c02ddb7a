/**
 * The same-host fast path of the mesh (docs/DESIGN.md §6.1): the proxy reads the event streams
 * (`GET /v1/events`, server-sent events, docs/DESIGN.md §5.8) of the runtimes on its host, and
 * when one of them says a replica's process exited, or the replica is not ready or stopped, the
 * endpoints of that replica leave every pool at once: no waiting for the runtime's status write,
 * the operator's EndpointSlice write and the two watches between them. The feed only takes
 * endpoints out; what is in is still what the slices say is ready.
 *
 * The rule, per replica (`namespace/name`):
 * - **Down while its runtime says so.** From an `exited` or `notReady` event (or a stream's
 *   opening snapshot listing it not ready, or a `started` one it has not yet called ready) until
 *   that runtime reports it ready again (`ready`, or a later snapshot). While a stream is up it
 *   misses nothing: one ordered connection that starts with a snapshot.
 * - **At most `holdMs` (10 s) on a runtime's word that is no longer current.** A replica the
 *   runtime reports `stopped` (gone from it), and every replica down on a runtime whose stream
 *   was lost, stays down until a runtime reports it ready (a reopened stream's snapshot
 *   included) or for `holdMs`, whichever comes first; by then its slice says what became of it.
 *   So a missed event cannot keep an endpoint out for longer than that. A stream silent for
 *   `idleMs` (three of the runtime's 15 s pings) counts as lost and is opened again.
 *
 * A runtime that cannot be reached is logged and tried again with back-off, never fatal: the
 * proxy serves from the slices regardless. The stream's JSON is read by its shape, not through the
 * runtime's types: mesh/ does not import node-runtime/ (§2.2).
 */

import { EventEmitter } from 'node:events';
import type { ClientRequest } from 'node:http';
import { Backoff, type Logger, silentLogger } from '../kube/index.ts';
import { http, https } from '../platform/http.ts';
import { SseParser } from '../platform/sse.ts';

/** How long a stopped replica, or one down on a runtime whose stream was lost, stays out at most. */
export const DEFAULT_HOLD_MS = 10_000;
/** No byte for this long (the runtime sends a comment every 15 s) and the stream is opened again. */
export const DEFAULT_IDLE_MS = 45_000;
const BACKOFF_INITIAL_MS = 100;
const BACKOFF_MAX_MS = 5_000;
/** Bytes of a refusal's body kept for the log. */
const ERROR_BODY_BYTES = 512;
const EMPTY: ReadonlySet<string> = new Set();

// --- server-sent events: platform/sse.ts (the TUI reads the same streams) ------------------

export { type SseEvent, SseParser } from '../platform/sse.ts';

// --- the rule ---------------------------------------------------------------------------------

/**
 * `namespace/name` of a runtime replica id: the host agent names replicas `<namespace>.<name>`
 * (node-runtime/agent/replica-spec.ts), and namespaces hold no dot.
 */
export function keyOfRuntimeId(id: string): string | undefined {
  const dot = id.indexOf('.');
  if (dot <= 0 || dot === id.length - 1) return undefined;
  return `${id.slice(0, dot)}/${id.slice(dot + 1)}`;
}

/** What one runtime event says about its replica, for the rule. */
export type Report = 'down' | 'ready' | 'running' | 'stopped';

/**
 * The rule above, pure (the clock is injected). Each change returns the namespaces whose set of
 * down replicas changed (empty when none did); `downIn(namespace)` gives that set, the same object
 * for as long as it does not change.
 */
export class LocalDownState {
  readonly #holdMs: number;
  readonly #now: () => number;
  /** Per runtime whose stream is up: the replicas it runs, and whether each is ready. */
  readonly #runtimes = new Map<string, Map<string, boolean>>();
  /** Replicas out until a time (ms): stopped ones, and those down on a runtime whose stream was lost. */
  readonly #held = new Map<string, number>();
  #down = new Set<string>();
  #byNamespace = new Map<string, ReadonlySet<string>>();

  constructor(opts: { holdMs?: number; now?: () => number } = {}) {
    this.#holdMs = opts.holdMs ?? DEFAULT_HOLD_MS;
    this.#now = opts.now ?? (() => performance.now());
  }

  /** A stream (re)opened with this list of the runtime's replicas. */
  snapshot(runtime: string, replicas: readonly { key: string; ready: boolean }[]): Set<string> {
    const known = new Map<string, boolean>();
    for (const r of replicas) {
      known.set(r.key, r.ready);
      if (r.ready) this.#held.delete(r.key);
    }
    this.#runtimes.set(runtime, known);
    return this.#recompute();
  }

  /** One event of a runtime whose stream is up. */
  report(runtime: string, key: string, what: Report): Set<string> {
    const known = this.#runtimes.get(runtime);
    if (!known) return new Set();
    switch (what) {
      case 'down':
        known.set(key, false);
        break;
      case 'ready':
        known.set(key, true);
        this.#held.delete(key);
        break;
      case 'running':
        // Started or adopted: it runs here; until the runtime calls it ready, it is not.
        if (!known.has(key)) known.set(key, false);
        break;
      case 'stopped':
        known.delete(key);
        this.#hold(key);
        break;
    }
    return this.#recompute();
  }

  /** The runtime's stream is lost: what it said is down stays down for holdMs at most. */
  lost(runtime: string): Set<string> {
    const known = this.#runtimes.get(runtime);
    if (!known) return new Set();
    this.#runtimes.delete(runtime);
    for (const [key, ready] of known) if (!ready) this.#hold(key);
    return this.#recompute();
  }

  /** Holds whose time is up end. */
  expire(): Set<string> {
    return this.#recompute();
  }

  /** When the next hold ends (the clock's ms), if any. */
  nextExpiry(): number | undefined {
    let next: number | undefined;
    for (const until of this.#held.values()) if (next === undefined || until < next) next = until;
    return next;
  }

  /** `namespace/name` of every replica down now. */
  get down(): ReadonlySet<string> {
    return this.#down;
  }

  /** Names of the replicas of `namespace` down now; the same object until that set changes. */
  downIn(namespace: string): ReadonlySet<string> {
    return this.#byNamespace.get(namespace) ?? EMPTY;
  }

  #hold(key: string): void {
    const until = this.#now() + this.#holdMs;
    if ((this.#held.get(key) ?? 0) < until) this.#held.set(key, until);
  }

  #recompute(): Set<string> {
    const next = new Set<string>();
    for (const known of this.#runtimes.values()) for (const [key, ready] of known) if (!ready) next.add(key);
    const now = this.#now();
    for (const [key, until] of this.#held) {
      if (until > now) next.add(key);
      else this.#held.delete(key);
    }
    const changed = new Set<string>();
    for (const key of next) if (!this.#down.has(key)) changed.add(namespaceOf(key));
    for (const key of this.#down) if (!next.has(key)) changed.add(namespaceOf(key));
    this.#down = next;
    if (changed.size > 0) {
      const byNamespace = new Map<string, Set<string>>();
      for (const key of next) {
        const ns = namespaceOf(key);
        if (!changed.has(ns)) continue;
        const names = byNamespace.get(ns) ?? new Set<string>();
        byNamespace.set(ns, names);
        names.add(key.slice(ns.length + 1));
      }
      for (const ns of changed) {
        const names = byNamespace.get(ns);
        if (names) this.#byNamespace.set(ns, names);
        else this.#byNamespace.delete(ns);
      }
    }
    return changed;
  }
}

function namespaceOf(key: string): string {
  return key.slice(0, key.indexOf('/'));
}

/** What an event of the stream says, or undefined for one the rule does not use. */
export function reportOf(type: string, data: unknown): { key: string; what: Report } | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const e = data as { replica?: unknown; namespace?: unknown; name?: unknown; replicaReady?: unknown };
  const key =
    typeof e.namespace === 'string' && typeof e.name === 'string'
      ? `${e.namespace}/${e.name}`
      : typeof e.replica === 'string'
        ? keyOfRuntimeId(e.replica)
        : undefined;
  if (key === undefined) return undefined;
  switch (type) {
    case 'exited':
    case 'notReady':
      return { key, what: 'down' };
    case 'ready':
      return { key, what: e.replicaReady === false ? 'down' : 'ready' };
    case 'started':
    case 'adopted':
      return { key, what: 'running' };
    case 'stopped':
      return { key, what: 'stopped' };
    default:
      return undefined; // restarting, backoff: the exit already said it
  }
}

/** The replicas of a `snapshot` event: `{host, replicas: [{id, ready, ...}]}`. */
export function snapshotOf(data: unknown): {
  host: string | undefined;
  replicas: { key: string; ready: boolean }[];
} {
  const s = (typeof data === 'object' && data !== null ? data : {}) as { host?: unknown; replicas?: unknown };
  const replicas: { key: string; ready: boolean }[] = [];
  for (const r of Array.isArray(s.replicas) ? s.replicas : []) {
    const id = (r as { id?: unknown } | null)?.id;
    const key = typeof id === 'string' ? keyOfRuntimeId(id) : undefined;
    if (key !== undefined) replicas.push({ key, ready: (r as { ready?: unknown }).ready === true });
  }
  return { host: typeof s.host === 'string' ? s.host : undefined, replicas };
}

// --- the streams ------------------------------------------------------------------------------

export interface LocalFeedOptions {
  /** Base URLs of the HTTP APIs of the runtimes on this host (their `Host.status.apiEndpoint`). */
  runtimes: readonly string[];
  /** Their bearer token, asked for at every (re)connect (a token file may have been rewritten). */
  token: () => string | Promise<string>;
  /**
   * For an https runtime, the PEM certificate to trust for it alone (its Host's
   * status.apiCertificate), asked for at every (re)connect: a runtime makes a new one at each start.
   */
  certificate?: ((runtime: string) => Promise<string | undefined>) | undefined;
  holdMs?: number | undefined;
  idleMs?: number | undefined;
  log?: Logger | undefined;
  /**
   * Called at once, on the event that changed it, with the namespaces whose set of down replicas
   * changed (read them with downIn). The proxy takes the endpoints out of its pools here, and
   * returns how many endpoints are out that its EndpointSlices still call ready (logged as
   * `aheadOfSlices`: the fast path acting before the slices).
   */
  onChange?: ((namespaces: ReadonlySet<string>) => number | undefined) | undefined;
}

/** A change of the down set, as the feed's 'change' event reports it (after onChange ran). */
export interface LocalFeedChange {
  namespaces: ReadonlySet<string>;
  /** The runtime whose word changed it; undefined when a hold ran out. */
  runtime: string | undefined;
  /** The event: exited, notReady, ready, stopped, snapshot, lost, expired, ... */
  type: string;
  /** `namespace/name`, for an event about one replica. */
  replica: string | undefined;
}

export interface RuntimeStreamStatus {
  runtime: string;
  connected: boolean;
  /** The host the runtime said it is, once connected. */
  host: string | undefined;
  lastError: string | undefined;
}

/**
 * The streams of the host's runtimes and the rule's state. Emits 'change' (LocalFeedChange) after
 * each change, once onChange has run.
 */
export class LocalFeed extends EventEmitter {
  readonly #state: LocalDownState;
  readonly #o: LocalFeedOptions;
  readonly #log: Logger;
  readonly #streams: RuntimeStream[];
  #expiry: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(opts: LocalFeedOptions) {
    super();
    this.#o = opts;
    this.#log = opts.log ?? silentLogger;
    this.#state = new LocalDownState({ holdMs: opts.holdMs });
    const certificate = opts.certificate;
    this.#streams = [...new Set(opts.runtimes)].map(
      (runtime) =>
        new RuntimeStream({
          url: runtime,
          token: opts.token,
          certificate: certificate && (() => certificate(runtime)),
          idleMs: opts.idleMs ?? DEFAULT_IDLE_MS,
          log: this.#log.child({ runtime }),
          onSnapshot: (replicas) => this.#apply(this.#state.snapshot(runtime, replicas), runtime, 'snapshot'),
          onEvent: (type, data) => {
            const r = reportOf(type, data);
            if (r) this.#apply(this.#state.report(runtime, r.key, r.what), runtime, type, r.key);
          },
          onLost: () => this.#apply(this.#state.lost(runtime), runtime, 'lost'),
        }),
    );
  }

  start(): void {
    for (const s of this.#streams) s.start();
  }

  /** Names of the replicas of `namespace` down now; the same object until that set changes. */
  downIn(namespace: string): ReadonlySet<string> {
    return this.#state.downIn(namespace);
  }

  /** `namespace/name` of every replica down now. */
  get down(): ReadonlySet<string> {
    return this.#state.down;
  }

  streams(): RuntimeStreamStatus[] {
    return this.#streams.map((s) => s.status());
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#expiry);
    await Promise.all(this.#streams.map((s) => s.stop()));
  }

  #apply(namespaces: Set<string>, runtime: string | undefined, type: string, replica?: string): void {
    if (this.#stopped) return;
    if (namespaces.size > 0) {
      let aheadOfSlices: number | undefined;
      try {
        aheadOfSlices = this.#o.onChange?.(namespaces);
      } catch (err) {
        this.#log.error({ err: (err as Error).message }, 'applying the local down set failed');
      }
      const change: LocalFeedChange = { namespaces, runtime, type, replica };
      this.emit('change', change);
      if (replica !== undefined) {
        const down = this.#state.down.has(replica);
        this.#log.info(
          { replica, event: type, down, aheadOfSlices },
          down ? 'replica out of the pools' : 'replica back in the pools',
        );
      } else {
        this.#log.info({ event: type, down: this.#state.down.size, aheadOfSlices }, 'local down set changed');
      }
    }
    this.#scheduleExpiry();
  }

  #scheduleExpiry(): void {
    clearTimeout(this.#expiry);
    this.#expiry = undefined;
    const next = this.#state.nextExpiry();
    if (next === undefined || this.#stopped) return;
    this.#expiry = setTimeout(
      () => this.#apply(this.#state.expire(), undefined, 'expired'),
      Math.max(0, next - performance.now()) + 1,
    );
    this.#expiry.unref();
  }
}

interface RuntimeStreamOptions {
  url: string;
  token: () => string | Promise<string>;
  certificate: (() => Promise<string | undefined>) | undefined;
  idleMs: number;
  log: Logger;
  onSnapshot: (replicas: { key: string; ready: boolean }[]) => void;
  onEvent: (type: string, data: unknown) => void;
  onLost: () => void;
}

/** One runtime's `/v1/events`, opened again (with back-off) whenever it ends or cannot be opened. */
class RuntimeStream {
  readonly #o: RuntimeStreamOptions;
  readonly #backoff = new Backoff(BACKOFF_INITIAL_MS, BACKOFF_MAX_MS);
  #request: ClientRequest | undefined;
  #retry: NodeJS.Timeout | undefined;
  #connected = false;
  #host: string | undefined;
  #lastError: string | undefined;
  /** Failures in a row since the last snapshot (the first of a run is a warning, the others debug). */
  #failures = 0;
  #stopped = false;
  #closed: Promise<void> = Promise.resolve();

  constructor(opts: RuntimeStreamOptions) {
    this.#o = opts;
  }

  start(): void {
    void this.#open();
  }

  status(): RuntimeStreamStatus {
    return { runtime: this.#o.url, connected: this.#connected, host: this.#host, lastError: this.#lastError };
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retry);
    this.#request?.destroy();
    await this.#closed;
  }

  async #open(): Promise<void> {
    if (this.#stopped) return;
    let token: string;
    try {
      token = (await this.#o.token()).trim();
    } catch (err) {
      this.#failed(`no token: ${(err as Error).message}`);
      return;
    }
    const url = `${this.#o.url.replace(/\/+$/, '')}/v1/events`;
    const secure = url.startsWith('https:');
    let certificate: string | undefined;
    if (secure) {
      try {
        certificate = await this.#o.certificate?.();
      } catch (err) {
        this.#failed(`no certificate to trust: ${(err as Error).message}`);
        return;
      }
      // The token is never sent to a server that cannot be told apart from any other.
      if (!certificate) {
        this.#failed('no certificate to trust: no Host publishes this endpoint with a status.apiCertificate');
        return;
      }
    }
    if (this.#stopped) return;
    let done!: () => void;
    this.#closed = new Promise((resolve) => (done = resolve));
    let ended = false;
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      this.#request = undefined;
      done();
      if (this.#connected) {
        this.#connected = false;
        this.#o.onLost();
      }
      this.#failed(why);
    };
    let req: ClientRequest;
    try {
      const headers = { authorization: `Bearer ${token}`, accept: 'text/event-stream' };
      req = secure
        ? // Trusting the published certificate alone, whatever names it carries (a pin).
          https.get(url, { headers, agent: false, ca: certificate, checkServerIdentity: () => undefined })
        : http.get(url, { headers, agent: false });
    } catch (err) {
      end((err as Error).message);
      return;
    }
    this.#request = req;
    req.setTimeout(this.#o.idleMs, () => req.destroy(new Error(`no byte for ${this.#o.idleMs} ms`)));
    req.on('error', (err) => end(err.message));
    req.on('close', () => end('stream closed'));
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (body.length < ERROR_BODY_BYTES) body += chunk;
        });
        res.on('end', () => {
          end(`HTTP ${res.statusCode}: ${body.slice(0, ERROR_BODY_BYTES).trim()}`);
          req.destroy();
        });
        return;
      }
      req.socket?.setNoDelay(true);
      res.setEncoding('utf8');
      const parser = new SseParser(({ type, data }) => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(data);
        } catch {
          return;
        }
        if (type === 'snapshot') {
          const { host, replicas } = snapshotOf(parsed);
          this.#connected = true;
          this.#host = host;
          this.#lastError = undefined;
          this.#failures = 0;
          this.#backoff.reset();
          this.#o.log.info({ host, replicas: replicas.length }, 'runtime event stream open');
          this.#o.onSnapshot(replicas);
        } else if (this.#connected) {
          this.#o.onEvent(type, parsed);
        }
      });
      res.on('data', (chunk: string) => parser.push(chunk));
      res.on('end', () => end('stream ended'));
      res.on('error', (err) => end(err.message));
    });
  }

  #failed(why: string): void {
    if (this.#stopped) return;
    this.#failures++;
    const fields = { err: why, failures: this.#failures };
    if (this.#failures === 1 || why !== this.#lastError) {
      this.#o.log.warn(
        fields,
        'runtime event stream lost or not reachable; retrying (the slices still apply)',
      );
    } else {
      this.#o.log.debug(fields, 'runtime event stream still not reachable');
    }
    this.#lastError = why;
    clearTimeout(this.#retry);
    this.#retry = setTimeout(() => void this.#open(), this.#backoff.next());
    this.#retry.unref();
  }
}
