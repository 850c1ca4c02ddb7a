// Prometheus metrics of the operator and its /metrics + /healthz endpoint.

import { timingSafeEqual } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ReconcileResult } from '../kube/index.ts';
import { http } from '../platform/http.ts';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from '../platform/metrics.ts';

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly leader = new Gauge({
    name: 'orrery_operator_leader',
    help: '1 while this operator is the leader',
    registers: [this.registry],
  });
  readonly reconciles = new Counter({
    name: 'orrery_operator_reconcile_total',
    help: 'Reconciles by controller and result (success, requeue, error)',
    labelNames: ['controller', 'result'] as const,
    registers: [this.registry],
  });
  readonly reconcileSeconds = new Histogram({
    name: 'orrery_operator_reconcile_duration_seconds',
    help: 'Time per reconcile by controller',
    labelNames: ['controller'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'orrery_operator_' });
  }

  observer(controller: string) {
    return (_key: string, outcome: { ms: number; error?: unknown; result?: ReconcileResult }) => {
      const result = outcome.error
        ? 'error'
        : outcome.result?.requeue || outcome.result?.requeueAfterMs
          ? 'requeue'
          : 'success';
      this.reconciles.inc({ controller, result });
      this.reconcileSeconds.observe({ controller }, outcome.ms / 1000);
    };
  }
}

export interface MetricsServing {
  /** What /healthz and /readyz answer: 200 with it when `ok`, else 503 with it. */
  health?: () => { ok: boolean };
  /**
   * Bearer token /metrics wants. Without one, /metrics answers only on a loopback address: on any
   * other it is 403, so a pod IP or 0.0.0.0 never serves it to whoever can connect.
   */
  token?: string;
}

/** 127.0.0.0/8, ::1 and localhost: only this machine's processes connect there. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function bearerIs(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  const got = Buffer.from(header.slice(7).trim());
  const want = Buffer.from(token);
  return got.length === want.length && timingSafeEqual(got, want);
}

/**
 * Serves /metrics, /healthz and /readyz on host:port (loopback by default); resolves with the
 * bound address. /healthz and /readyz are open (the kubelet probes them, and they tell only the
 * role and the informers' state); /metrics is as MetricsServing.token says.
 */
export async function serveMetrics(
  metrics: OperatorMetrics,
  listen: { host: string; port: number },
  serving: MetricsServing = {},
): Promise<{ server: Server; url: string }> {
  const loopback = isLoopback(listen.host);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' || path === '/readyz') {
      const health = serving.health?.() ?? { ok: true };
      res
        .writeHead(health.ok ? 200 : 503, { 'content-type': 'application/json' })
        .end(`${JSON.stringify(health)}\n`);
    } else if (path === '/metrics') {
      if (serving.token === undefined && !loopback) {
        res
          .writeHead(403, { 'content-type': 'text/plain' })
          .end(`/metrics on a non-loopback address (${listen.host}) needs --metrics-token-file\n`);
        return;
      }
      if (serving.token !== undefined && !bearerIs(req.headers.authorization, serving.token)) {
        res
          .writeHead(401, {
            'content-type': 'text/plain',
            'www-authenticate': 'Bearer realm="orrery-operator"',
          })
          .end('missing or wrong bearer token: send "Authorization: Bearer <token>"\n');
        return;
      }
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
    server.listen(listen.port, listen.host, resolve);
  });
  const address = server.address() as AddressInfo;
  return { server, url: `http://${listen.host}:${address.port}` };
}
