/**
 * `orrery proxy`, the per-host mesh proxy (docs/DESIGN.md §6.1), `tcp` Service ports: it watches
 * Services (all namespaces, or one) and the operator's EndpointSlices, binds every `tcp` port of
 * every Service that has a virtual IP at `virtualIP:port` itself (all of 127.0.0.0/8 is local on
 * Linux: no iptables), and balances the connections over the ready endpoints with the Service's
 * policy, retries, outlier detection and connection limit (service.ts, tcp.ts). A Service whose
 * virtual IP or ports change is bound again; a deleted one stops accepting and its connections
 * drain. Its own process: an agent restart does not drop proxied connections, and a proxy
 * restart does not restart workloads.
 */
import type { Server } from 'node:http';
import { ENDPOINT_SLICE_MANAGER, MANAGED_BY_LABEL } from '../crds/labels.ts';
import { ENDPOINT_SLICES, SERVICES } from '../crds/resources.ts';
import type { EndpointSlice, Service } from '../crds/types.ts';
import {
  Informer,
  KubeApi,
  type KubeConfig,
  type Logger,
  objectKey,
  resourceClient,
  silentLogger,
} from '../kube/index.ts';
import { serviceKeyOfSlice } from './endpoints.ts';
import { type PortView, ProxyMetrics, serveMetrics } from './metrics.ts';
import { ServedService } from './service.ts';
import type { TcpListener } from './tcp.ts';

/** Envoy's tcp_proxy idle_timeout default: 1 h. */
export const DEFAULT_IDLE_TIMEOUT_MS = 3_600_000;
/** Envoy's cluster connect_timeout default: 5 s (a Service's retries.perTryTimeoutMs overrides it). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** How long connections of a closed listener (Service deleted or moved, proxy stopping) may go on. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
/** Field manager of the proxy's clients (it only reads). */
const FIELD_MANAGER = 'orrery-proxy';
const BY_SERVICE = 'service';

export interface ProxyOptions {
  kubeConfig: KubeConfig;
  /** Serve only this namespace's Services (default: all). */
  namespace?: string | undefined;
  /** Where /metrics, /healthz and /readyz listen; default 127.0.0.1 on a free port. */
  metricsListen?: { host: string; port: number } | undefined;
  /** No byte either way for this long closes a connection; 0: never. */
  idleTimeoutMs?: number | undefined;
  connectTimeoutMs?: number | undefined;
  drainTimeoutMs?: number | undefined;
  log?: Logger | undefined;
}

/** A Service port as the proxy serves it now. */
export interface ServedPortStatus {
  namespace: string;
  service: string;
  port: string;
  /** virtualIP:port, when the Service has a virtual IP. */
  address: string | undefined;
  listening: boolean;
  ready: number;
  total: number;
  ejected: string[];
  panic: boolean;
  connections: number;
}

export interface MeshProxy {
  /** http://host:port of /metrics, /healthz and /readyz. */
  readonly metricsUrl: string;
  readonly metrics: ProxyMetrics;
  /**
   * Resolves once the Service and EndpointSlice caches are synced and every Service is served;
   * rejects when the proxy is stopped before that.
   */
  readonly ready: Promise<void>;
  /** Every tcp Service port served (or waiting for its virtual IP). */
  ports(): ServedPortStatus[];
  /**
   * Stops watching and accepting at once; open connections go on for up to the drain timeout
   * (default the proxy's) and are then closed. Resolves when all are.
   */
  stop(opts?: { drainTimeoutMs?: number }): Promise<void>;
}

/**
 * Starts the proxy: resolves once the metrics endpoint listens and the watches are started;
 * `ready` says when the caches are synced and the Services served (an API server that cannot
 * be reached delays only that, and /readyz says so).
 */
export async function startProxy(opts: ProxyOptions): Promise<MeshProxy> {
  const log = opts.log ?? silentLogger;
  const idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  let drainTimeoutMs = opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;

  const api = await KubeApi.fromKubeConfig(opts.kubeConfig);
  const scope = { log, namespace: opts.namespace };
  const services = new Informer(resourceClient(api, SERVICES, FIELD_MANAGER), scope);
  const slices = new Informer(resourceClient(api, ENDPOINT_SLICES, FIELD_MANAGER), {
    ...scope,
    labelSelector: `${MANAGED_BY_LABEL}=${ENDPOINT_SLICE_MANAGER}`,
  });
  slices.addIndex(BY_SERVICE, (s) => serviceKeyOfSlice(s));

  const served = new Map<string, ServedService>();
  const draining = new Set<Promise<void>>();
  let synced = false;
  let stopping = false;
  let stopped: Promise<void> | undefined;

  const retire = (listener: TcpListener, drained?: () => void) => {
    const done = listener.close(drainTimeoutMs).then(() => {
      draining.delete(done);
      drained?.();
    });
    draining.add(done);
  };

  const views = (): ServedPortStatus[] =>
    [...served.values()].flatMap((s) =>
      s.views().map((v) => ({
        namespace: v.labels.namespace,
        service: v.labels.service,
        port: v.labels.port,
        address: v.address,
        listening: v.listening,
        ready: v.ready,
        total: v.total,
        ejected: v.ejected,
        panic: v.panic,
        connections: v.connections,
      })),
    );
  const portViews = (): PortView[] =>
    [...served.values()].flatMap((s) =>
      s.views().map(({ labels, listening, ready, ejected, panic }) => ({
        labels,
        listening,
        ready,
        ejected,
        panic,
      })),
    );

  const metrics = new ProxyMetrics(portViews);

  /** Brings one Service (namespace/name) in line with the caches. */
  const sync = (key: string) => {
    if (!synced || stopping) return;
    const service = services.get(key);
    let s = served.get(key);
    if (!service) {
      if (s) {
        log.info({ service: key }, 'Service gone: closing its listeners');
        s.close();
        served.delete(key);
      }
      return;
    }
    if (!s) {
      s = new ServedService({
        namespace: service.metadata.namespace as string,
        name: service.metadata.name as string,
        metrics,
        log,
        idleTimeoutMs,
        connectTimeoutMs,
        retire,
      });
      served.set(key, s);
    }
    s.update(service, slices.byIndex(BY_SERVICE, key));
  };

  const health = () => ({
    synced,
    namespace: opts.namespace ?? '(all)',
    services: served.size,
    listening: portViews().filter((v) => v.listening).length,
    watching: services.health().watching && slices.health().watching,
  });
  let listening: Awaited<ReturnType<typeof serveMetrics>>;
  try {
    listening = await serveMetrics(metrics, opts.metricsListen ?? { host: '127.0.0.1', port: 0 }, health);
  } catch (err) {
    api.close();
    throw err;
  }
  const { server, url } = listening;
  log.info({ url }, 'serving /metrics and /healthz');

  services.addHandlers({
    add: (s: Service) => sync(objectKey(s)),
    update: (_old: Service, s: Service) => sync(objectKey(s)),
    delete: (s: Service) => sync(objectKey(s)),
  });
  const bySlice = (slice: EndpointSlice) => {
    const key = serviceKeyOfSlice(slice);
    if (key) sync(key);
  };
  slices.addHandlers({ add: bySlice, update: (_old, s) => bySlice(s), delete: bySlice });
  services.start();
  slices.start();
  const stopSignal = new AbortController();
  const ready = Promise.all([
    services.waitForSync({ signal: stopSignal.signal }),
    slices.waitForSync({ signal: stopSignal.signal }),
  ]).then(() => {
    synced = true;
    for (const key of services.keys()) sync(key);
    log.info({ namespace: opts.namespace ?? '(all)', services: served.size }, 'synced: serving');
  });
  ready.catch(() => {}); // stopped before the caches synced: whoever awaits `ready` hears of it

  function stopAll(): Promise<void> {
    stopped ??= stopEverything();
    return stopped;
  }
  async function stopEverything(): Promise<void> {
    stopping = true;
    stopSignal.abort();
    await Promise.all([services.stop(), slices.stop()]);
    for (const s of served.values()) s.close();
    served.clear();
    await Promise.all(draining);
    await closeServer(server);
    api.close();
  }

  return {
    metricsUrl: url,
    metrics,
    ready,
    ports: views,
    async stop(stopOpts = {}) {
      if (stopOpts.drainTimeoutMs !== undefined) drainTimeoutMs = stopOpts.drainTimeoutMs;
      await stopAll();
    },
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
