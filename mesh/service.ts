/**
 * One Service as the proxy serves it (docs/DESIGN.md §6.1): a listener at `virtualIP:port` and a
 * pool per `tcp` port, the Service's circuit breaker (shared by its ports) and its outlier sweep
 * timer. update() brings all of it in line with the Service and its EndpointSlices as they are
 * now; close() stops accepting and lets the connections drain.
 */
import type { EndpointSlice, Service } from '../crds/types.ts';
import type { Logger } from '../kube/index.ts';
import { listenAddressOf, type ServicePort, type Upstream, upstreamsOf } from './endpoints.ts';
import { CircuitBreaker } from './limits.ts';
import type { PortLabels, PortView, ProxyMetrics } from './metrics.ts';
import { Pool } from './pool.ts';
import { TcpListener, type TcpRoute } from './tcp.ts';

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
  retire: (listener: TcpListener, drained?: () => void) => void;
}

interface ServedPort {
  spec: ServicePort;
  labels: PortLabels;
  pool: Pool;
  listener: TcpListener | undefined;
  /** What a connection accepted now gets; made again on every update. */
  route: TcpRoute | undefined;
}

export class ServedService {
  readonly namespace: string;
  readonly name: string;
  readonly #o: ServedServiceOptions;
  readonly #log: Logger;
  readonly #ports = new Map<string, ServedPort>();
  readonly #httpNoted = new Set<string>();
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

    const tcp = new Map<string, ServicePort>();
    for (const p of spec.ports) {
      if ((p.protocol ?? 'tcp') === 'tcp') tcp.set(p.name, p);
      else if (!this.#httpNoted.has(p.name)) {
        this.#httpNoted.add(p.name);
        this.#log.info(
          { port: p.name, number: p.port },
          'http port not served: http ports come with the HTTP proxy, this one serves tcp ports',
        );
      }
    }
    for (const name of this.#httpNoted) {
      if (!spec.ports.some((p) => p.name === name && p.protocol === 'http')) this.#httpNoted.delete(name);
    }

    for (const [name, served] of this.#ports) {
      if (tcp.has(name)) continue;
      this.#ports.delete(name);
      this.#closePort(served);
    }
    for (const [name, p] of tcp) {
      let served = this.#ports.get(name);
      if (!served) {
        served = {
          spec: p,
          labels: { namespace: this.namespace, service: this.name, port: name },
          pool: new Pool({ policy: spec.loadBalancer.policy, outlier: spec.outlierDetection }),
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
      served.route = this.#routeOf(served);
      const listener = served.listener;
      if (listener && (listener.address !== address || listener.port !== p.port)) {
        this.#o.retire(listener);
        served.listener = undefined;
      }
      if (!served.listener && address) {
        served.listener = new TcpListener({
          address,
          port: p.port,
          route: () => this.#ports.get(name)?.route,
          log: this.#log.child({ port: name }),
        });
      }
    }
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
  }

  #routeOf(served: ServedPort): TcpRoute | undefined {
    const spec = this.#spec;
    const breaker = this.#breaker;
    const portName = served.labels.port;
    if (!spec || !breaker) return undefined;
    const retries = spec.retries.retryOn.includes('connect-failure') ? spec.retries.attempts : 0;
    const metrics = this.#o.metrics;
    return {
      pool: served.pool,
      breaker,
      retries,
      connectTimeoutMs: spec.retries.perTryTimeoutMs ?? this.#o.connectTimeoutMs,
      idleTimeoutMs: this.#o.idleTimeoutMs,
      stats: metrics.port(served.labels),
      endpointStats: (u: Upstream) => metrics.endpoint(served.labels, u.replica, `${u.address}:${u.port}`),
      onEjected: (u: Upstream) =>
        this.#log.warn(
          {
            port: portName,
            endpoint: u.replica,
            address: `${u.address}:${u.port}`,
            panic: served.pool.panic,
          },
          'endpoint ejected: consecutive connect failures',
        ),
    };
  }

  #sweepAll(): void {
    for (const [name, served] of this.#ports) {
      for (const id of served.pool.sweep())
        this.#log.info({ port: name, endpoint: id }, 'endpoint back from ejection');
    }
  }
}
