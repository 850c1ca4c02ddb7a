/**
 * The host's presence in the API (node-runtime/agent/README.md, "Host registration" and
 * "Heartbeat"): the Host object, kept registered and Ready with its replica count, and the Lease
 * `host-<name>` renewed in orrery-system. What a lost Lease means for the replicas is the fence
 * policy's business (fence.ts); this part only reports renewals, failures and losses to it.
 */
import type { Logger } from 'pino';
import { HOST_LABEL, hostLeaseName, SYSTEM_NAMESPACE } from '../../crds/labels.ts';
import type { Host } from '../../crds/types.ts';
import {
  ensureNamespace,
  Informer,
  isForbidden,
  isNotFound,
  type KubeApi,
  type Lease,
  LeaseHeartbeat,
  leaseClient,
  type ResourceClient,
  sleep,
} from '../../kube/index.ts';
import { version } from '../../platform/package.ts';
import type { CgroupLayout } from '../cgroups/index.ts';
import { applyHostStatus, ensureHost, type HostFacts, hostStatus } from './host.ts';
import type { AgentMetrics } from './metrics.ts';
import { fenceAfterMs, type NormalizedAgentOptions } from './options.ts';
import type { PersistentData } from './persistent.ts';

/** Minimum time between two writes of Host.status.replicas. */
const HOST_COUNT_INTERVAL_MS = 1000;

export interface HostRegistrationOptions {
  api: KubeApi;
  /**
   * The Lease's renewals go through this one (default `api`): a pool of their own, so no backlog
   * of other writes delays a renewal past the fence point.
   */
  leaseApi?: KubeApi;
  hosts: ResourceClient<Host>;
  fieldManager: string;
  options: NormalizedAgentOptions;
  facts: HostFacts;
  layout: CgroupLayout;
  log: Logger;
  metrics: AgentMetrics;
  /** Replicas bound here and not being deleted. */
  replicaCount: () => number;
  /** The persistent volume data on this host (Host.status.persistentData). */
  persistentData: () => PersistentData[];
  /** True while the Host must not be written: fenced (the API is unreachable) or stopping. */
  paused: () => boolean;
  /** Lease events, for the fence policy. */
  onRenewFailure: (err: unknown) => void;
  onLost: () => void;
  onRecovered: () => void;
}

export class HostRegistration {
  readonly #o: HostRegistrationOptions;
  readonly #me: string;
  #readySince = nowSeconds();
  /** Where this agent's HTTP API is reached, as written to Host.status.apiEndpoint. */
  #apiEndpoint = '';
  /** The PEM certificate it serves, when over TLS (Host.status.apiCertificate). */
  #apiCertificate: string | undefined;
  readonly #hostInformer: Informer<Host>;
  #heartbeat: LeaseHeartbeat | undefined;
  #renewGauge: NodeJS.Timeout | undefined;
  readonly #stopped = new AbortController();
  // The coalesced Host writer: one write in flight, the latest wins.
  #writing = false;
  #dirty = false;
  #needRegister = false;
  #lastCount = -1;
  #lastCountWrite = 0;
  #meshDataPath: { kernel: boolean; reason?: string } | undefined;
  /** Host.status.persistentData as last written (JSON), and the write in flight. */
  #persistentWritten = '';
  #persistentWrite: Promise<void> = Promise.resolve();

  constructor(options: HostRegistrationOptions) {
    this.#o = options;
    this.#me = options.options.hostName;
    this.#hostInformer = new Informer<Host>(options.hosts, {
      fieldSelector: `metadata.name=${this.#me}`,
      log: options.log,
      name: 'own-host',
      backoffMaxMs: 2000,
    });
    // Registered again when the Host is gone, not Ready (the operator marks it Unknown when it
    // judged the Lease expired, and never back: like the kubelet, the runtime reports itself
    // Ready) or pointing at another endpoint.
    const check = (h: Host | undefined) => {
      const ready = h?.status?.conditions?.find((c) => c.type === 'Ready');
      if (
        !h ||
        ready?.status !== 'True' ||
        h.status?.apiEndpoint !== this.#apiEndpoint ||
        h.status?.apiCertificate !== this.#apiCertificate
      ) {
        this.#needRegister = true;
        this.requestWrite();
      }
    };
    this.#hostInformer.addHandlers({
      add: check,
      update: (_old, h) => check(h),
      delete: () => check(undefined),
    });
  }

  /** The last successful renewal of the Lease (ms since the epoch), once the heartbeat runs. */
  lastRenewTime(): number | undefined {
    return this.#heartbeat?.lastRenewTime();
  }

  /** Registers the Host, starts renewing its Lease, then watches the Host. */
  async start(apiEndpoint: string, apiCertificate?: string): Promise<void> {
    const { api, fieldManager, options: o, metrics } = this.#o;
    this.#apiEndpoint = apiEndpoint;
    this.#apiCertificate = apiCertificate;
    // The namespace of the Leases. RBAC may forbid a runtime to create it (a cluster admin
    // or the operator did); the Lease writes below then say whether it exists.
    try {
      await ensureNamespace(this.#o.leaseApi ?? api, SYSTEM_NAMESPACE, fieldManager);
    } catch (err) {
      if (!isForbidden(err)) throw err;
    }
    await this.register();
    const heartbeat = new LeaseHeartbeat({
      client: countingLeaseClient(leaseClient(this.#o.leaseApi ?? api, fieldManager), this.#o.onRenewFailure),
      namespace: SYSTEM_NAMESPACE,
      name: hostLeaseName(this.#me),
      holderIdentity: this.#me,
      leaseDurationSeconds: o.leaseDurationSeconds,
      renewIntervalMs: o.leaseRenewIntervalMs,
      lostAfterMs: fenceAfterMs(o.leaseDurationSeconds),
      labels: { [HOST_LABEL]: this.#me },
      onLost: this.#o.onLost,
      onRecovered: this.#o.onRecovered,
      log: this.#o.log,
    });
    this.#heartbeat = heartbeat;
    await heartbeat.start();
    metrics.leaseRenewals.set(heartbeat.lastRenewTime() / 1000);
    this.#renewGauge = setInterval(() => metrics.leaseRenewals.set(heartbeat.lastRenewTime() / 1000), 1000);
    this.#renewGauge.unref();
    this.#hostInformer.start();
  }

  /** Creates the Host if it is missing and writes its whole status. */
  async register(): Promise<void> {
    const { hosts, options: o } = this.#o;
    const host = await ensureHost(hosts, this.#me, o.labels, o.registerUnschedulable);
    // Ready's lastTransitionTime moves when it was not True (e.g. the operator's
    // HostLeaseExpired), as apimachinery's SetStatusCondition does.
    if (host.status?.conditions?.find((c) => c.type === 'Ready')?.status !== 'True') {
      this.#readySince = nowSeconds();
    }
    const status = this.#status();
    await applyHostStatus(hosts, this.#me, status);
    this.#persistentWritten = JSON.stringify(status.persistentData ?? []);
  }

  /**
   * Writes Host.status.persistentData when what is on disk changed, and resolves once the API
   * has it: a replica's first start awaits it, so the scheduler knows where the data of that
   * ordinal is before the Replica can be deleted and made again. Writes are chained, one at a time.
   */
  writePersistentData(): Promise<void> {
    const next = this.#persistentWrite.then(async () => {
      if (this.#o.paused() || this.#stopped.signal.aborted) return;
      const data = this.#o.persistentData();
      const json = JSON.stringify(data);
      if (json === this.#persistentWritten) return;
      await this.#o.hosts.patchStatus(this.#me, { persistentData: data });
      this.#persistentWritten = json;
      this.#o.log.info({ ordinals: data.length }, 'Host.status.persistentData updated');
    });
    this.#persistentWrite = next.catch((err: Error) =>
      this.#o.log.warn({ err: err.message }, 'could not update Host.status.persistentData'),
    );
    return next;
  }

  /**
   * Asks for Host.status.replicas to follow the replica count (and for a registration, when the
   * Host needs one). Coalesced: one write in flight, the latest count wins; the count is written
   * at most once per HOST_COUNT_INTERVAL_MS, so a ramp of 1,000 replicas is a handful of Host
   * updates, not one per replica for every Host watcher to process. (The count is informational:
   * the scheduler keeps its own usage.)
   */
  requestWrite = (): void => {
    this.#dirty = true;
    if (this.#writing || this.#o.paused()) return;
    this.#writing = true;
    void this.#drain().finally(() => {
      this.#writing = false;
    });
  };

  async #drain(): Promise<void> {
    const { hosts, log } = this.#o;
    while (this.#dirty && !this.#o.paused() && !this.#stopped.signal.aborted) {
      this.#dirty = false;
      const n = this.#o.replicaCount();
      try {
        if (this.#needRegister) {
          this.#needRegister = false;
          log.info('Host missing or not Ready while the runtime is healthy: registering again');
          await this.register();
          this.#lastCount = n;
          continue;
        }
        if (n === this.#lastCount) continue;
        const wait = this.#lastCountWrite + HOST_COUNT_INTERVAL_MS - Date.now();
        if (wait > 0) {
          await sleep(wait, this.#stopped.signal);
          this.#dirty = true;
          continue;
        }
        this.#lastCountWrite = Date.now();
        await hosts.patchStatus(this.#me, { replicas: n });
        this.#lastCount = n;
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'could not update the Host');
        return;
      }
    }
  }

  /** What Host.status.meshDataPath says from the next write on (set before `start` for the first). */
  setMeshDataPath(path: { kernel: boolean; reason?: string }): void {
    this.#meshDataPath = path;
  }

  #status() {
    const { facts, options: o, layout } = this.#o;
    return hostStatus({
      facts,
      address: o.address,
      apiEndpoint: this.#apiEndpoint,
      apiCertificate: this.#apiCertificate,
      runtimeVersion: version,
      layout,
      cgroupParent: o.cgroupParent,
      replicas: this.#o.replicaCount(),
      defaultResources: o.defaultResources,
      ready: { status: 'True', reason: 'RuntimeReady', message: `runtime ${version} is renewing its lease` },
      readySince: this.#readySince,
      ...(this.#meshDataPath ? { meshDataPath: this.#meshDataPath } : {}),
      persistentData: this.#o.persistentData(),
    });
  }

  /** Stops renewing (the Lease then expires: the operator moves what is left) and watching. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    clearInterval(this.#renewGauge);
    await Promise.all([this.#hostInformer.stop(), this.#heartbeat?.stop()]);
  }
}

function nowSeconds(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Counts failed Lease API calls (for /metrics and the fence policy); the heartbeat only logs them. */
function countingLeaseClient(
  client: ResourceClient<Lease>,
  onFailure: (err: unknown) => void,
): ResourceClient<Lease> {
  const wrap =
    <A extends unknown[], R>(fn: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      try {
        return await fn(...a);
      } catch (err) {
        if (!isNotFound(err)) onFailure(err);
        throw err;
      }
    };
  return Object.assign(Object.create(client) as ResourceClient<Lease>, {
    get: wrap(client.get.bind(client)),
    create: wrap(client.create.bind(client)),
    replace: wrap(client.replace.bind(client)),
  });
}
