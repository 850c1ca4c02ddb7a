// The operator's /healthz and /metrics over real sockets, with operators against the real API
// server: /healthz tells the leader from the standby and a stopped operator (503); /metrics is
// served on loopback, refused on any other address unless a token is configured, then wants it.
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import test from 'ava';
import { pino } from 'pino';
import { loadKubeConfig } from '../../kube/index.ts';
import { OperatorMetrics, serveMetrics } from '../../operator/metrics.ts';
import { type Operator, startOperator } from '../../operator/operator.ts';
import { freshNamespace } from '../helpers/cluster.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { eventually } from '../helpers/wait.ts';

const log = pino({ level: process.env.ORRERY_TEST_LOG ?? 'silent' });

interface Served {
  operator: Operator;
  url: string;
}

test('/healthz says leader or standby, and who leads; 503 once stopped', async (t) => {
  const { kubeconfig } = await orreryCluster();
  const ns = await freshNamespace(t);
  const lease = `orrery-operator-${randomBytes(3).toString('hex')}`;
  const servers: Server[] = [];
  const operators: Operator[] = [];
  t.teardown(async () => {
    for (const s of servers) s.close();
    await Promise.all(operators.map((o) => o.stop()));
  });
  const serve = async (identity: string): Promise<Served> => {
    let operator: Operator | undefined;
    const { server, url } = await serveMetrics(
      new OperatorMetrics(),
      { host: '127.0.0.1', port: 0 },
      { health: () => operator?.health() ?? { ok: true } },
    );
    servers.push(server);
    operator = await startOperator({
      kubeConfig: loadKubeConfig({ kubeconfig }),
      log,
      identity,
      namespace: ns,
      hostSelector: 'orrery.dev/test=none',
      leaderLeaseName: lease,
      leaseDurationSeconds: 2,
      renewDeadlineMs: 1500,
      retryPeriodMs: 200,
    });
    operators.push(operator);
    return { operator, url };
  };
  const healthOf = async (url: string) => {
    const r = await fetch(`${url}/healthz`);
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };

  const first = await serve('first');
  const leading = await eventually('the first operator leading with its informers synced', async () => {
    const h = await healthOf(first.url);
    const informers = Object.values(h.body.informers as Record<string, { synced: boolean }>);
    return h.body.role === 'leader' && informers.length > 0 && informers.every((i) => i.synced) ? h : false;
  });
  t.is(leading.status, 200);
  t.is(leading.body.ok, true);
  t.is(leading.body.leaderIdentity, 'first');

  const second = await serve('second');
  const standby = await eventually('the second operator seeing the first lead', async () => {
    const h = await healthOf(second.url);
    return h.body.leaderIdentity === 'first' ? h : false;
  });
  t.is(standby.status, 200);
  t.is(standby.body.role, 'standby');
  t.deepEqual(standby.body.informers, {}, 'a standby runs no informers');

  await first.operator.stop();
  const stopped = await healthOf(first.url);
  t.is(stopped.status, 503);
  t.is(stopped.body.role, 'stopped');
  t.deepEqual(stopped.body.problems, ['the operator is stopped']);
  await eventually(
    'the second operator taking over',
    async () => (await healthOf(second.url)).body.role === 'leader',
  );
});

test('/metrics: served on loopback; on another address refused without a token, and wants it with one', async (t) => {
  const metrics = new OperatorMetrics();
  const servers: Server[] = [];
  t.teardown(() => {
    for (const s of servers) s.close();
  });
  const at = async (host: string, token?: string) => {
    const { server } = await serveMetrics(metrics, { host, port: 0 }, token === undefined ? {} : { token });
    servers.push(server);
    const { port } = server.address() as { port: number };
    return `http://127.0.0.1:${port}`;
  };

  const loopback = await at('127.0.0.1');
  const local = await fetch(`${loopback}/metrics`);
  t.is(local.status, 200);
  t.regex(await local.text(), /orrery_operator_leader/);

  const open = await at('0.0.0.0');
  const refused = await fetch(`${open}/metrics`);
  t.is(refused.status, 403);
  t.regex(await refused.text(), /non-loopback address \(0\.0\.0\.0\) needs --metrics-token-file/);
  t.is((await fetch(`${open}/healthz`)).status, 200, 'the probes still reach /healthz');

  const token = 'metrics-token-0123456789';
  const guarded = await at('0.0.0.0', token);
  t.is((await fetch(`${guarded}/metrics`)).status, 401);
  t.is(
    (await fetch(`${guarded}/metrics`, { headers: { authorization: 'Bearer wrong-token-0123456789' } }))
      .status,
    401,
  );
  const allowed = await fetch(`${guarded}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  t.is(allowed.status, 200);
  t.regex(await allowed.text(), /orrery_operator_leader/);
});
