// The runtime agent stays bounded against its workloads and its clients (issue 15): a burst of
// output leaves at most the log cap on disk, a log read streams, a slow /v1/events reader is cut
// off, connections and streams are capped, the token need not be on the command line, and the
// metric series of a deleted replica go with it. Real agents (child processes, so their RSS and
// CPU are their own), real workloads, real sockets.
import { readFileSync } from 'node:fs';
import { readdir, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import test from 'ava';
import {
  type AgentDirs,
  agentDirs,
  authed,
  childAgent,
  inProcessAgent,
  kubeForTests,
  replicaObject,
  testNamespace,
  waitFor,
} from '../helpers/agent-harness.ts';

test.before(async () => {
  await kubeForTests();
});

const MiB = 1024 * 1024;

/** Resident set of a process, bytes (/proc/<pid>/status VmRSS). */
function rss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1]) * 1024;
}

/** CPU time (user + system) of a process so far, seconds (/proc/<pid>/stat fields 14 and 15). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Samples `pid`'s RSS every 20 ms until stopped; resolves with the highest seen. */
function sampleRss(pid: number): { stop: () => number } {
  let peak = rss(pid);
  const timer = setInterval(() => {
    peak = Math.max(peak, rss(pid));
  }, 20);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, rss(pid));
    },
  };
}

/** Bytes of every file in a replica's log directory. */
async function logBytes(dirs: AgentDirs, id: string): Promise<number> {
  const dir = path.join(dirs.logDir, id);
  let total = 0;
  for (const name of await readdir(dir).catch(() => [])) {
    total += (await stat(path.join(dir, name)).catch(() => ({ size: 0 }))).size;
  }
  return total;
}

async function metricsText(base: string, token: string): Promise<string> {
  return (await fetch(`${base}/metrics`, authed(token))).text();
}

function metricValue(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** The agent's last log line of a process, through its API. */
async function lastLine(base: string, token: string, ns: string, name: string): Promise<string> {
  const r = await fetch(`${base}/v1/replicas/${ns}/${name}/logs?tail=1`, authed(token));
  return r.ok ? r.text() : '';
}

/**
 * `yes`'s 100-byte lines, `bytes` of them, then (a second later) a line saying so; then it idles.
 * The pause: a line written while a rotation is in its last moment (between its last read and the
 * truncation) is lost, as copy-and-truncate loses it (logs/rotate.ts); one written after the
 * burst, once the writer paused, is kept, which is what is checked.
 */
function burst(bytes: number): string[] {
  const line = 'x'.repeat(99);
  return ['sh', '-c', `yes ${line} | head -c ${bytes}; sleep 1; echo burst-done; exec sleep 600`];
}

test('a 200 MB burst of output leaves at most the log cap on disk (10 MiB x 5), rotated as it is written', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await childAgent(t, dirs);
  const pid = agent.child.pid as number;
  const id = `${ns}.burst-0`;
  const cap = 10 * MiB * 5;

  const cpu0 = cpuSeconds(pid);
  const started = performance.now();
  await k.replicas.create(
    replicaObject(ns, 'burst-0', dirs.hostName, [{ name: 'writer', command: burst(200_000_000) }]),
  );
  let peak = 0;
  const sampler = setInterval(() => {
    void logBytes(dirs, id).then((b) => {
      peak = Math.max(peak, b);
    });
  }, 20);
  t.teardown(() => clearInterval(sampler));
  await waitFor(
    'the burst to be written',
    async () =>
      (await lastLine(agent.apiEndpoint, agent.token, ns, 'burst-0')) === 'burst-done\n' ? true : undefined,
    120_000,
  );
  clearInterval(sampler);
  const seconds = (performance.now() - started) / 1000;
  const cpu = cpuSeconds(pid) - cpu0;
  // At rest: the live file below the size, every rotated one at most the size plus its note line.
  const onDisk = await waitFor('the live file below 10 MiB, no rotation in progress', async () => {
    const live = (await stat(path.join(dirs.logDir, id, 'writer.log'))).size;
    const rotating = (await readdir(path.join(dirs.logDir, id))).some((f) => f.endsWith('.rotating'));
    return live < 10 * MiB && !rotating ? logBytes(dirs, id) : undefined;
  });
  const files = (await readdir(path.join(dirs.logDir, id))).sort();
  t.log(
    `200 MB in ${seconds.toFixed(1)} s: ${(onDisk / MiB).toFixed(1)} MiB left on disk, ` +
      `at most ${(peak / MiB).toFixed(1)} MiB seen during the burst; agent CPU ${cpu.toFixed(2)} s`,
  );
  // One run: a self-fence (the agent too slow to renew its Lease) would have killed and restarted it.
  const metrics = await metricsText(agent.apiEndpoint, agent.token);
  const fences = metricValue(metrics, 'orrery_runtime_self_fences_total', `host="${dirs.hostName}"`);
  t.is(fences, 0, 'the agent fenced itself during the burst');
  // The process's status says how a second run came about (an exit restarted in place, or a fresh start).
  const processes = (await k.replicas.get('burst-0', { namespace: ns })).status?.processes;
  t.true(
    files.length <= 5 && files.every((f) => /^writer\.log(\.[1-4])?$/.test(f)),
    `${files.join(' ')}; status.processes ${JSON.stringify(processes)}`,
  );
  for (const f of files) {
    const size = (await stat(path.join(dirs.logDir, id, f))).size;
    t.true(size <= 10 * MiB + 100, `${f}: ${size} bytes, the size cap is 10 MiB`);
  }
  t.true(onDisk <= cap + 4 * 100, `${onDisk} bytes on disk, the cap is ${cap}`);
  // The last line written is kept: rotation drops the oldest output, never the newest.
  t.is(await lastLine(agent.apiEndpoint, agent.token, ns, 'burst-0'), 'burst-done\n');
});

test('a re-adopted process is kept under the cap too: its burst after an agent restart is rotated as written', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const first = await childAgent(t, dirs, ['--log-max-size', '1Mi', '--log-max-files', '3']);
  const id = `${ns}.later-0`;
  // Quiet for 10 s, time enough for the agent to be killed and another to re-adopt it.
  const line = 'x'.repeat(99);
  await k.replicas.create(
    replicaObject(ns, 'later-0', dirs.hostName, [
      {
        name: 'writer',
        command: [
          'sh',
          '-c',
          `echo up; sleep 10; yes ${line} | head -c 50000000; sleep 1; echo burst-done; exec sleep 600`,
        ],
      },
    ]),
  );
  await waitFor('the writer up', async () =>
    (await lastLine(first.apiEndpoint, first.token, ns, 'later-0')) === 'up\n' ? true : undefined,
  );
  first.child.kill('SIGKILL');
  await first.exited;
  const second = await childAgent(t, dirs, ['--log-max-size', '1Mi', '--log-max-files', '3']);
  await waitFor(
    'the burst written',
    async () =>
      (await lastLine(second.apiEndpoint, second.token, ns, 'later-0')) === 'burst-done\n' ? true : undefined,
    60_000,
  );
  // Without a watch on re-adopted processes only the 30 s pass would rotate: 50 MB would sit there.
  const onDisk = await waitFor(
    'the live file below 1 MiB, no rotation in progress',
    async () => {
      const live = (await stat(path.join(dirs.logDir, id, 'writer.log'))).size;
      const rotating = (await readdir(path.join(dirs.logDir, id))).some((f) => f.endsWith('.rotating'));
      return live < MiB && !rotating ? logBytes(dirs, id) : undefined;
    },
    10_000,
  );
  t.true(onDisk <= 3 * MiB + 2 * 100, `${onDisk} bytes on disk, the cap is ${3 * MiB}`);
});

test("a log read without tail streams the run: the agent's RSS stays flat reading 300 MB", async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  // A size cap above the run, so the whole 300 MB stays in one live file to be read.
  const agent = await childAgent(t, dirs, ['--log-max-size', '1Gi', '--log-max-files', '1']);
  const pid = agent.child.pid as number;
  const bytes = 300_000_000;
  await k.replicas.create(
    replicaObject(ns, 'big-0', dirs.hostName, [{ name: 'writer', command: burst(bytes) }]),
  );
  await waitFor(
    'the run to be written',
    async () =>
      (await lastLine(agent.apiEndpoint, agent.token, ns, 'big-0')) === 'burst-done\n' ? true : undefined,
    120_000,
  );
  const before = rss(pid);
  const sampler = sampleRss(pid);
  const r = await fetch(`${agent.apiEndpoint}/v1/replicas/${ns}/big-0/logs`, authed(agent.token));
  t.is(r.status, 200);
  let received = 0;
  for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) received += chunk.length;
  const peak = sampler.stop();
  t.log(
    `read ${received} bytes; agent RSS ${(before / MiB).toFixed(0)} MiB before, ${(peak / MiB).toFixed(0)} MiB at most`,
  );
  t.is(received, bytes + 'burst-done\n'.length);
  // A whole-file read costs several times the file (buffer, string, response): > 600 MB here;
  // streamed, what grows is the garbage of the blocks sent, until the next collection.
  t.true(peak - before < 128 * MiB, `the agent's RSS grew by ${((peak - before) / MiB).toFixed(0)} MiB`);
});

/** An HTTP request on a raw socket that is then never read from. */
function stalledRequest(base: string, pathname: string, token: string): Promise<net.Socket> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => {
      socket.write(`GET ${pathname} HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${token}\r\n\r\n`);
      socket.pause();
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

test('an /v1/events reader that stops reading is cut off, without the agent holding what it did not read', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await childAgent(t, dirs, ['--api-event-buffer', '64Ki']);
  const pid = agent.child.pid as number;
  const slow = await stalledRequest(agent.apiEndpoint, '/v1/events', agent.token);
  t.teardown(() => slow.destroy());
  const before = rss(pid);
  const sampler = sampleRss(pid);
  // A crash loop: three events (exited, restarting, started) per restart, as fast as spawns go.
  await k.replicas.create(
    replicaObject(ns, 'storm-0', dirs.hostName, [{ name: 'crasher', command: ['sh', '-c', 'exit 3'] }], {
      supervision: {
        maxRestarts: 1_000_000,
        periodSeconds: 1,
        backoff: { initialSeconds: 60, maxSeconds: 60 },
      },
    }),
  );
  const cut = await waitFor(
    'the slow reader to be cut off',
    async () => {
      const text = await metricsText(agent.apiEndpoint, agent.token);
      const n = metricValue(text, 'orrery_runtime_api_rejected_total', 'reason="slow-reader"') ?? 0;
      return n >= 1
        ? { events: metricValue(text, 'orrery_runtime_events_total', 'type="exited"') ?? 0 }
        : undefined;
    },
    90_000,
  );
  const peak = sampler.stop();
  await k.replicas.delete('storm-0', { namespace: ns });
  t.log(`cut off after ${cut.events} exits; agent RSS grew by ${((peak - before) / MiB).toFixed(1)} MiB`);
  // The client sees its stream end once it reads what the kernel still holds.
  const ended = new Promise<void>((resolve) => slow.once('close', () => resolve()));
  slow.resume();
  slow.on('data', () => {});
  await ended;
  t.true(peak - before < 64 * MiB, `the agent's RSS grew by ${((peak - before) / MiB).toFixed(0)} MiB`);
  // A reader that keeps up is served as before.
  const live = await fetch(`${agent.apiEndpoint}/v1/events`, authed(agent.token));
  t.is(live.status, 200);
  await live.body?.cancel();
});

/** A request on a fresh connection; the status and body, with the connection left open. */
function requestOn(
  socket: net.Socket,
  host: string,
  pathname: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString();
      const head = text.indexOf('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(text)?.[1];
      if (head < 0 || length === undefined || text.length < head + 4 + Number(length)) return;
      socket.off('data', onData);
      resolve({ status: Number(text.slice(9, 12)), body: text.slice(head + 4) });
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(`GET ${pathname} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  });
}

test('connections and streams over their caps are answered 503, saying which cap', async (t) => {
  const dirs = await agentDirs(t);
  const agent = await childAgent(t, dirs, ['--api-max-connections', '4', '--api-max-streams', '2']);
  const url = new URL(agent.apiEndpoint);
  const open: net.Socket[] = [];
  t.teardown(() => {
    for (const s of open) s.destroy();
  });
  const connect = () =>
    new Promise<net.Socket>((resolve) => {
      const s = net.connect(Number(url.port), url.hostname, () => resolve(s));
      open.push(s);
    });

  // Streams: two event streams are served, the third is refused.
  const streams = [0, 1].map(() => new AbortController());
  t.teardown(() => {
    for (const a of streams) a.abort();
  });
  for (const a of streams) {
    const r = await fetch(`${agent.apiEndpoint}/v1/events`, { ...authed(agent.token), signal: a.signal });
    t.is(r.status, 200);
  }
  const third = await fetch(`${agent.apiEndpoint}/v1/events`, authed(agent.token));
  t.is(third.status, 503);
  t.regex(((await third.json()) as { error: string }).error, /too many streams .* the limit is 2/);
  for (const a of streams) a.abort();
  await waitFor('the streams closed', async () => {
    const r = await fetch(`${agent.apiEndpoint}/v1/events`, authed(agent.token));
    await r.body?.cancel();
    return r.status === 200 ? true : undefined;
  });

  // Connections: fetch's pooled ones are gone once its sockets close; then four raw ones fill the cap.
  await new Promise((r) => setTimeout(r, 200));
  for (let i = 0; i < 4; i++) await connect();
  const held = await waitFor('a fifth connection refused', async () => {
    const s = await connect();
    const answer = await requestOn(s, url.host, '/healthz');
    return answer.status === 503 ? answer : undefined;
  });
  t.regex(JSON.parse(held.body).error, /too many connections to the runtime API: \d+ open, the limit is 4/);
  for (const s of open.splice(0)) s.destroy();
  await waitFor('served again once connections close', async () => {
    const s = await connect();
    return (await requestOn(s, url.host, '/healthz')).status === 200 ? true : undefined;
  });
});

test('--token-file keeps the token out of /proc/<pid>/cmdline', async (t) => {
  const dirs = await agentDirs(t);
  const token = 'file-token-0123456789abcdef';
  const file = path.join(dirs.root, 'token');
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  const agent = await childAgent(t, dirs, ['--token-file', file]);
  t.is(agent.token, token, 'the token the agent wrote for local clients');
  const cmdline = readFileSync(`/proc/${agent.child.pid}/cmdline`, 'utf8');
  t.false(cmdline.includes(token));
  t.is((await fetch(`${agent.apiEndpoint}/v1/replicas`, authed(token))).status, 200);
});

test("a deleted replica's metric series are removed", async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  await k.replicas.create(
    replicaObject(ns, 'flaky-0', dirs.hostName, [
      { name: 'flaky', command: ['sh', '-c', 'sleep 0.1; exit 1'] },
    ]),
  );
  const series = 'replica="flaky-0"';
  await waitFor('a restart counted', async () =>
    (metricValue(
      await metricsText(agent.apiEndpoint, agent.token),
      'orrery_runtime_process_restarts_total',
      series,
    ) ?? 0) >= 1
      ? true
      : undefined,
  );
  await k.replicas.delete('flaky-0', { namespace: ns });
  await waitFor('the replica stopped', () => (agent.engine.has(`${ns}.flaky-0`) ? undefined : true));
  const text = await metricsText(agent.apiEndpoint, agent.token);
  t.is(metricValue(text, 'orrery_runtime_process_restarts_total', series), undefined);
});

test('log directories are 0700 and log files 0600', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  await k.replicas.create(
    replicaObject(ns, 'modes-0', dirs.hostName, [
      { name: 'main', command: ['sh', '-c', 'echo hi; exec sleep 600'] },
    ]),
  );
  await waitFor('its line', async () =>
    (await lastLine(agent.apiEndpoint, agent.token, ns, 'modes-0')) === 'hi\n' ? true : undefined,
  );
  const mode = async (p: string) => (await stat(p)).mode & 0o777;
  t.is(await mode(dirs.logDir), 0o700);
  t.is(await mode(path.join(dirs.logDir, `${ns}.modes-0`)), 0o700);
  t.is(await mode(path.join(dirs.logDir, `${ns}.modes-0`, 'main.log')), 0o600);
});
