/**
 * The proxy's Prometheus metrics per Service port and endpoint (docs/DESIGN.md §6.1), and the
 * HTTP server of /metrics, /healthz and /readyz. The connection path only adds to plain numbers
 * in the stats objects below (no label hashing per chunk of bytes); the metrics read them when
 * scraped. A registry of its own, so that two proxies in one process (tests) do not collide.
 */

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { http } from '../platform/http.ts';
import { Counter, type CustomMetric, collectDefaultMetrics, Gauge, Registry } from '../platform/metrics.ts';
import type { Limit } from './limits.ts';

/** Counts of one endpoint of one Service port; the proxy adds to them as connections go. */
export interface EndpointStats {
  readonly labels: EndpointLabels;
  /** Upstream connections made. */
  connections: number;
  active: number;
  connectFailures: number;
  ejections: number;
  /** From clients, forwarded to the endpoint. */
  bytesIn: number;
  /** From the endpoint, forwarded to clients. */
  bytesOut: number;
  /** http: requests sent to it (each try counts). */
  requests: number;
  /** http: tries that failed there (5xx answer, reset, timeout, protocol error). */
  requestErrors: number;
}

/** Counts of one Service port. */
export interface PortStats {
  readonly labels: PortLabels;
  /** Client connections accepted. */
  accepted: number;
  active: number;
  /** Closed at once: no ready endpoint at all. */
  noEndpoint: number;
  /** Closed at once: every try to connect failed. */
  connectFailed: number;
  /** Tries after a failed one: connects (tcp), requests (http). */
  retries: number;
  /** Closed because nothing went through for the idle timeout. */
  idleTimeouts: number;
  /** Refused at once because a circuit-breaker limit of the Service was reached, by limit. */
  overflows: Record<Limit, number>;
  /** http: responses sent to clients by status class (index 1 to 5), the proxy's own included. */
  responses: number[];
  /** http: requests in flight. */
  activeRequests: number;
  /** http: requests answered by the proxy itself, by reason. */
  localResponses: Record<LocalReason, number>;
  /** http: Upgrade requests tunnelled (WebSocket). */
  upgrades: number;
  /** http: time from a request's head to its response's end. */
  latency: LatencyHistogram;
}

/** Why the proxy answered an http request itself. */
export type LocalReason =
  | 'no-endpoint'
  | 'connect-failed'
  | 'reset'
  | 'timeout'
  | 'overflow'
  | 'bad-request'
  | 'bad-response';

const LOCAL_REASONS: readonly LocalReason[] = [
  'no-endpoint',
  'connect-failed',
  'reset',
  'timeout',
  'overflow',
  'bad-request',
  'bad-response',
];

/** Counts a response sent to a client by its status class. */
export function countResponse(stats: PortStats, status: number): void {
  const c = Math.min(5, Math.max(1, Math.floor(status / 100)));
  stats.responses[c] = (stats.responses[c] ?? 0) + 1;
}

/** Upper bounds of the latency buckets, seconds (prom-client's defaults, finer below 10 ms). */
const LATENCY_BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A histogram the request path adds to with no label lookup; read at scrape time. */
export class LatencyHistogram {
  /** Per bucket (not cumulative); the last one is +Inf. */
  readonly counts = new Array<number>(LATENCY_BOUNDS.length + 1).fill(0);
  sum = 0;
  count = 0;
  observe(ms: number): void {
    const s = ms / 1000;
    let i = 0;
    while (i < LATENCY_BOUNDS.length && s > (LATENCY_BOUNDS[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += s;
    this.count++;
  }
}

export interface PortLabels {
  namespace: string;
  service: string;
  port: string;
}

export interface EndpointLabels extends PortLabels {
  /** The replica. */
  endpoint: string;
  /** Its address:port. */
  address: string;
}

/** What the proxy shows of a Service port right now (gauges, /healthz, tests). */
export interface PortView {
  labels: PortLabels;
  listening: boolean;
  ready: number;
  /** Endpoint ids ejected by outlier detection now. */
  ejected: string[];
  panic: boolean;
}

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly #ports = new Map<string, PortStats>();
  readonly #endpoints = new Map<string, EndpointStats>();

  /** `views` gives the current state of every Service port served, for the gauges. */
  constructor(views: () => PortView[]) {
    collectDefaultMetrics({ register: this.registry, prefix: 'orrery_proxy_' });
    const registers = [this.registry];
    const portNames = ['namespace', 'service', 'port'] as const;
    const endpointNames = [...portNames, 'endpoint', 'address'] as const;
    const ports = () => this.#ports.values();
    const endpoints = () => this.#endpoints.values();
    const counter = <S extends { labels: object }>(
      name: string,
      help: string,
      labelNames: readonly string[],
      rows: () => Iterable<S>,
      value: (s: S) => number,
    ) =>
      new Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const s of rows()) this.inc(s.labels as Record<string, string>, value(s));
        },
      });
    counter(
      'orrery_proxy_downstream_connections_total',
      'Client connections accepted on a Service port',
      portNames,
      ports,
      (s) => s.accepted,
    );
    new Gauge({
      name: 'orrery_proxy_downstream_active_connections',
      help: 'Client connections open on a Service port',
      labelNames: portNames,
      registers,
      collect() {
        this.reset();
        for (const s of ports()) this.set({ ...s.labels }, s.active);
      },
    });
    new Counter({
      name: 'orrery_proxy_no_endpoint_closes_total',
      help: 'Client connections closed at once for want of an endpoint: none ready (reason no-endpoint) or every connect try failed (connect-failed)',
      labelNames: [...portNames, 'reason'],
      registers,
      collect() {
        this.reset();
        for (const s of ports()) {
          this.inc({ ...s.labels, reason: 'no-endpoint' }, s.noEndpoint);
          this.inc({ ...s.labels, reason: 'connect-failed' }, s.connectFailed);
        }
      },
    });
    counter(
      'orrery_proxy_retries_total',
      'Tries after a failed one, on another endpoint where there is one: connects (tcp), requests (http)',
      portNames,
      ports,
      (s) => s.retries,
    );
    counter(
      'orrery_proxy_idle_timeouts_total',
      'Connections closed because no byte went either way for the idle timeout',
      portNames,
      ports,
      (s) => s.idleTimeouts,
    );
    new Counter({
      name: 'orrery_proxy_overflows_total',
      help: 'Connections (tcp) or requests (http) refused at once because a circuit-breaker limit of the Service was reached (limit: connections, pending-requests, requests, retries)',
      labelNames: [...portNames, 'limit'],
      registers,
      collect() {
        this.reset();
        for (const s of ports())
          for (const [limit, n] of Object.entries(s.overflows))
            if (n > 0) this.inc({ ...s.labels, limit }, n);
      },
    });
    new Counter({
      name: 'orrery_proxy_responses_total',
      help: "HTTP responses sent to clients on a Service port, by status class (1xx to 5xx), the proxy's own included",
      labelNames: [...portNames, 'class'],
      registers,
      collect() {
        this.reset();
        for (const s of ports())
          for (let c = 1; c <= 5; c++) {
            const n = s.responses[c] as number;
            if (n > 0) this.inc({ ...s.labels, class: `${c}xx` }, n);
          }
      },
    });
    new Gauge({
      name: 'orrery_proxy_active_requests',
      help: 'HTTP requests in flight on a Service port',
      labelNames: portNames,
      registers,
      collect() {
        this.reset();
        for (const s of ports()) this.set({ ...s.labels }, s.activeRequests);
      },
    });
    new Counter({
      name: 'orrery_proxy_local_responses_total',
      help: 'HTTP requests the proxy answered itself: no-endpoint and overflow (503), connect-failed, reset and bad-response (502), timeout (504), bad-request (400, 431, 505)',
      labelNames: [...portNames, 'reason'],
      registers,
      collect() {
        this.reset();
        for (const s of ports())
          for (const reason of LOCAL_REASONS) {
            const n = s.localResponses[reason];
            if (n > 0) this.inc({ ...s.labels, reason }, n);
          }
      },
    });
    counter(
      'orrery_proxy_upgrades_total',
      'HTTP Upgrade requests (WebSocket) tunnelled to an endpoint',
      portNames,
      ports,
      (s) => s.upgrades,
    );
    this.registry.registerMetric(latencyMetric(ports) as CustomMetric);
    counter(
      'orrery_proxy_upstream_requests_total',
      'HTTP requests sent to an endpoint (each try)',
      endpointNames,
      endpoints,
      (s) => s.requests,
    );
    counter(
      'orrery_proxy_upstream_request_errors_total',
      'HTTP tries that failed at an endpoint: a 5xx answer, a reset, a timeout or a malformed response',
      endpointNames,
      endpoints,
      (s) => s.requestErrors,
    );
    counter(
      'orrery_proxy_upstream_connections_total',
      'Connections made to an endpoint',
      endpointNames,
      endpoints,
      (s) => s.connections,
    );
    new Gauge({
      name: 'orrery_proxy_upstream_active_connections',
      help: 'Connections open to an endpoint',
      labelNames: endpointNames,
      registers,
      collect() {
        this.reset();
        for (const s of endpoints()) this.set({ ...s.labels }, s.active);
      },
    });
    counter(
      'orrery_proxy_upstream_connect_failures_total',
      'Failed connects to an endpoint (refused, reset, timed out)',
      endpointNames,
      endpoints,
      (s) => s.connectFailures,
    );
    counter(
      'orrery_proxy_ejections_total',
      'Times outlier detection ejected an endpoint',
      endpointNames,
      endpoints,
      (s) => s.ejections,
    );
    counter(
      'orrery_proxy_received_bytes_total',
      'Bytes received from clients and forwarded to an endpoint',
      endpointNames,
      endpoints,
      (s) => s.bytesIn,
    );
    counter(
      'orrery_proxy_sent_bytes_total',
      'Bytes received from an endpoint and forwarded to clients',
      endpointNames,
      endpoints,
      (s) => s.bytesOut,
    );
    new Gauge({
      name: 'orrery_proxy_ready_endpoints',
      help: 'Ready endpoints of a Service port',
      labelNames: portNames,
      registers,
      collect() {
        this.reset();
        for (const v of views()) this.set({ ...v.labels }, v.ready);
      },
    });
    new Gauge({
      name: 'orrery_proxy_ejected_endpoints',
      help: 'Endpoints of a Service port ejected by outlier detection now',
      labelNames: portNames,
      registers,
      collect() {
        this.reset();
        for (const v of views()) this.set({ ...v.labels }, v.ejected.length);
      },
    });
    new Gauge({
      name: 'orrery_proxy_panic',
      help: '1 while fewer than half of the ready endpoints of a Service port are in (balancing over all of them)',
      labelNames: portNames,
      registers,
      collect() {
        this.reset();
        for (const v of views()) this.set({ ...v.labels }, v.panic ? 1 : 0);
      },
    });
    new Gauge({
      name: 'orrery_proxy_listeners',
      help: 'Service ports bound at virtual IP:port',
      registers,
      collect() {
        this.set(views().filter((v) => v.listening).length);
      },
    });
  }

  /** The counts of a Service port (made on first use). */
  port(labels: PortLabels): PortStats {
    const key = `${labels.namespace}/${labels.service}/${labels.port}`;
    let s = this.#ports.get(key);
    if (!s) {
      s = {
        labels,
        accepted: 0,
        active: 0,
        noEndpoint: 0,
        connectFailed: 0,
        retries: 0,
        idleTimeouts: 0,
        overflows: { connections: 0, 'pending-requests': 0, requests: 0, retries: 0 },
        responses: [0, 0, 0, 0, 0, 0],
        activeRequests: 0,
        localResponses: {
          'no-endpoint': 0,
          'connect-failed': 0,
          reset: 0,
          timeout: 0,
          overflow: 0,
          'bad-request': 0,
          'bad-response': 0,
        },
        upgrades: 0,
        latency: new LatencyHistogram(),
      };
      this.#ports.set(key, s);
    }
    return s;
  }

  /** The counts of an endpoint of a Service port (made on first use). */
  endpoint(port: PortLabels, endpoint: string, address: string): EndpointStats {
    const key = `${port.namespace}/${port.service}/${port.port}/${endpoint}@${address}`;
    let s = this.#endpoints.get(key);
    if (!s) {
      s = {
        labels: { ...port, endpoint, address },
        connections: 0,
        active: 0,
        connectFailures: 0,
        ejections: 0,
        bytesIn: 0,
        bytesOut: 0,
        requests: 0,
        requestErrors: 0,
      };
      this.#endpoints.set(key, s);
    }
    return s;
  }

  /**
   * Drops the series of a Service port's endpoints that are gone and have no connection open
   * (all of its endpoints, and the port's own, when `keep` is undefined and nothing is open), so
   * that churn does not grow the registry without bound.
   */
  prune(port: PortLabels, keep?: ReadonlySet<string>): void {
    const prefix = `${port.namespace}/${port.service}/${port.port}/`;
    for (const [key, s] of this.#endpoints) {
      if (!key.startsWith(prefix) || s.active > 0) continue;
      if (!keep?.has(`${s.labels.endpoint}@${s.labels.address}`)) this.#endpoints.delete(key);
    }
    const own = this.#ports.get(prefix.slice(0, -1));
    if (!keep && own && own.active === 0) this.#ports.delete(prefix.slice(0, -1));
  }
}

/**
 * `orrery_proxy_request_duration_seconds`, a histogram per Service port, made from the
 * LatencyHistogram of each port's stats when scraped (the registry takes any object with get(), as prom-client does).
 */
function latencyMetric(ports: () => Iterable<PortStats>) {
  const name = 'orrery_proxy_request_duration_seconds';
  return {
    name,
    help: 'HTTP requests on a Service port, from the request head to the end of the response, seconds',
    type: 'histogram',
    aggregator: 'sum',
    get() {
      const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
      for (const s of ports()) {
        const h = s.latency;
        if (h.count === 0) continue;
        let cumulative = 0;
        for (let i = 0; i <= LATENCY_BOUNDS.length; i++) {
          cumulative += h.counts[i] as number;
          const le = i < LATENCY_BOUNDS.length ? (LATENCY_BOUNDS[i] as number) : '+Inf';
          values.push({ labels: { ...s.labels, le }, value: cumulative, metricName: `${name}_bucket` });
        }
        values.push({ labels: { ...s.labels }, value: h.sum, metricName: `${name}_sum` });
        values.push({ labels: { ...s.labels }, value: h.count, metricName: `${name}_count` });
      }
      return { name, help: this.help, type: this.type, values, aggregator: this.aggregator };
    },
    reset() {},
  };
}

/** Serves /metrics, /healthz (the proxy's facts, always 200) and /readyz (200 once synced, else 503). */
export async function serveMetrics(
  metrics: ProxyMetrics,
  listen: { host: string; port: number },
  health: () => { synced: boolean } & Record<string, unknown>,
): Promise<{ server: Server; url: string }> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(health())}\n`);
    } else if (path === '/readyz') {
      const ok = health().synced;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'not synced\n');
    } else if (path === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (error: unknown) => res.writeHead(500).end(String(error)),
      );
    } else {
      res
        .writeHead(404, { 'content-type': 'text/plain' })
        .end('not found: try /metrics, /healthz or /readyz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return { server, url: `http://${host}:${address.port}` };
}
