/**
 * One Service as the proxy serves it (docs/DESIGN.md §6.1): per port a listener at
 * `virtualIP:port` and a pool of endpoints (and, for an `http` port, keep-alive connections to
 * them), the Service's circuit breaker (shared by its ports) and its outlier sweep timer.
 * update() brings all of it in line with the Service and its EndpointSlices as they are now;
 * close() stops accepting and lets the connections drain.
 */
import type { EndpointSlice, Service } from '../crds/types.ts';
import type { Logger } from '../kube/index.ts';
import { listenAddressOf, type ServicePort, type Upstream, upstreamsOf } from './endpoints.ts';
import { type HttpRoute, type RetryOn, serveHttp, UpstreamConnections } from './http.ts';
import { SocketConn, UvConn } from './http-conn.ts';
import { CircuitBreaker } from './limits.ts';
import { PortListener, type Served } from './listener.ts';
import type { EndpointStats, PortLabels, PortView, ProxyMetrics } from './metrics.ts';
import { Pool } from './pool.ts';
import { serveTcp, type TcpRoute } from './tcp.ts';
import { serveTcpUv } from './tcp-uv.ts';
import { available as uvAvailable } from './uv-tcp.ts';

export interface ServedServiceOptions {
  namespace: string;
  name: string;
  metrics: ProxyMetrics;
  log: Logger;
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  /**
   * Takes a listener that is no longer wanted: the proxy drains it (and waits for it on stop),
   * then calls `drained`.
   */
  retire: (listener: PortListener, drained?: () => void) => void;
}

type Protocol = 'tcp' | 'http';

interface ServedPort {
  spec: ServicePort;
  protocol: Protocol;
  labels: PortLabels;
  pool: Pool;
  /** http: keep-alive connections to the endpoints, for as long as the port is served. */
  connections: UpstreamConnections | undefined;
  listener: PortListener | undefined;
  /** What a connection (tcp) or request (http) starting now gets; made again on every update. */
  route: TcpRoute | HttpRoute | undefined;
}

export class ServedService {
  readonly namespace: string;
  readonly name: string;
  readonly #o: ServedServiceOptions;
  readonly #log: Logger;
  readonly #ports = new Map<string, ServedPort>();
  #spec: Service['spec'] | undefined;
  #breaker: CircuitBreaker | undefined;
  #breakerKey = '';
  #sweep: NodeJS.Timeout | undefined;
  #sweepSeconds = 0;
  #badAddressNoted: string | undefined;

  constructor(opts: ServedServiceOptions) {
    this.namespace = opts.namespace;
    this.name = opts.name;
    this.#o = opts;
    this.#log = opts.log.child({ service: `${opts.namespace}/${opts.name}` });
  }

  update(service: Service, slices: readonly EndpointSlice[]): void {
    const spec = service.spec;
    this.#spec = spec;
    const address = listenAddressOf(service);
    const vip = service.status?.virtualIP;
    if (vip && !address && this.#badAddressNoted !== vip) {
      this.#badAddressNoted = vip;
      this.#log.warn({ virtualIP: vip }, 'virtual IP is not in 127.0.0.0/8: not served');
    }

    const limits = spec.circuitBreaker;
    const breakerKey = JSON.stringify(limits);
    if (!this.#breaker || breakerKey !== this.#breakerKey) {
      // Connections open hold the breaker they took a unit of, and give it back there.
      this.#breaker = new CircuitBreaker(limits);
      this.#breakerKey = breakerKey;
    }

    const seconds = spec.outlierDetection.intervalSeconds;
    if (seconds !== this.#sweepSeconds) {
      clearInterval(this.#sweep);
      this.#sweepSeconds = seconds;
      this.#sweep = setInterval(() => this.#sweepAll(), seconds * 1000);
      this.#sweep.unref();
    }

    const wanted = new Map<string, ServicePort>(spec.ports.map((p) => [p.name, p]));
    for (const [name, served] of this.#ports) {
      const p = wanted.get(name);
      if (p && (p.protocol ?? 'tcp') === served.protocol) continue;
      // Gone, or another protocol: its connections drain and a new listener serves the port.
      this.#ports.delete(name);
      this.#closePort(served);
    }
    for (const [name, p] of wanted) {
      let served = this.#ports.get(name);
      if (!served) {
        const protocol: Protocol = p.protocol ?? 'tcp';
        served = {
          spec: p,
          protocol,
          labels: { namespace: this.namespace, service: this.name, port: name },
          pool: new Pool({ policy: spec.loadBalancer.policy, outlier: spec.outlierDetection }),
          connections: protocol === 'http' ? new UpstreamConnections() : undefined,
          listener: undefined,
          route: undefined,
        };
        this.#ports.set(name, served);
      }
      served.spec = p;
      served.pool.configure(spec.loadBalancer.policy, spec.outlierDetection);
      if (served.pool.update(upstreamsOf(slices, name))) {
        this.#o.metrics.prune(served.labels, new Set(served.pool.upstreams.map((u) => u.id)));
        this.#log.debug(
          { port: name, ready: served.pool.ready.length, total: served.pool.upstreams.length },
          'endpoints',
        );
      }
      served.route = this.#routeOf(served, address);
      const listener = served.listener;
      if (listener && (listener.address !== address || listener.port !== p.port)) {
        this.#o.retire(listener);
        served.listener = undefined;
      }
      if (!served.listener && address) served.listener = this.#listen(name, served.protocol, address, p.port);
    }
  }

  #listen(name: string, protocol: Protocol, address: string, port: number): PortListener {
    const log = this.#log.child({ port: name });
    const route = () => this.#ports.get(name)?.route;
    if (uvAvailable) {
      // Both paths on libuv's handles (tcp-uv.ts, http-conn.ts), when Node has them; else on net.Socket.
      return new PortListener({
        address,
        port,
        log,
        handleUv:
          protocol === 'tcp'
            ? (handle, listener) => {
                const r = route() as TcpRoute | undefined;
                return r ? serveTcpUv(handle, r, log, listener) : undefined;
              }
            : (handle, listener) => {
                if (!route()) return undefined;
                const release = (served: Served) => listener.release(served);
                return serveHttp(UvConn.accepted(handle), route as () => HttpRoute | undefined, log, release);
              },
      });
    }
    return new PortListener({
      address,
      port,
      log,
      handle:
        protocol === 'tcp'
          ? (socket, listener) => {
              const r = route() as TcpRoute | undefined;
              return r ? serveTcp(socket, r, log, listener) : undefined;
            }
          : (socket, listener) => {
              if (!route()) return undefined;
              const release = (served: Served) => listener.release(served);
              return serveHttp(new SocketConn(socket), route as () => HttpRoute | undefined, log, release);
            },
    });
  }

  /**
   * The replicas of this Service's namespace that this host's runtimes report down (names; the
   * same-host fast path, local-feed.ts): out of every port's pool at once. The proxy calls it on
   * every change of that set and after every update (a new port's pool starts without it).
   * Returns how many endpoints are out only by that word (their slices still say ready).
   */
  setLocalDown(replicas: ReadonlySet<string>): number {
    let ahead = 0;
    for (const served of this.#ports.values()) {
      served.pool.setLocalDown(replicas);
      ahead += served.pool.localDown().length;
    }
    return ahead;
  }

  /** The Service is gone: no listener, no timer; connections open drain through `retire`. */
  close(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    const ports = [...this.#ports.values()];
    this.#ports.clear();
    for (const served of ports) this.#closePort(served);
  }

  views(): (PortView & { address: string | undefined; connections: number; total: number })[] {
    return [...this.#ports.values()].map((s) => ({
      labels: s.labels,
      address: s.listener ? `${s.listener.address}:${s.listener.port}` : undefined,
      listening: s.listener?.listening ?? false,
      connections: s.listener?.connections ?? 0,
      ready: s.pool.ready.length,
      total: s.pool.upstreams.length,
      ejected: s.pool.ejected(),
      panic: s.pool.panic,
    }));
  }

  #closePort(served: ServedPort): void {
    const name = served.labels.port;
    // The series go once no connection is left, unless the port is served again by then.
    const prune = () => {
      if (!this.#ports.has(name)) this.#o.metrics.prune(served.labels);
    };
    if (served.listener) this.#o.retire(served.listener, prune);
    else prune();
    served.listener = undefined;
    served.route = undefined;
    served.connections?.close();
  }

  #routeOf(served: ServedPort, address: string | undefined): TcpRoute | HttpRoute | undefined {
    const spec = this.#spec;
    const breaker = this.#breaker;
    const portName = served.labels.port;
    if (!spec || !breaker) return undefined;
    const metrics = this.#o.metrics;
    const stats = new Map<string, EndpointStats>();
    const common = {
      pool: served.pool,
      breaker,
      connectTimeoutMs: spec.retries.perTryTimeoutMs ?? this.#o.connectTimeoutMs,
      idleTimeoutMs: this.#o.idleTimeoutMs,
      stats: metrics.port(served.labels),
      endpointStats: (u: Upstream) => {
        // Looked up per request: kept by id until the next update makes a new route.
        let es = stats.get(u.id);
        if (!es) {
          es = metrics.endpoint(served.labels, u.replica, `${u.address}:${u.port}`);
          stats.set(u.id, es);
        }
        return es;
      },
      onEjected: (u: Upstream, cause = 'consecutive connect failures') =>
        this.#log.warn(
          {
            port: portName,
            endpoint: u.replica,
            address: `${u.address}:${u.port}`,
            panic: served.pool.panic,
            cause,
          },
          'endpoint ejected',
        ),
    };
    if (served.protocol === 'tcp') {
      return {
        ...common,
        retries: spec.retries.retryOn.includes('connect-failure') ? spec.retries.attempts : 0,
      };
    }
    return {
      ...common,
      // The connect is part of the try: perTryTimeoutMs bounds it too, else the proxy's.
      connectTimeoutMs: Math.min(spec.retries.perTryTimeoutMs ?? this.#o.connectTimeoutMs, spec.timeoutMs),
      connections: served.connections as UpstreamConnections,
      attempts: spec.retries.attempts,
      retryOn: new Set(spec.retries.retryOn as RetryOn[]),
      perTryTimeoutMs: spec.retries.perTryTimeoutMs,
      budgetPercent: spec.retries.budgetPercent,
      timeoutMs: spec.timeoutMs,
      authority: `${address ?? '127.0.0.1'}:${served.spec.port}`,
      hashOn:
        spec.loadBalancer.policy === 'ring-hash' && spec.loadBalancer.hashOn
          ? {
              header: spec.loadBalancer.hashOn.header?.toLowerCase(),
              cookie: spec.loadBalancer.hashOn.cookie,
            }
          : undefined,
      describe: `Service ${this.namespace}/${this.name} port ${portName}`,
    };
  }

  #sweepAll(): void {
    for (const [name, served] of this.#ports) {
      for (const id of served.pool.sweep())
        this.#log.info({ port: name, endpoint: id }, 'endpoint back from ejection');
    }
  }
}
