// The mesh proxy's tcp side (mesh/proxy.ts, `orrery proxy`) against the real API server, with
// real sockets on loopback. No operator runs: each test writes a Service, its virtual IP (through
// the status subresource; test/helpers/mesh.ts) and an EndpointSlice labelled as the operator
// labels them, pointing at small TCP servers of its own on 127.0.0.1 that greet with their name,
// answer `echo <line>` per line and, at the client's FIN, `bye <name> <bytes received>` before
// their own FIN. Each test runs its own proxy on its own namespace, and cleans up its servers,
// proxy, Service and slice in teardown, pass or fail.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { createInterface } from 'node:readline';
import test, { type ExecutionContext } from 'ava';
import type { Service, ServiceEndpoint } from '../../crds/types.ts';
import type { DeepPartial } from '../../kube/index.ts';
import {
  counts,
  endpointAt,
  listenOnLoopback,
  type MeshSetup,
  meshService,
  nextVip,
  proxyArgs,
  refusingPorts,
  sample,
  scrape,
  twoOfThreeGone,
} from '../helpers/mesh.ts';
import { eventually } from '../helpers/wait.ts';
import { within } from './fixtures/up-process.ts';

// --- backends -------------------------------------------------------------------------------

interface Backend {
  name: string;
  port: number;
  /** Connections it accepted. */
  accepted: number;
  /** Closes the listener and every connection: connects to its port are refused from then on. */
  kill(): Promise<void>;
}

async function backend(t: ExecutionContext, name: string): Promise<Backend> {
  const b: Backend = { name, port: 0, accepted: 0, kill: async () => {} };
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    b.accepted++;
    socket.on('error', () => {});
    socket.setEncoding('utf8');
    socket.write(`hello ${name}\n`);
    let received = 0;
    let pending = '';
    socket.on('data', (chunk: string) => {
      received += Buffer.byteLength(chunk);
      pending += chunk;
      let nl = pending.indexOf('\n');
      while (nl >= 0) {
        socket.write(`echo ${pending.slice(0, nl)}\n`);
        pending = pending.slice(nl + 1);
        nl = pending.indexOf('\n');
      }
    });
    // The client's FIN: answer, then our own FIN.
    socket.on('end', () => socket.end(`bye ${name} ${received}\n`));
  });
  const { port, close } = await listenOnLoopback(t, server);
  b.port = port;
  b.kill = close;
  return b;
}

function endpointOf(b: Backend, ready = true): ServiceEndpoint {
  return endpointAt(b.name, b.port, 'main', ready);
}

// --- clients --------------------------------------------------------------------------------

interface Peer {
  socket: net.Socket;
  /** Everything received so far. */
  text(): string;
  /** Resolves with the error code the socket closed with (undefined: a clean close). */
  closed: Promise<string | undefined>;
  /** Resolves when the other side's FIN came (or the socket closed): the socket is half-open. */
  ended: Promise<void>;
  /** Line i (from 0), once it is in; rejects when the socket closes first or after timeoutMs. */
  line(i: number, timeoutMs?: number): Promise<string>;
}

function dial(t: ExecutionContext, address: string, port: number): Peer {
  const socket = net.connect({ host: address, port, allowHalfOpen: true });
  socket.setEncoding('utf8');
  let text = '';
  let isClosed = false;
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of [...waiters]) w();
  };
  socket.on('data', (chunk: string) => {
    text += chunk;
    wake();
  });
  const closed = new Promise<string | undefined>((resolve) => {
    let code: string | undefined;
    socket.on('error', (err: NodeJS.ErrnoException) => {
      code = err.code ?? err.message;
    });
    socket.on('close', () => {
      isClosed = true;
      resolve(code);
      wake();
    });
  });
  const ended = new Promise<void>((resolve) => {
    socket.once('end', resolve);
    void closed.then(() => resolve());
  });
  t.teardown(() => {
    socket.destroy();
  });
  return {
    socket,
    text: () => text,
    closed,
    ended,
    line(i, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => finish(new Error(`no line ${i} in ${timeoutMs} ms: ${JSON.stringify(text)}`)),
          timeoutMs,
        );
        function finish(result: string | Error) {
          clearTimeout(timer);
          waiters.delete(check);
          if (typeof result === 'string') resolve(result);
          else reject(result);
        }
        function check() {
          const lines = text.split('\n');
          if (lines.length > i + 1) finish(lines[i] as string);
          else if (isClosed) finish(new Error(`closed before line ${i}: ${JSON.stringify(text)}`));
        }
        waiters.add(check);
        check();
      });
    },
  };
}

/** Connects, reads the greeting, closes: the name of the backend that answered. */
async function whoAnswers(t: ExecutionContext, address: string, port: number): Promise<string> {
  const peer = dial(t, address, port);
  const greeting = await peer.line(0);
  peer.socket.destroy();
  await peer.closed;
  return greeting.replace(/^hello /, '');
}

// --- harness --------------------------------------------------------------------------------

interface Setup extends MeshSetup {
  backends: Backend[];
}

/** Three (or `backends`) echo servers behind a Service with one tcp port, `main`. */
async function setup(
  t: ExecutionContext,
  opts: {
    backends?: number;
    spec?: DeepPartial<Service['spec']>;
    endpoints?: (b: Backend[]) => ServiceEndpoint[];
  } = {},
): Promise<Setup> {
  const suffix = randomBytes(3).toString('hex');
  const backends = await Promise.all(
    ['a', 'b', 'c'].slice(0, opts.backends ?? 3).map((n) => backend(t, `${n}-${suffix}`)),
  );
  const endpoints = opts.endpoints ? opts.endpoints(backends) : backends.map((b) => endpointOf(b));
  const s = await meshService(t, { portName: 'main', protocol: 'tcp', spec: opts.spec ?? {}, endpoints });
  return { ...s, backends };
}

const labelsOf = (s: Setup, endpoint?: Backend) => ({
  namespace: s.ns,
  service: 'echo',
  port: 'main',
  ...(endpoint ? { endpoint: endpoint.name } : {}),
});

// --- tests ----------------------------------------------------------------------------------

test('round-robin: 30 connections to the virtual IP go to the three backends in exact rotation', async (t) => {
  const s = await setup(t);
  const proxy = await s.proxy();
  const names: string[] = [];
  for (let i = 0; i < 30; i++) names.push(await whoAnswers(t, s.vip, s.port));
  t.deepEqual(new Set(names.slice(0, 3)), new Set(s.backends.map((b) => b.name)), names.join(' '));
  for (let i = 3; i < 30; i++) t.is(names[i], names[i % 3], `connection ${i}: ${names.join(' ')}`);
  const text = await scrape(proxy);
  for (const b of s.backends) {
    t.is(sample(text, 'orrery_proxy_upstream_connections_total', labelsOf(s, b)), 10, b.name);
  }
  t.is(sample(text, 'orrery_proxy_downstream_connections_total', labelsOf(s)), 30);
});

test('random: 300 connections spread over three backends within statistical bounds', async (t) => {
  const s = await setup(t, { spec: { loadBalancer: { policy: 'random' } } });
  await s.proxy();
  const names: string[] = [];
  for (let i = 0; i < 300; i++) names.push(await whoAnswers(t, s.vip, s.port));
  const c = counts(names);
  // Expected 100 each, standard deviation about 8.2: 60..140 is almost 5 of them.
  for (const b of s.backends) {
    t.true((c[b.name] ?? 0) >= 60 && (c[b.name] ?? 0) <= 140, JSON.stringify(c));
  }
});

test('least-request: 30 connections held open spread evenly (power of two choices on active connections)', async (t) => {
  const s = await setup(t, { spec: { loadBalancer: { policy: 'least-request' } } });
  await s.proxy();
  const names: string[] = [];
  for (let i = 0; i < 30; i++) {
    const peer = dial(t, s.vip, s.port);
    names.push((await peer.line(0)).replace(/^hello /, ''));
  }
  const c = counts(names);
  // The busier of a pair is never picked unless tied: counts stay close to 10 each (none off by
  // more than 4 in a million simulated runs; uniform picks would be, in about one run in 5).
  for (const b of s.backends) {
    t.true((c[b.name] ?? 0) >= 6 && (c[b.name] ?? 0) <= 14, JSON.stringify(c));
  }
});

test('a killed backend: its connects fail, each is retried on another endpoint, and it is ejected', async (t) => {
  const s = await setup(t, {
    spec: { outlierDetection: { consecutiveErrors: 2, baseEjectionSeconds: 30, intervalSeconds: 1 } },
  });
  const proxy = await s.proxy();
  const [a, b, c] = s.backends as [Backend, Backend, Backend];
  await b.kill();
  const names: string[] = [];
  const failures: string[] = [];
  for (let i = 0; i < 30; i++) {
    try {
      names.push(await whoAnswers(t, s.vip, s.port));
    } catch (err) {
      failures.push((err as Error).message);
    }
  }
  t.deepEqual(failures, [], 'no connection failed for the client');
  t.deepEqual(new Set(names), new Set([a.name, c.name]), names.join(' '));
  const text = await scrape(proxy);
  t.is(sample(text, 'orrery_proxy_upstream_connect_failures_total', labelsOf(s, b)), 2);
  t.is(sample(text, 'orrery_proxy_ejections_total', labelsOf(s, b)), 1);
  t.is(sample(text, 'orrery_proxy_retries_total', labelsOf(s)), 2);
  t.is(sample(text, 'orrery_proxy_ejected_endpoints', labelsOf(s)), 1);
  const toA = sample(text, 'orrery_proxy_upstream_connections_total', labelsOf(s, a)) ?? 0;
  const toC = sample(text, 'orrery_proxy_upstream_connections_total', labelsOf(s, c)) ?? 0;
  t.is(toA + toC, 30);
  t.true(toA >= 12 && toC >= 12, `a ${toA}, c ${toC}`);
  const port = proxy.ports()[0];
  t.is(port?.ejected.length, 1);
  t.true(port?.ejected[0]?.startsWith(`${b.name}@`));
});

test('two of three endpoints gone while the slice still lists them: every connection reaches the third, with one retry configured', async (t) => {
  // As during a rollout faster than the watch: refused connects go on to an endpoint not tried
  // yet without taking the one retry; round-robin puts both dead ones before the live one.
  const s = await setup(t, {
    spec: {
      loadBalancer: { policy: 'round-robin' },
      retries: { attempts: 1, retryOn: ['connect-failure'] },
      outlierDetection: { consecutiveErrors: 1000 },
    },
  });
  const c = s.backends[2] as Backend;
  await s.setEndpoints(await twoOfThreeGone(s.backends, 'main'));
  await s.proxy();
  const names: string[] = [];
  for (let i = 0; i < 12; i++) names.push(await whoAnswers(t, s.vip, s.port));
  t.deepEqual(new Set(names), new Set([c.name]));
});

test('the only endpoint refuses: attempts tries, then the client is reset (a failed endpoint is not tried again at once)', async (t) => {
  const s = await setup(t, {
    backends: 1,
    spec: {
      retries: { attempts: 2, retryOn: ['connect-failure'] },
      outlierDetection: { consecutiveErrors: 1000 },
    },
  });
  const [a] = s.backends as [Backend];
  // a gone: its endpoint at a port nothing listens on (refusingPorts says why not its own).
  const [gone] = (await refusingPorts(1)) as [number];
  await s.setEndpoints([endpointAt(a.name, gone, 'main')]);
  const proxy = await s.proxy();
  const peer = dial(t, s.vip, s.port);
  const code = await Promise.race([
    peer.closed,
    new Promise<string>((r) => setTimeout(() => r('still open after 5 s'), 5000)),
  ]);
  t.is(code, 'ECONNRESET');
  const text = await scrape(proxy);
  // The first try and two retries after the back-off, each a refused connect; nothing more.
  t.is(sample(text, 'orrery_proxy_upstream_connect_failures_total', labelsOf(s, a)), 3);
  t.is(sample(text, 'orrery_proxy_retries_total', labelsOf(s)), 2);
  t.is(
    sample(text, 'orrery_proxy_no_endpoint_closes_total', { ...labelsOf(s), reason: 'connect-failed' }),
    1,
  );
});

test('an endpoint marked not ready gets no new connections; its open one goes on', async (t) => {
  const s = await setup(t);
  const proxy = await s.proxy();
  const [a, b, c] = s.backends as [Backend, Backend, Backend];
  const held = await Promise.all([0, 1, 2].map(async () => dial(t, s.vip, s.port)));
  const greetings = [];
  for (const p of held) greetings.push(await p.line(0));
  const toC = held[greetings.indexOf(`hello ${c.name}`)];
  t.truthy(toC, greetings.join(', '));

  await s.setEndpoints([endpointOf(a), endpointOf(b), endpointOf(c, false)]);
  await eventually('the proxy to see 2 ready endpoints', () => proxy.ports()[0]?.ready === 2);
  const names: string[] = [];
  for (let i = 0; i < 30; i++) names.push(await whoAnswers(t, s.vip, s.port));
  t.false(names.includes(c.name), names.join(' '));
  t.deepEqual(counts(names), { [a.name]: 15, [b.name]: 15 });

  toC?.socket.write('still there\n');
  t.is(await toC?.line(1), 'echo still there');
});

test('half-close: the client ends its side, the backend still answers, the client reads it all', async (t) => {
  const s = await setup(t, { backends: 1 });
  await s.proxy();
  const peer = dial(t, s.vip, s.port);
  const greeting = await peer.line(0);
  peer.socket.end('ping\n'); // our FIN goes out after the line
  const name = greeting.replace(/^hello /, '');
  t.is(await peer.line(1), 'echo ping');
  // `bye` is written only once the backend saw our FIN: it came through the proxy.
  t.is(await peer.line(2), `bye ${name} 5`);
  t.is(await peer.closed, undefined, 'then its FIN, a clean close');
  t.is(peer.text(), `hello ${name}\necho ping\nbye ${name} 5\n`);
});

test('bulk both ways on three connections whose clients stop reading: every byte arrives in order, and is counted', async (t) => {
  const s = await setup(t, { backends: 1 });
  const proxy = await s.proxy();
  // About 6 MB each way per connection, more than the socket buffers between the backend and a
  // client hold: while the clients read nothing, the proxy must stop reading the backend, and what
  // it holds back must come out intact and in order once they read again, though every upstream
  // socket reads into one buffer (a copy that was not made would show here as another
  // connection's bytes).
  const run = async (n: number) => {
    const peer = dial(t, s.vip, s.port);
    const name = (await peer.line(0)).replace(/^hello /, '');
    const lines = Array.from({ length: 100_000 }, (_, i) => `${n}.${i} ${randomBytes(24).toString('hex')}`);
    const sent = `${lines.join('\n')}\n`;
    peer.socket.pause();
    peer.socket.end(sent);
    await new Promise((resolve) => setTimeout(resolve, 500));
    peer.socket.resume();
    t.is(await within(peer.closed, 30_000), undefined, 'a clean close after the backend FIN');
    const expected = `hello ${name}\n${lines.map((l) => `echo ${l}\n`).join('')}bye ${name} ${Buffer.byteLength(sent)}\n`;
    const got = peer.text();
    t.is(got.length, expected.length);
    t.true(got === expected, `connection ${n}: the client reads what the backend wrote, in order`);
    return { sent: Buffer.byteLength(sent), received: Buffer.byteLength(expected) };
  };
  const results = await Promise.all([run(0), run(1), run(2)]);
  const text = await scrape(proxy);
  const labels = labelsOf(s, s.backends[0]);
  const sum = (k: 'sent' | 'received') => results.reduce((a, r) => a + r[k], 0);
  t.is(sample(text, 'orrery_proxy_received_bytes_total', labels), sum('sent'));
  t.is(sample(text, 'orrery_proxy_sent_bytes_total', labels), sum('received'));
});

test('no endpoint: the connection is closed at once, not left hanging', async (t) => {
  const s = await setup(t, { endpoints: () => [] });
  const proxy = await s.proxy({}, 0);
  const started = performance.now();
  const peer = dial(t, s.vip, s.port);
  const closedWith = await within(peer.closed, 2000);
  const ms = performance.now() - started;
  t.not(closedWith, 'timeout', 'still open after 2 s');
  t.is(peer.text(), '');
  t.log(`closed after ${Math.round(ms)} ms`);
  const text = await scrape(proxy);
  t.is(sample(text, 'orrery_proxy_no_endpoint_closes_total', { ...labelsOf(s), reason: 'no-endpoint' }), 1);
});

test('Service deleted: its listener closes (connects refused) while an open connection drains', async (t) => {
  const s = await setup(t, { backends: 1 });
  const proxy = await s.proxy({ drainTimeoutMs: 30_000 });
  const held = dial(t, s.vip, s.port);
  await held.line(0);
  await s.services.delete('echo', { namespace: s.ns });
  await eventually('the proxy to drop the Service', () => proxy.ports().length === 0);
  const refused = dial(t, s.vip, s.port);
  t.is(await refused.closed, 'ECONNREFUSED');
  held.socket.write('after delete\n');
  t.is(await held.line(1), 'echo after delete');
});

test('a new virtual IP or port number: bound again there, the old address refused', async (t) => {
  const s = await setup(t, { backends: 1 });
  const proxy = await s.proxy();
  const [only] = s.backends as [Backend];
  t.is(await whoAnswers(t, s.vip, s.port), only.name);
  t.deepEqual(
    proxy.ports().map((p) => p.port),
    ['main'],
  );

  const vip = nextVip();
  await s.services.patchStatus('echo', { virtualIP: vip }, { namespace: s.ns });
  await eventually('the proxy listening on the new virtual IP', () =>
    proxy.ports().find((p) => p.listening && p.address === `${vip}:${s.port}`),
  );
  t.is(await whoAnswers(t, vip, s.port), only.name);
  t.is(await dial(t, s.vip, s.port).closed, 'ECONNREFUSED');

  const port = s.port + 1;
  await s.services.mergePatch(
    'echo',
    { spec: { ports: [{ name: 'main', port, targetPort: 'main', protocol: 'tcp' }] } },
    { namespace: s.ns },
  );
  await eventually('the proxy listening on the new port', () =>
    proxy.ports().find((p) => p.listening && p.address === `${vip}:${port}`),
  );
  t.is(await whoAnswers(t, vip, port), only.name);
  t.is(await dial(t, vip, s.port).closed, 'ECONNREFUSED');
});

test('circuitBreaker.maxConnections: a connection over the limit is closed at once and counted', async (t) => {
  const s = await setup(t, { spec: { circuitBreaker: { maxConnections: 2 } } });
  const proxy = await s.proxy();
  const first = dial(t, s.vip, s.port);
  const second = dial(t, s.vip, s.port);
  await first.line(0);
  await second.line(0);
  const third = dial(t, s.vip, s.port);
  t.is(await third.closed, 'ECONNRESET');
  t.is(third.text(), '');
  const text = await scrape(proxy);
  t.is(sample(text, 'orrery_proxy_overflows_total', { ...labelsOf(s), limit: 'connections' }), 1);
  // One closed: room for one more.
  first.socket.destroy();
  await first.closed;
  await eventually('the closed connection to be released', async () => {
    const active = sample(await scrape(proxy), 'orrery_proxy_downstream_active_connections', labelsOf(s));
    return active === 1;
  });
  t.regex(await whoAnswers(t, s.vip, s.port), /^[abc]-/);
});

test('idle timeout: a connection with no byte either way is closed', async (t) => {
  const s = await setup(t, { backends: 1 });
  const proxy = await s.proxy({ idleTimeoutMs: 300 });
  // Counted from before the dial: the last byte (the backend's greeting) went after it, so the
  // proxy may close no sooner than the timeout after this, however late this test sees the bytes.
  const started = performance.now();
  const peer = dial(t, s.vip, s.port);
  await peer.line(0);
  await peer.ended; // the proxy's FIN: this socket allows half-open, so it stays open until it ends too
  const ms = performance.now() - started;
  t.true(ms >= 295 && ms < 5000, `closed after ${Math.round(ms)} ms (idle timeout 300 ms)`);
  const text = await scrape(proxy);
  t.is(sample(text, 'orrery_proxy_idle_timeouts_total', labelsOf(s)), 1);
});

test('orrery proxy on net.Socket (ORRERY_PROXY_TCP_STREAMS=1, as without libuv handles): half-close and bulk both ways', async (t) => {
  const s = await setup(t, { backends: 1 });
  const child: ChildProcess = spawn(process.execPath, proxyArgs(s), {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ORRERY_LOG_LEVEL: 'info', ORRERY_PROXY_TCP_STREAMS: '1' },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const records: { msg?: string; tcpPath?: string }[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    try {
      records.push(JSON.parse(line));
    } catch {
      // not a log record
    }
  });
  const synced = await eventually(
    'the synced record',
    () => records.find((r) => r.msg === 'synced: serving'),
    {
      timeoutMs: 30_000,
    },
  );
  t.is(synced.tcpPath, 'net-socket');
  const [only] = s.backends as [Backend];
  await eventually(
    'the Service port answering',
    async () => (await whoAnswers(t, s.vip, s.port)) === only.name,
    {
      timeoutMs: 10_000,
    },
  );
  // Half-close: our FIN goes through, the answer to it comes back, then the backend's FIN.
  const peer = dial(t, s.vip, s.port);
  await peer.line(0);
  peer.socket.end('ping\n');
  t.is(await peer.line(2), `bye ${only.name} 5`);
  t.is(await peer.closed, undefined);
  // Bulk to a client that stops reading: intact and in order.
  const bulk = dial(t, s.vip, s.port);
  await bulk.line(0);
  const lines = Array.from({ length: 100_000 }, (_, i) => `${i} ${randomBytes(24).toString('hex')}`);
  const sent = `${lines.join('\n')}\n`;
  bulk.socket.pause();
  bulk.socket.end(sent);
  await new Promise((resolve) => setTimeout(resolve, 500));
  bulk.socket.resume();
  t.is(await within(bulk.closed, 30_000), undefined);
  const expected = `hello ${only.name}\n${lines.map((l) => `echo ${l}\n`).join('')}bye ${only.name} ${Buffer.byteLength(sent)}\n`;
  t.true(bulk.text() === expected, 'the client reads what the backend wrote, in order');
});

test('orrery proxy as a process: serves the virtual IP, /healthz, and exits 0 on SIGTERM after draining', async (t) => {
  const s = await setup(t, { backends: 1 });
  const child: ChildProcess = spawn(process.execPath, proxyArgs(s, ['--drain-timeout', '500ms']), {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ORRERY_LOG_LEVEL: 'info' },
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const records: { msg?: string; url?: string; tcpPath?: string }[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    try {
      records.push(JSON.parse(line));
    } catch {
      // not a log record
    }
  });
  const url = await eventually(
    'the metrics URL line',
    () => records.find((r) => r.msg === 'serving /metrics and /healthz')?.url,
    { timeoutMs: 30_000 },
  );
  await eventually('the Service port listening', async () => {
    const health = (await (await fetch(`${url}/healthz`)).json()) as { synced: boolean; listening: number };
    return health.synced && health.listening === 1;
  });
  t.is((await fetch(`${url}/readyz`)).status, 200);
  t.is(
    records.find((r) => r.msg === 'synced: serving')?.tcpPath,
    process.env.ORRERY_PROXY_TCP_STREAMS === '1' ? 'net-socket' : 'uv-handles',
    'tcp ports on libuv handles (tcp-uv.ts) unless told otherwise',
  );
  const [only] = s.backends as [Backend];
  t.is(await whoAnswers(t, s.vip, s.port), only.name);
  const held = dial(t, s.vip, s.port);
  await held.line(0);

  const signalled = performance.now();
  child.kill('SIGTERM');
  const exit = await within(exited, 15_000);
  t.deepEqual(exit, { code: 0, signal: null });
  t.true(performance.now() - signalled >= 400, 'it waited for the open connection (drain timeout 500 ms)');
  await held.ended;
  t.is(await dial(t, s.vip, s.port).closed, 'ECONNREFUSED');
});
