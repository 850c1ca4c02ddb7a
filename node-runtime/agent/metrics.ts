/**
 * Prometheus metrics of one agent, in a registry of its own (two agents in one process, as in
 * tests, do not collide). Names follow the Prometheus naming guide: `orrery_runtime_` prefix,
 * `_total` for counters, base units (seconds).
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from '../../platform/metrics.ts';
import type { WorkloadPhase } from '../supervisor/spec.ts';

const PHASES: WorkloadPhase[] = [
  'Pending',
  'Starting',
  'Running',
  'Succeeded',
  'Failed',
  'CrashLoopBackOff',
  'Terminating',
];

export class AgentMetrics {
  readonly registry = new Registry();
  readonly processRestarts: Counter<'namespace' | 'replica' | 'process'>;
  /** The process label values each replica has series for, so its series can go with it. */
  readonly #restartSeries = new Map<string, Set<string>>();
  readonly apiRejected: Counter<'reason'>;
  readonly runtimeEvents: Counter<'type'>;
  readonly spawnLatency: Histogram;
  readonly statusWriteRequests: Counter;
  readonly statusWrites: Counter<'outcome'>;
  readonly leaseRenewFailures: Counter;
  readonly leaseRenewals: Gauge;
  readonly selfFences: Counter;
  readonly reconciles: Counter<'outcome'>;

  constructor(host: string, phaseCounts: () => Map<WorkloadPhase, number>) {
    this.registry.setDefaultLabels({ host });
    collectDefaultMetrics({ register: this.registry, prefix: 'orrery_runtime_' });
    const registers = [this.registry];
    new Gauge({
      name: 'orrery_runtime_replicas',
      help: 'Replicas run by this runtime, by phase',
      labelNames: ['phase'],
      registers,
      collect() {
        const counts = phaseCounts();
        for (const phase of PHASES) this.set({ phase }, counts.get(phase) ?? 0);
      },
    });
    this.processRestarts = new Counter({
      name: 'orrery_runtime_process_restarts_total',
      help: 'Process restarts done by the supervisor',
      labelNames: ['namespace', 'replica', 'process'],
      registers,
    });
    this.apiRejected = new Counter({
      name: 'orrery_runtime_api_rejected_total',
      help: 'HTTP API requests refused or streams cut: connections or streams over their cap, event readers too slow',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of ['connections', 'streams', 'slow-reader']) this.apiRejected.inc({ reason }, 0);
    this.runtimeEvents = new Counter({
      name: 'orrery_runtime_events_total',
      help: 'Runtime events (started, exited, restarting, ready, ...), by type',
      labelNames: ['type'],
      registers,
    });
    this.spawnLatency = new Histogram({
      name: 'orrery_runtime_replica_start_seconds',
      help: 'Time to start a replica: runtime.run() from call to all processes spawned',
      buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.statusWriteRequests = new Counter({
      name: 'orrery_runtime_status_write_requests_total',
      help: 'Times a Replica status was asked to be written (one per runtime event); coalesced into fewer writes',
      registers,
    });
    this.statusWrites = new Counter({
      name: 'orrery_runtime_status_writes_total',
      help: 'Replica status writes by outcome: written, skipped (nothing changed), failed, gone (object deleted)',
      labelNames: ['outcome'],
      registers,
    });
    // Zero series exist from the start, so rate() and absent() behave before the first write.
    for (const outcome of ['written', 'skipped', 'failed', 'gone']) this.statusWrites.inc({ outcome }, 0);
    this.leaseRenewFailures = new Counter({
      name: 'orrery_runtime_lease_renew_failures_total',
      help: 'Failed API calls while renewing the host Lease',
      registers,
    });
    this.leaseRenewals = new Gauge({
      name: 'orrery_runtime_lease_last_renew_timestamp_seconds',
      help: 'When the host Lease was last renewed (Unix time)',
      registers,
    });
    this.selfFences = new Counter({
      name: 'orrery_runtime_self_fences_total',
      help: 'Times the runtime stopped every replica because it could not renew its Lease',
      registers,
    });
    this.reconciles = new Counter({
      name: 'orrery_runtime_reconciles_total',
      help: 'Replica reconciles by outcome',
      labelNames: ['outcome'],
      registers,
    });
  }

  /** A restart of one process of a replica. */
  countRestart(namespace: string, replica: string, process: string): void {
    const key = `${namespace}/${replica}`;
    const processes = this.#restartSeries.get(key) ?? new Set<string>();
    this.#restartSeries.set(key, processes.add(process));
    this.processRestarts.inc({ namespace, replica, process });
  }

  /** A replica gone from this host: its series go too, or a host would export every replica it ever ran. */
  forgetReplica(namespace: string, replica: string): void {
    const key = `${namespace}/${replica}`;
    for (const process of this.#restartSeries.get(key) ?? [])
      this.processRestarts.remove({ namespace, replica, process });
    this.#restartSeries.delete(key);
  }
}
