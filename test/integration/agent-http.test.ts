// The runtime's HTTP API over real sockets, and status write coalescing under a restart storm.
import path from 'node:path';
import test from 'ava';
import {
  agentDirs,
  authed,
  inProcessAgent,
  kubeForTests,
  replicaObject,
  runOrrery,
  testNamespace,
  waitFor,
} from '../helpers/agent-harness.ts';

test.before(async () => {
  await kubeForTests();
});

const main = path.join(import.meta.dirname, 'fixtures', 'agent-main.ts');

const orreryCli = (args: string[]) => runOrrery(args, main);

function metricValue(text: string, name: string, labels = ''): number {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    found = true;
  }
  if (!found) throw new Error(`metric ${name}${labels ? ` with ${labels}` : ''} not found`);
  return sum;
}

test('the HTTP API wants the token, serves replicas, stats, logs (tail and follow), events and metrics', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  const base = agent.apiEndpoint;

  // Auth: /healthz is open, everything else wants the bearer token.
  t.is((await fetch(`${base}/healthz`)).status, 200);
  const noToken = await fetch(`${base}/v1/replicas`);
  t.is(noToken.status, 401);
  t.regex(noToken.headers.get('www-authenticate') ?? '', /^Bearer/);
  t.is(
    (await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer wrong-token-wrong-token' } })).status,
    401,
  );

  // SSE first, so the replica's events are seen from its start.
  const events = new AbortController();
  t.teardown(() => events.abort());
  const sse = await fetch(`${base}/v1/events`, { ...authed(agent.token), signal: events.signal });
  t.is(sse.status, 200);
  t.regex(sse.headers.get('content-type') ?? '', /^text\/event-stream/);
  const seen: { event: string; data: Record<string, unknown> }[] = [];
  const reader = (async () => {
    const dec = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of sse.body as unknown as AsyncIterable<Uint8Array>) {
        buf += dec.decode(chunk, { stream: true });
        let i = buf.indexOf('\n\n');
        while (i >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (ev && data) seen.push({ event: ev, data: JSON.parse(data) });
          i = buf.indexOf('\n\n');
        }
      }
    } catch {
      // aborted at the end of the test
    }
  })();

  await k.replicas.create(
    replicaObject(ns, 'talker-0', dirs.hostName, [
      {
        name: 'talker',
        command: ['sh', '-c', 'i=0; while [ $i -lt 5 ]; do echo "line $i"; i=$((i+1)); done; exec sleep 600'],
      },
      { name: 'quiet', command: ['sleep', '600'] },
    ]),
  );
  await waitFor('talker-0 Running', async () =>
    (await k.replicas.get('talker-0', { namespace: ns })).status?.phase === 'Running' ? true : undefined,
  );
  const started = await waitFor('an SSE started event', () =>
    seen.find((e) => e.event === 'started' && e.data.name === 'talker-0'),
  );
  t.is(started.data.namespace, ns);
  t.is(seen[0]?.event, 'snapshot');

  const list = (await (await fetch(`${base}/v1/replicas`, authed(agent.token))).json()) as {
    items: { namespace: string; name: string; status: { phase: string } }[];
  };
  t.deepEqual(
    list.items.map((i) => [i.namespace, i.name, i.status.phase]),
    [[ns, 'talker-0', 'Running']],
  );
  const withStats = (await (await fetch(`${base}/v1/replicas?stats=true`, authed(agent.token))).json()) as {
    items: { stats: { pids: number } }[];
  };
  t.true((withStats.items[0]?.stats.pids ?? 0) >= 2);
  const one = await fetch(`${base}/v1/replicas/${ns}/talker-0`, authed(agent.token));
  const oneBody = (await one.json()) as { stats: { memoryCurrentBytes: number; pids: number } };
  t.true(oneBody.stats.pids >= 2);
  const stats = (await (
    await fetch(`${base}/v1/replicas/${ns}/talker-0/stats`, authed(agent.token))
  ).json()) as {
    cpuUsageNanos: number;
    memoryCurrentBytes: number;
  };
  t.true(stats.memoryCurrentBytes > 0);
  t.is((await fetch(`${base}/v1/replicas/${ns}/nope-0`, authed(agent.token))).status, 404);

  // Logs: tail.
  const text = await waitFor('5 log lines', async () => {
    const r = await fetch(`${base}/v1/replicas/${ns}/talker-0/logs?process=talker`, authed(agent.token));
    const s = await r.text();
    return s.split('\n').filter(Boolean).length === 5 ? s : undefined;
  });
  t.is(text, 'line 0\nline 1\nline 2\nline 3\nline 4\n');
  const tail2 = await (
    await fetch(`${base}/v1/replicas/${ns}/talker-0/logs?process=talker&tail=2`, authed(agent.token))
  ).text();
  t.is(tail2, 'line 3\nline 4\n');

  // `orrery logs`: Replica -> spec.host -> Host.status.apiEndpoint, token from the state dir.
  const cli = await orreryCli([
    'logs',
    'talker-0',
    '-n',
    ns,
    '-p',
    'talker',
    '--tail',
    '3',
    '--kubeconfig',
    k.kubeconfig,
    '--state-dir',
    dirs.stateDir,
  ]);
  t.is(cli.stderr, '');
  t.is(cli.stdout, 'line 2\nline 3\nline 4\n');
  const wrongToken = await orreryCli([
    'logs',
    'talker-0',
    '-n',
    ns,
    '--kubeconfig',
    k.kubeconfig,
    '--token',
    'x'.repeat(32),
  ]);
  t.is(wrongToken.code, 1);
  t.regex(wrongToken.stderr, /answered 401/);
  const missing = await orreryCli(['logs', 'nope-0', '-n', ns, '--kubeconfig', k.kubeconfig]);
  t.regex(missing.stderr, /replica nope-0 not found in namespace/);

  // Bad parameters: 400 naming the parameter and the expected form.
  const bad = async (query: string) => {
    const r = await fetch(`${base}/v1/replicas/${ns}/talker-0/logs?${query}`, authed(agent.token));
    t.is(r.status, 400, query);
    return ((await r.json()) as { error: string }).error;
  };
  t.regex(await bad('process=talker&tail=-1'), /"tail" must be a non-negative integer/);
  t.regex(await bad('process=talker&follow=maybe'), /"follow" must be true, false, 1 or 0/);
  t.regex(await bad('process=nope'), /"process" must be one of the replica's processes \(talker, quiet\)/);
  t.regex(await bad('process=talker&follow=1&previous=1'), /"previous" must be false when follow is true/);

  // Logs: follow streams what the process writes after the request, through the agent.
  const follow = new AbortController();
  t.teardown(() => follow.abort());
  const fr = await fetch(`${base}/v1/replicas/${ns}/talker-0/logs?process=talker&follow=true&tail=1`, {
    ...authed(agent.token),
    signal: follow.signal,
  });
  t.is(fr.status, 200);
  let followed = '';
  const followReader = (async () => {
    const dec = new TextDecoder();
    try {
      for await (const chunk of fr.body as unknown as AsyncIterable<Uint8Array>)
        followed += dec.decode(chunk);
    } catch {
      // aborted
    }
  })();
  await waitFor('the tail line', () => (followed.includes('line 4') ? true : undefined));
  const { appendFile } = await import('node:fs/promises');
  // The process's own log file, appended to as the process would (O_APPEND).
  await appendFile(agent.engine.logs.pathFor(`${ns}.talker-0`, 'talker'), 'appended later\n');
  await waitFor('the followed line', () => (followed.includes('appended later') ? true : undefined));
  t.is(followed, 'line 4\nappended later\n');
  follow.abort();
  await followReader;

  // previous: after a restart, the run before it (the only one with the appended line).
  const talkerPid = agent.engine.status(`${ns}.talker-0`).processes[0]?.pid as number;
  process.kill(talkerPid, 'SIGKILL');
  await waitFor('talker restarted', () =>
    (agent.engine.status(`${ns}.talker-0`).processes[0]?.restarts ?? 0) >= 1 ? true : undefined,
  );
  const previous = await (
    await fetch(`${base}/v1/replicas/${ns}/talker-0/logs?process=talker&previous=true`, authed(agent.token))
  ).text();
  t.is(previous, 'line 0\nline 1\nline 2\nline 3\nline 4\nappended later\n');

  // Metrics: Prometheus text with the agent's series.
  const m = await (await fetch(`${base}/metrics`, authed(agent.token))).text();
  t.is(metricValue(m, 'orrery_runtime_replicas', 'phase="Running"'), 1);
  t.true(metricValue(m, 'orrery_runtime_replica_start_seconds_count') >= 1);
  t.true(metricValue(m, 'orrery_runtime_status_writes_total', 'outcome="written"') >= 1);
  t.true(metricValue(m, 'orrery_runtime_process_resident_memory_bytes') > 0);
  t.is(metricValue(m, 'orrery_runtime_process_restarts_total', 'process="talker"'), 1);
  t.is(metricValue(m, 'orrery_runtime_lease_renew_failures_total'), 0);

  events.abort();
  await reader;
});

test('a restart storm is coalesced: far fewer status writes than runtime events, and the last status is right', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  const base = agent.apiEndpoint;
  const metrics = async () => (await fetch(`${base}/metrics`, authed(agent.token))).text();
  const before = await metrics();
  const writes0 = metricValue(before, 'orrery_runtime_status_writes_total', 'outcome="written"');

  // A permanent process that dies at once: within the intensity every exit is an immediate
  // restart (docs/DESIGN.md §5.2), so events come as fast as spawns do; past it the replica backs off and
  // its status settles, which is when the API must show the final count.
  const target = 300;
  await k.replicas.create(
    replicaObject(ns, 'storm-0', dirs.hostName, [{ name: 'crasher', command: ['sh', '-c', 'exit 3'] }], {
      supervision: {
        maxRestarts: target,
        periodSeconds: 120,
        backoff: { initialSeconds: 60, maxSeconds: 60 },
      },
    }),
  );
  const settled = await waitFor(
    'CrashLoopBackOff with the runtime restart count',
    async () => {
      const id = `${ns}.storm-0`;
      if (!agent.engine.has(id)) return undefined;
      const rs = agent.engine.status(id);
      const obj = await k.replicas.get('storm-0', { namespace: ns });
      return rs.phase === 'CrashLoopBackOff' &&
        obj.status?.phase === 'CrashLoopBackOff' &&
        obj.status.restarts === rs.processes[0]?.restarts
        ? obj
        : undefined;
    },
    60_000,
  );
  t.true((settled.status?.restarts ?? 0) >= target);
  t.is(settled.status?.reason, 'CrashLoopBackOff');
  t.is(settled.status?.processes?.[0]?.lastExit?.code, 3);
  t.is(settled.status?.processes?.[0]?.lastExit?.reason, 'Error');
  const after = await metrics();
  const requests =
    metricValue(after, 'orrery_runtime_status_write_requests_total') -
    metricValue(before, 'orrery_runtime_status_write_requests_total');
  const writes = metricValue(after, 'orrery_runtime_status_writes_total', 'outcome="written"') - writes0;
  const events = metricValue(after, 'orrery_runtime_events_total', 'type="exited"');
  t.log(`${events} exits, ${requests} status write requests -> ${writes} status writes`);
  await k.replicas.delete('storm-0', { namespace: ns });
  t.true(events >= target);
  t.true(writes * 5 < requests, `writes ${writes} should be far fewer than requests ${requests}`);
});
