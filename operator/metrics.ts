// Prometheus metrics of the operator and its /metrics + /healthz endpoint.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ReconcileResult } from '../kube/index.ts';

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

/** Serves /metrics and /healthz on host:port (loopback by default); resolves with the bound address. */
export async function serveMetrics(
  metrics: OperatorMetrics,
  listen: { host: string; port: number },
): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    if (req.url === '/healthz' || req.url === '/readyz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (req.url === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (error: unknown) => res.writeHead(500).end(String(error)),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, resolve);
  });
  const address = server.address() as AddressInfo;
  return { server, url: `http://${listen.host}:${address.port}` };
}
