/**
 * The self-fencing policy (node-runtime/agent/README.md, "Heartbeat and self-fencing"): when the
 * host's Lease could not be renewed for its whole duration, the operator (which still reaches the
 * API server) may be moving this host's replicas elsewhere, so every replica here is killed, and
 * nothing runs again until a renewal succeeds and each fenced replica has been read fresh from the
 * API.
 *
 * Except when the API server itself is in trouble (refusing or resetting connections, answering
 * 5xx/429): it is so for everyone, nobody can move anything, and killing workloads would turn a
 * control plane restart into an outage. Such a failure defers the fence; a renewal that gets no
 * answer at all (a partition) fences, also while deferred.
 */
import type { Logger } from 'pino';
import { Backoff, KubeApiError, sleep } from '../../kube/index.ts';
import type { AgentMetrics } from './metrics.ts';
import { keyOfReplicaId } from './replica-spec.ts';

/**
 * Whether a failed renewal shows the API server itself in trouble (down, restarting, overloaded)
 * rather than unreachable from here: the connection was refused or reset, or the server answered
 * with a 5xx or 429. A partition looks different: requests get no answer at all (they hang, time
 * out, or the network is unreachable).
 */
function apiServerTrouble(err: unknown): boolean {
  for (
    let e = err as { code?: unknown; status?: unknown; cause?: unknown } | undefined, depth = 0;
    e && depth < 5;
    depth++
  ) {
    if (e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' || e.code === 'EPIPE') return true;
    if (e instanceof KubeApiError && (e.status >= 500 || e.status === 429)) return true;
    e = e.cause as typeof e;
  }
  return false;
}

export interface FencePolicyOptions {
  log: Logger;
  metrics: AgentMetrics;
  leaseDurationSeconds: number;
  /** The runtime ids of every replica on this host. */
  replicaIds: () => string[];
  /** Stops one replica at once (grace 0, then the cgroup kill), keeping its logs. */
  stopReplica: (id: string) => Promise<void>;
  /** Registers the Host again after a fence; throws when it could not (retried). */
  register: () => Promise<void>;
  /** Once registered again and unfenced: reconcile everything, the fenced replicas included. */
  resync: (fencedKeys: ReadonlySet<string>) => void;
  /** True once the agent is stopping: no fence, no recovery. */
  stopping: () => boolean;
}

export class FencePolicy {
  readonly #o: FencePolicyOptions;
  #fenced = false;
  #deferred = false;
  #lastRenewError: unknown;
  /** Keys whose replica the fence stopped: re-checked against a fresh read before running again. */
  readonly #fencedKeys = new Set<string>();
  /** The fence's stops: recovery waits for them, so a replica half-stopped is not taken as running. */
  #stops: Promise<void> = Promise.resolve();

  constructor(options: FencePolicyOptions) {
    this.#o = options;
  }

  /** True from the fence until the Host is registered again after a renewal succeeded. */
  get fenced(): boolean {
    return this.#fenced;
  }

  /** Marks a replica as stopped by the fence (one that finished starting after it fell). */
  markFenced(key: string): void {
    this.#fencedKeys.add(key);
  }

  /** Whether the fence stopped this replica, forgetting it: its caller reads the object fresh. */
  takeFenced(key: string): boolean {
    return this.#fencedKeys.delete(key);
  }

  /** For the Lease heartbeat: a renewal failed. */
  onRenewFailure = (err: unknown): void => {
    this.#o.metrics.leaseRenewFailures.inc();
    this.#lastRenewError = err;
    if (this.#deferred && !apiServerTrouble(err)) {
      this.#deferred = false;
      this.#fence();
    }
  };

  /** For the Lease heartbeat: no renewal succeeded for the Lease's whole duration. */
  onLost = (): void => {
    if (this.#fenced || this.#o.stopping()) return;
    if (apiServerTrouble(this.#lastRenewError)) {
      this.#deferred = true;
      this.#o.log.warn(
        { leaseDurationSeconds: this.#o.leaseDurationSeconds },
        'host Lease not renewed for its whole duration, but the API server is down or failing (not partitioned from us): keeping replicas running',
      );
      return;
    }
    this.#fence();
  };

  /** For the Lease heartbeat: a renewal succeeded after the Lease was lost. */
  onRecovered = (): void => {
    this.#deferred = false;
    if (!this.#fenced || this.#o.stopping()) return;
    this.#o.log.warn(
      { replicas: this.#fencedKeys.size },
      'host Lease renewed again: re-registering and resyncing',
    );
    void this.#recover();
  };

  #fence(): void {
    if (this.#fenced || this.#o.stopping()) return;
    this.#fenced = true;
    this.#o.metrics.selfFences.inc();
    const ids = this.#o.replicaIds();
    for (const id of ids) {
      const key = keyOfReplicaId(id);
      if (key) this.#fencedKeys.add(key);
    }
    this.#o.log.error(
      { replicas: ids.length, leaseDurationSeconds: this.#o.leaseDurationSeconds },
      'self-fencing: the host Lease could not be renewed for its whole duration; killing every replica so the operator can run them elsewhere',
    );
    this.#stops = Promise.all(
      ids.map((id) =>
        this.#o.stopReplica(id).catch((err: Error) => {
          this.#o.log.error({ replica: id, err: err.message }, 'self-fencing: stopping a replica failed');
        }),
      ),
    ).then(() => {
      this.#o.log.warn({ replicas: ids.length }, 'self-fencing: every replica stopped');
    });
  }

  async #recover(): Promise<void> {
    await this.#stops;
    const backoff = new Backoff(200, 4000);
    for (let attempt = 0; !this.#o.stopping(); attempt++) {
      try {
        await this.#o.register();
        break;
      } catch (err) {
        this.#o.log.warn({ err: (err as Error).message, attempt }, 're-registration failed; retrying');
        await sleep(backoff.next());
      }
    }
    this.#fenced = false;
    this.#o.resync(this.#fencedKeys);
  }
}
