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
import { hostname } from 'node:os';
import {
  ENDPOINT_SLICE_MANAGER,
  MANAGED_BY_LABEL,
  PROXY_EJECTED_ANNOTATION,
  PROXY_METRICS_ANNOTATION,
  PROXY_NAMESPACE_ANNOTATION,
  PROXY_SERVES_ANNOTATION,
  proxyLeaseName,
  SYSTEM_NAMESPACE,
} from '../crds/labels.ts';
import { encodeEjected } from '../crds/proxy-ejected.ts';
import { ENDPOINT_SLICES, HOSTS, SERVICES } from '../crds/resources.ts';
import type { EndpointSlice, Service } from '../crds/types.ts';
import {
  Backoff,
  ensureNamespace,
  Informer,
  isNotFound,
  KubeApi,
  type KubeConfig,
  LeaseHeartbeat,
  type Logger,
  leaseClient,
  objectKey,
  resourceClient,
  silentLogger,
  sleep,
} from '../kube/index.ts';
import { serviceKeyOfSlice } from './endpoints.ts';
import type { PortListener } from './listener.ts';
import { LocalFeed, type LocalFeedOptions } from './local-feed.ts';
import { type PortView, ProxyMetrics, serveMetrics } from './metrics.ts';
import { ServedService } from './service.ts';
import { available as uvAvailable } from './uv-tcp.ts';

/** Envoy's tcp_proxy idle_timeout default: 1 h. */
export const DEFAULT_IDLE_TIMEOUT_MS = 3_600_000;
/** Envoy's cluster connect_timeout default: 5 s (a Service's retries.perTryTimeoutMs overrides it). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** How long connections of a closed listener (Service deleted or moved, proxy stopping) may go on. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
/** Field manager of the proxy's clients (it reads, and writes only its own Lease). */
const FIELD_MANAGER = 'orrery-proxy';
/** The proxy's heartbeat Lease: the operator's Service controller reads who serves what from it. */
export const PROXY_LEASE_SECONDS = 10;
/** The protocols of Service ports this proxy serves (its Lease says so). */
export const SERVED_PROTOCOLS = ['tcp', 'http'] as const;
/** How often what is ejected is compared with what the Lease says (a change renews it early). */
const EJECTED_CHECK_MS = 1_000;
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
  /** Names its heartbeat Lease `proxy-<name>` in orrery-system; default the host name. */
  name?: string | undefined;
  /**
   * The same-host fast path (local-feed.ts): the event streams of this host's runtimes take a
   * replica whose process exited out of every pool at once. None without runtimes.
   */
  localFeed?: Omit<LocalFeedOptions, 'log' | 'onChange'> | undefined;
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
  /** The runtimes' event streams, when given any ('change' events say when pools changed). */
  readonly localFeed: LocalFeed | undefined;
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
  // One Lease per proxy: by default the host's name, and the namespace for a proxy serving one.
  const leaseName = proxyLeaseName(
    opts.name ?? [hostname().toLowerCase(), ...(opts.namespace ? [opts.namespace] : [])].join('.'),
  );
  let heartbeat: LeaseHeartbeat | undefined;
  let announcing: Promise<void> = Promise.resolve();
  /** The ejected endpoints as the Lease was last given them, and the timer that compares. */
  let announcedEjected = '';
  let ejectedCheck: NodeJS.Timeout | undefined;
  const draining = new Set<Promise<void>>();
  let synced = false;
  let stopping = false;
  let stopped: Promise<void> | undefined;

  const retire = (listener: PortListener, drained?: () => void) => {
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
    if (feed) s.setLocalDown(feed.downIn(s.namespace));
  };

  const feed =
    opts.localFeed && opts.localFeed.runtimes.length > 0
      ? new LocalFeed({
          // An https runtime is trusted by the certificate its Host publishes (read at each connect).
          certificate: async (runtime: string) => {
            const want = runtime.replace(/\/+$/, '');
            const hosts = await resourceClient(api, HOSTS, FIELD_MANAGER).list();
            return hosts.items.find((h) => h.status?.apiEndpoint?.replace(/\/+$/, '') === want)?.status
              ?.apiCertificate;
          },
          ...opts.localFeed,
          log: log.child({ component: 'local-feed' }),
          onChange: (namespaces) => {
            let ahead = 0;
            for (const s of served.values())
              if (namespaces.has(s.namespace))
                ahead += s.setLocalDown(feed?.downIn(s.namespace) ?? new Set());
            return ahead;
          },
        })
      : undefined;

  const health = () => ({
    synced,
    namespace: opts.namespace ?? '(all)',
    services: served.size,
    listening: portViews().filter((v) => v.listening).length,
    watching: services.health().watching && slices.health().watching,
    ...(feed ? { runtimes: feed.streams() } : {}),
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
  // What the autoscaler may scrape: not a wildcard address, which names no one place.
  const reachableMetrics = /^http:\/\/(0\.0\.0\.0|\[::\]):/.test(url) ? undefined : url;
  feed?.start();

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
  ]).then(async () => {
    synced = true;
    for (const key of services.keys()) sync(key);
    log.info(
      {
        namespace: opts.namespace ?? '(all)',
        services: served.size,
        // How tcp and http ports move bytes: libuv's handles (tcp-uv.ts, http-conn.ts), or
        // net.Socket without them.
        tcpPath: uvAvailable ? 'uv-handles' : 'net-socket',
        httpPath: uvAvailable ? 'uv-handles' : 'net-socket',
      },
      'synced: serving',
    );
    // Serving: say so where the operator looks (Service condition Proxied), and keep saying it;
    // in the background: serving does not wait for it.
    announcing = announce();
  });
  ready.catch(() => {}); // stopped before the caches synced: whoever awaits `ready` hears of it

  /** Starts the heartbeat Lease, retrying (with back-off) until it is renewed or the proxy stops. */
  async function announce(): Promise<void> {
    const backoff = new Backoff(200, 10_000);
    while (!stopping) {
      const hb = newHeartbeat();
      try {
        await ensureNamespace(api, SYSTEM_NAMESPACE, FIELD_MANAGER);
        await hb.start();
        heartbeat = hb; // stopping meanwhile: stopEverything stops it and deletes the Lease
        // A change of what is ejected renews the Lease early (at most once a second) rather
        // than at the next interval.
        ejectedCheck = setInterval(() => {
          if (ejectedNow() !== announcedEjected) hb.renewSoon();
        }, EJECTED_CHECK_MS);
        ejectedCheck.unref();
        return;
      } catch (err) {
        await hb.stop();
        log.warn(
          { err: (err as Error).message, lease: leaseName },
          'could not renew the proxy Lease; retrying',
        );
        await sleep(backoff.next(), stopSignal.signal);
      }
    }
  }

  /** The endpoints ejected now, as the Lease says it (crds/proxy-ejected.ts). */
  function ejectedNow(): string {
    return encodeEjected(
      views().map((p) => ({
        namespace: p.namespace,
        service: p.service,
        port: p.port,
        replicas: p.ejected.map((id) => id.split('@')[0] as string),
      })),
    );
  }

  function newHeartbeat(): LeaseHeartbeat {
    return new LeaseHeartbeat({
      client: leaseClient(api, FIELD_MANAGER),
      namespace: SYSTEM_NAMESPACE,
      name: leaseName,
      holderIdentity: leaseName,
      leaseDurationSeconds: PROXY_LEASE_SECONDS,
      // Read at every renewal: what is ejected changes.
      annotations: () => {
        announcedEjected = ejectedNow();
        return {
          [PROXY_SERVES_ANNOTATION]: SERVED_PROTOCOLS.join(','),
          [PROXY_EJECTED_ANNOTATION]: announcedEjected,
          ...(opts.namespace ? { [PROXY_NAMESPACE_ANNOTATION]: opts.namespace } : {}),
          ...(reachableMetrics ? { [PROXY_METRICS_ANNOTATION]: `${reachableMetrics}/metrics` } : {}),
        };
      },
      log,
    });
  }

  function stopAll(): Promise<void> {
    stopped ??= stopEverything();
    return stopped;
  }
  async function stopEverything(): Promise<void> {
    stopping = true;
    stopSignal.abort();
    // No longer serving: the Lease goes at once rather than expiring.
    await announcing;
    clearInterval(ejectedCheck);
    await heartbeat?.stop();
    if (heartbeat) {
      await leaseClient(api, FIELD_MANAGER)
        .delete(leaseName, { namespace: SYSTEM_NAMESPACE })
        .catch((err: unknown) => {
          if (!isNotFound(err)) log.warn({ err: (err as Error).message }, 'could not delete the proxy Lease');
        });
    }
    await Promise.all([services.stop(), slices.stop(), feed?.stop()]);
    for (const s of served.values()) s.close();
    served.clear();
    await Promise.all(draining);
    await closeServer(server);
    api.close();
  }

  return {
    metricsUrl: url,
    metrics,
    localFeed: feed,
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
