/**
 * Replica.status from what the runtime reports, and the writer that puts it in the API.
 *
 * The writer coalesces per replica, the way the kubelet's status manager does for pods: at most
 * one write in flight per replica; events arriving meanwhile only mark it dirty, and when the
 * write returns the *latest* state is written once. The first write starts on the next
 * microtask (no batching delay: apply -> Running must stay in milliseconds), and a status equal
 * to the last one written is not written again. On top, a token bucket per replica (a burst of
 * BURST writes, then RATE per second) keeps a restart storm from costing one write per API round
 * trip: Starting -> Running -> Ready go out at once, a crash loop settles at RATE writes/s, and
 * the last state is always written.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { type ConditionInput, setConditions } from '../../crds/conditions.ts';
import { hasConfigReferences } from '../../crds/config-refs.ts';
import type { ProcessStatus as ApiProcessStatus, Replica, ReplicaStatus } from '../../crds/types.ts';
import { isConflict, isNotFound, type ResourceClient, sleep } from '../../kube/index.ts';
import type { WorkloadStatus } from '../supervisor/spec.ts';

/**
 * Why the agent could not run a replica at all (validation, port allocation): shown as phase
 * Failed; or, `waiting`, why it does not run it yet (a ConfigMap or Secret it needs): Pending.
 */
export interface RunFailure {
  reason: string;
  message: string;
  waiting?: boolean;
}

function processStatus(p: WorkloadStatus['processes'][number]): ApiProcessStatus {
  const out: ApiProcessStatus = { name: p.name, state: p.state, ready: p.ready, restarts: p.restarts };
  if (p.pid !== null) out.pid = p.pid;
  if (p.startedAt !== null) out.startedAt = p.startedAt;
  if (p.lastExit) {
    const e: NonNullable<ApiProcessStatus['lastExit']> = { reason: p.lastExit.reason, at: p.lastExit.at };
    if (p.lastExit.code !== null) e.code = p.lastExit.code;
    if (p.lastExit.signal !== null) e.signal = p.lastExit.signal;
    if (p.lastExit.message) e.message = p.lastExit.message;
    out.lastExit = e;
  }
  return out;
}

/** The process whose last exit explains a CrashLoopBackOff or Failed phase: the most recent abnormal exit. */
function culprit(rs: WorkloadStatus) {
  let best: WorkloadStatus['processes'][number] | undefined;
  for (const p of rs.processes) {
    if (!p.lastExit || p.lastExit.reason === 'Completed') continue;
    if (!best?.lastExit || p.lastExit.at > best.lastExit.at) best = p;
  }
  return best;
}

function describeExit(p: WorkloadStatus['processes'][number]): string {
  const e = p.lastExit;
  if (!e) return `process ${p.name} failed`;
  if (e.message) return `process ${p.name}: ${e.message}`;
  if (e.signal) return `process ${p.name} was killed by ${e.signal} (${e.reason})`;
  return `process ${p.name} exited with code ${e.code} (${e.reason})`;
}

/** Replica.status as the API wants it (no nulls: the schema has integers and strings, not nullables). */
export function apiStatusOf(
  replica: Replica,
  rs: WorkloadStatus | undefined,
  failure: RunFailure | undefined,
  address: string,
): ReplicaStatus {
  const status = runtimeFacts(replica, rs, failure, address);
  // The scheduler wrote Scheduled=False (and reason Unschedulable) while the replica was
  // unbound; from binding on this host owns the status, as the kubelet does after kube-scheduler.
  const conditions: ConditionInput[] = [
    { type: 'Scheduled', status: 'True', reason: 'Bound', message: `bound to host ${replica.spec.host}` },
    {
      type: 'Ready',
      status: status.ready ? 'True' : 'False',
      reason: status.ready ? 'ProcessesReady' : (status.reason ?? status.phase ?? 'Pending'),
      message: status.ready ? 'every process runs and passes its readiness probe' : (status.message ?? ''),
    },
  ];
  const config = configCondition(replica, rs, failure);
  if (config) conditions.push(config);
  status.conditions = setConditions(replica.status?.conditions, conditions, replica.metadata.generation);
  return status;
}

/**
 * ConfigResolved, for a replica whose env reads ConfigMaps or Secrets: False (with what is
 * missing) while it waits for them, True once it was started with them; unchanged in between.
 */
function configCondition(
  replica: Replica,
  rs: WorkloadStatus | undefined,
  failure: RunFailure | undefined,
): ConditionInput | undefined {
  // A host path the replica waits for is no configuration of the API's: phase and reason say it.
  if (failure?.waiting && failure.reason !== 'HostPathUnavailable') {
    return { type: 'ConfigResolved', status: 'False', reason: failure.reason, message: failure.message };
  }
  if (rs && hasConfigReferences(replica.spec.template)) {
    return {
      type: 'ConfigResolved',
      status: 'True',
      reason: 'Resolved',
      message: 'every ConfigMap and Secret reference was read when the replica started',
    };
  }
  return undefined;
}

/** Every field of Replica.status the runtime writes: absent ones are sent as null, so a merge patch clears them. */
const STATUS_FIELDS = [
  'phase',
  'ready',
  'address',
  'ports',
  'startedAt',
  'restarts',
  'message',
  'reason',
  'observedGeneration',
  'processes',
  'conditions',
] as const;

/** A JSON merge patch (RFC 7386) of status that leaves exactly `status`. */
function statusMergePatch(status: ReplicaStatus): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const f of STATUS_FIELDS) patch[f] = status[f] ?? null;
  return patch;
}

/** Informer copy a status was written against -> the resourceVersion that write made. */
export type OwnWrites = WeakMap<Replica, string>;

/**
 * Replaces the whole status of `replica` (the scheduler's fields from before the binding, reason
 * Unschedulable and its message, must go). A PUT to /status with the resourceVersion, of which
 * the API server takes only status, costs it ~20% less than a merge patch, which it must apply
 * to the stored object and decode again. `replica` is the informer's copy; until the watch brings
 * a write back, the next write starts from the version it made (`ownWrites`). On a conflict (a
 * label or finalizer changed meanwhile) the same status goes as a merge patch naming every field,
 * absent ones as null: one writer of status after binding, so it needs no precondition.
 */
export async function replaceReplicaStatus(
  replicas: ResourceClient<Replica>,
  replica: Replica,
  status: ReplicaStatus,
  ownWrites: OwnWrites,
): Promise<void> {
  const name = replica.metadata.name as string;
  const namespace = replica.metadata.namespace as string;
  const resourceVersion = ownWrites.get(replica) ?? replica.metadata.resourceVersion;
  try {
    const written = await replicas.replaceStatus(
      { metadata: { name, namespace, resourceVersion }, status } as Replica,
      { namespace },
    );
    ownWrites.set(replica, written.metadata.resourceVersion as string);
  } catch (err) {
    if (!isConflict(err)) throw err;
    await replicas.patchStatus(name, statusMergePatch(status), { namespace });
  }
}

function runtimeFacts(
  replica: Replica,
  rs: WorkloadStatus | undefined,
  failure: RunFailure | undefined,
  address: string,
): ReplicaStatus {
  const status: ReplicaStatus = {};
  if (replica.metadata.generation !== undefined) status.observedGeneration = replica.metadata.generation;
  if (!rs) {
    if (failure?.waiting) {
      status.phase = 'Pending';
      status.ready = false;
      status.reason = failure.reason;
      status.message = failure.message;
    } else if (failure) {
      status.phase = 'Failed';
      status.ready = false;
      status.reason = failure.reason;
      status.message = failure.message;
    } else {
      status.phase = 'Pending';
      status.ready = false;
    }
    return status;
  }
  status.phase = rs.phase;
  status.ready = rs.ready;
  status.address = address;
  const protocols = new Map<string, 'http' | 'tcp'>();
  // The replica runs, so its template passed templateOf(); the protocol may still be defaulted.
  for (const p of replica.spec.template.processes) {
    for (const port of p.ports ?? []) protocols.set(`${p.name}/${port.name}`, port.protocol ?? 'tcp');
  }
  status.ports = rs.ports.map((p) => {
    const out: NonNullable<ReplicaStatus['ports']>[number] = {
      name: p.name,
      process: p.process,
      port: p.port,
    };
    const protocol = protocols.get(`${p.process}/${p.name}`);
    if (protocol) out.protocol = protocol;
    return out;
  });
  if (rs.startedAt) status.startedAt = rs.startedAt;
  status.restarts = rs.processes.reduce((sum, p) => sum + p.restarts, 0);
  status.processes = rs.processes.map(processStatus);
  const c = culprit(rs);
  if (rs.phase === 'CrashLoopBackOff') {
    status.reason = c?.lastExit?.reason === 'ExecFailed' ? 'ExecFailed' : 'CrashLoopBackOff';
    const until = rs.backoffUntil ? `; restarting at ${rs.backoffUntil}` : '';
    status.message = `${c ? describeExit(c) : 'restart intensity exceeded'}${until}`;
  } else if (rs.phase === 'Failed' && c) {
    status.reason = c.lastExit?.reason ?? 'Error';
    status.message = describeExit(c);
  } else if (rs.phase === 'Running' && c?.lastExit?.reason === 'ExecFailed' && c.pid === null) {
    status.reason = 'ExecFailed';
    status.message = describeExit(c);
  }
  return status;
}

export interface StatusWriterOptions {
  /** The status to write now for a key, or undefined when there is nothing to write (object gone). */
  compute: (key: string) => { replica: Replica; status: ReplicaStatus } | undefined;
  write: (replica: Replica, status: ReplicaStatus) => Promise<void>;
  log: Logger;
  onWrite?: (outcome: 'written' | 'skipped' | 'failed' | 'gone') => void;
}

interface Entry {
  inFlight: Promise<void> | undefined;
  dirty: boolean;
  /** uid + status last written successfully, to skip writes that change nothing. */
  lastUid: string | undefined;
  last: ReplicaStatus | undefined;
  /** Set when the last write failed: retried after a delay even without a new event. */
  retry: NodeJS.Timeout | undefined;
  tokens: number;
  refilledAt: number;
}

const RETRY_MS = 500;
/** Writes a replica may do back to back. */
const BURST = 3;
/** Sustained writes per second per replica once the burst is spent. */
const RATE = 5;

export class StatusWriter {
  readonly #o: StatusWriterOptions;
  readonly #entries = new Map<string, Entry>();
  #closed = false;
  /** Aborted by close(): a wait for a rate token ends at once. */
  readonly #closing = new AbortController();

  constructor(opts: StatusWriterOptions) {
    this.#o = opts;
  }

  /** Ask for the current status of `key` to reach the API; cheap, call it on every event. */
  request(key: string): void {
    if (this.#closed) return;
    let e = this.#entries.get(key);
    if (!e) {
      e = {
        inFlight: undefined,
        dirty: false,
        lastUid: undefined,
        last: undefined,
        retry: undefined,
        tokens: BURST,
        refilledAt: performance.now(),
      };
      this.#entries.set(key, e);
    }
    if (e.retry) {
      clearTimeout(e.retry);
      e.retry = undefined;
    }
    e.dirty = true;
    if (e.inFlight) return;
    const entry = e;
    entry.inFlight = Promise.resolve().then(() => this.#drain(key, entry));
  }

  /** Forget a key (the object is gone); an in-flight write still finishes. */
  forget(key: string): void {
    const e = this.#entries.get(key);
    if (e?.retry) clearTimeout(e.retry);
    if (e && !e.inFlight) this.#entries.delete(key);
  }

  /** Resolves when no write is in flight for `key`. */
  async settled(key: string): Promise<void> {
    for (;;) {
      const p = this.#entries.get(key)?.inFlight;
      if (!p) return;
      await p;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#closing.abort();
    for (const e of this.#entries.values()) if (e.retry) clearTimeout(e.retry);
    await Promise.all([...this.#entries.values()].map((e) => e.inFlight));
  }

  async #drain(key: string, e: Entry): Promise<void> {
    try {
      while (e.dirty && !this.#closed) {
        e.dirty = false;
        const next = this.#o.compute(key);
        if (!next) break;
        const uid = next.replica.metadata.uid;
        const current = e.lastUid === uid && e.last ? e.last : next.replica.status;
        if (current && isDeepStrictEqual(stripUndefined(current), stripUndefined(next.status))) {
          this.#o.onWrite?.('skipped');
          continue;
        }
        const now = performance.now();
        e.tokens = Math.min(BURST, e.tokens + ((now - e.refilledAt) * RATE) / 1000);
        e.refilledAt = now;
        if (e.tokens < 1) {
          // Out of tokens: wait for one, then write whatever is latest by then.
          await sleep(((1 - e.tokens) * 1000) / RATE, this.#closing.signal);
          e.dirty = true;
          continue;
        }
        e.tokens -= 1;
        try {
          await this.#o.write(next.replica, next.status);
          e.lastUid = uid;
          e.last = next.status;
          this.#o.onWrite?.('written');
        } catch (err) {
          if (isNotFound(err)) {
            this.#o.onWrite?.('gone');
            break;
          }
          this.#o.onWrite?.('failed');
          this.#o.log.warn({ replica: key, err: (err as Error).message }, 'status write failed; retrying');
          if (!this.#closed) {
            e.retry = setTimeout(() => {
              e.retry = undefined;
              this.request(key);
            }, RETRY_MS);
            e.retry.unref();
          }
          break;
        }
      }
    } finally {
      e.inFlight = undefined;
    }
  }
}

/** JSON round trip: drops undefined members so two statuses compare by what would be sent. */
function stripUndefined<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}
