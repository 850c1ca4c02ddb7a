import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import test from 'ava';
import { closeFd, netnsConnect, pidfdOpen } from '../../node-runtime/native/index.ts';
import { ProbeRunner, runProbeOnce } from '../../node-runtime/probes/runner.ts';
import { harness, nextEvent, readLog, replica, workloadDir } from '../helpers/engine-harness.ts';
import { eventually } from '../helpers/wait.ts';

async function server(t: import('ava').ExecutionContext, status: () => number): Promise<number> {
  const srv = http.createServer((_req, res) => {
    res.statusCode = status();
    res.end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  return (srv.address() as net.AddressInfo).port;
}

test('http probe: 200-399 succeed, 500 and refused connections fail, named ports resolve', async (t) => {
  let status = 200;
  const port = await server(t, () => status);
  const ctx = { ports: { http: port }, env: {} };
  t.true((await runProbeOnce({ http: { port: 'http', path: '/healthz' } }, ctx)).ok);
  status = 302;
  t.true((await runProbeOnce({ http: { port } }, ctx)).ok);
  status = 503;
  const bad = await runProbeOnce({ http: { port } }, ctx);
  t.false(bad.ok);
  t.regex(bad.message ?? '', /HTTP 503/);
  t.false((await runProbeOnce({ http: { port: 'nope' } }, ctx)).ok);
});

test('tcp probe succeeds on a listening port and fails on a closed one', async (t) => {
  const port = await server(t, () => 200);
  t.true((await runProbeOnce({ tcp: { port } }, { ports: {}, env: {} })).ok);
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const closedPort = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  t.false((await runProbeOnce({ tcp: { port: closedPort } }, { ports: {}, env: {} })).ok);
});

test('exec probe: exit 0 succeeds, non-zero and timeouts fail', async (t) => {
  const ctx = { ports: {}, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } };
  t.true((await runProbeOnce({ exec: { command: ['true'] } }, ctx)).ok);
  t.false((await runProbeOnce({ exec: { command: ['false'] } }, ctx)).ok);
  const slow = await runProbeOnce({ exec: { command: ['sleep', '5'] }, timeoutSeconds: 0.2 }, ctx);
  t.false(slow.ok);
  t.regex(slow.message ?? '', /timed out/);
});

test('the runner reports ready once the server answers, then not ready when it fails', async (t) => {
  let status = 503;
  const port = await server(t, () => status);
  const verdicts: boolean[] = [];
  const runner = new ProbeRunner(
    { http: { port }, periodSeconds: 0.02, failureThreshold: 1, successThreshold: 1 },
    { ports: {}, env: {} },
    (healthy) => verdicts.push(healthy),
  );
  t.teardown(() => runner.stop());
  runner.start();
  await waitFor(() => verdicts.length === 1);
  status = 200;
  await waitFor(() => verdicts.length === 2);
  status = 500;
  await waitFor(() => verdicts.length === 3);
  t.deepEqual(verdicts, [false, true, false]);
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * An HTTP server on $PORT that listens only once the file named by its argument exists (the test
 * creates it), so the replica is first running but not ready, for as long as the test needs. It
 * prints a line `tcp` for each connection closed without a request: a tcp probe's.
 */
const lateServer = [
  "const fs = require('node:fs');",
  "const http = require('node:http');",
  'const asked = new WeakSet();',
  'const server = http.createServer((q, s) => { asked.add(q.socket); s.end("ok"); });',
  "server.on('connection', (c) => c.on('close', () => { if (!asked.has(c)) console.log('tcp'); }));",
  'const go = process.argv[1];',
  'const listen = () => fs.existsSync(go) ? server.listen(Number(process.env.PORT), "127.0.0.1") : setTimeout(listen, 10);',
  'listen();',
].join('\n');

test('a readiness probe flips the replica ready once the server answers', async (t) => {
  const { rt, root } = await harness(t);
  const go = `${await workloadDir(root)}/listen`;
  const spec = replica([
    {
      command: [process.execPath, '-e', lateServer, go],
      ports: [{ name: 'http', protocol: 'http' }],
      readinessProbe: { http: { port: 'http', path: '/' }, periodSeconds: 0.05, failureThreshold: 1 },
    },
  ]);
  const first = await rt.run(spec);
  t.false(first.ready, 'not ready before the probe passed');
  t.is(first.phase, 'Running');
  const port = first.ports.find((p) => p.name === 'http')?.port;
  t.true(typeof port === 'number' && port > 0, 'a port was allocated');
  const ready = nextEvent(rt, (e) => e.type === 'ready' && e.replica === spec.id);
  writeFileSync(go, '');
  await ready;
  t.true(rt.status(spec.id).ready);
  t.true(rt.status(spec.id).processes[0]?.ready);
});

test('a failing liveness probe restarts the process as if it had died (LivenessProbeFailed)', async (t) => {
  const { rt } = await harness(t);
  const spec = replica([
    {
      restart: 'transient',
      ports: [{ name: 'nothing' }],
      livenessProbe: { tcp: { port: 'nothing' }, periodSeconds: 0.05, failureThreshold: 2 },
    },
  ]);
  const first = await rt.run(spec);
  const restarting = await nextEvent<'restarting'>(
    rt,
    (e) => e.type === 'restarting' && e.replica === spec.id,
  );
  t.is(restarting.cause, 'LivenessProbeFailed');
  await nextEvent(rt, (e) => e.type === 'started' && e.replica === spec.id);
  const p = rt.status(spec.id).processes[0];
  t.not(p?.pid, first.processes[0]?.pid);
  t.regex(p?.lastExit?.message ?? '', /LivenessProbeFailed/);
  // The new run's probe keeps failing too, so more restarts may follow by now.
  t.true((p?.restarts ?? 0) >= 1);
});

test('with its own network namespace, http and tcp probes reach the replica inside it, not the host', async (t) => {
  const h = await harness(t);
  const { rt } = h;
  const go = `${await workloadDir(h.root)}/listen`;
  const spec = replica(
    [
      {
        command: [process.execPath, '-e', lateServer, go],
        ports: [{ name: 'http', protocol: 'http' }, { name: 'unused' }],
        readinessProbe: { http: { port: 'http', path: '/' }, periodSeconds: 0.05, failureThreshold: 1 },
        livenessProbe: {
          tcp: { port: 'http' },
          initialDelaySeconds: 1,
          periodSeconds: 0.05,
          failureThreshold: 1,
        },
      },
    ],
    { isolation: { namespaces: ['pid', 'mount', 'uts', 'ipc', 'net'] } },
  );
  const first = await rt.run(spec);
  t.false(first.ready);
  const ready = nextEvent(rt, (e) => e.type === 'ready' && e.replica === spec.id);
  writeFileSync(go, '');
  await ready;
  const port = first.ports.find((p) => p.name === 'http')?.port as number;
  // The same port on the host's loopback has nobody listening: the probe went inside.
  const fromHost = await new Promise<string>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
  t.is(fromHost, 'ECONNREFUSED');
  // The tcp liveness probe (inside too) keeps passing: no restart over ten of its attempts, as
  // the server inside counted them (each failure would restart it: failureThreshold 1).
  await eventually('ten tcp liveness probes answered inside', async () => {
    const probes = (await readLog(h, spec.id, 'p0')).split('\n').filter((l) => l === 'tcp').length;
    return probes >= 10;
  });
  t.is(rt.status(spec.id).processes[0]?.restarts, 0);
  t.is(rt.status(spec.id).processes[0]?.pid, first.processes[0]?.pid);

  // Inside, the other port has nobody listening: probes there fail with the kernel's reason.
  const pid = first.processes[0]?.pid as number;
  const pidfd = pidfdOpen(pid);
  t.teardown(() => closeFd(pidfd));
  const connect = async (host: string, p: number, timeoutMs: number) =>
    new net.Socket({ fd: await netnsConnect(pidfd, pid, { host, port: p, timeoutMs }) });
  const ctx = { ports: Object.fromEntries(first.ports.map((p) => [p.name, p.port])), env: {}, connect };
  t.true((await runProbeOnce({ http: { port: 'http' } }, ctx)).ok);
  const refused = await runProbeOnce({ tcp: { port: 'unused' } }, ctx);
  t.false(refused.ok);
  t.regex(refused.message ?? '', /ECONNREFUSED/);
  const httpRefused = await runProbeOnce({ http: { port: 'unused' } }, ctx);
  t.false(httpRefused.ok);
  t.regex(httpRefused.message ?? '', /ECONNREFUSED/);
});

test('exec probes run inside the replica: its hostname, its /proc, its network, its cgroup', async (t) => {
  const { rt, root } = await harness(t);
  const go = `${await workloadDir(root)}/listen`;
  // Ready only if the probe sees the replica's hostname, the replica's PID 1 (orrery-init) and
  // reaches the server on the replica's own loopback, from inside the replica's cgroup.
  const check = [
    'test "$(hostname)" = "$1"',
    'grep -qx orrery-init /proc/1/comm',
    `"$2" -e "require('net').connect(Number(process.env.PORT), '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))"`,
    'grep -q "$3" /proc/self/cgroup',
    // /proc/self resolves in the replica's /proc only for a process of its pid namespace. (The
    // probe runs as the replica's host uid outside its user namespace, so it may not read
    // /proc/1/ns of orrery-init, whose capabilities inside that namespace it lacks.)
    'test "$(readlink /proc/self)" -gt 1',
  ].join(' && ');
  const spec = replica(
    [
      {
        command: [process.execPath, '-e', lateServer, go],
        ports: [{ name: 'http' }],
        readinessProbe: {
          exec: { command: ['/bin/sh', '-c', check, 'probe'] },
          periodSeconds: 0.1,
          timeoutSeconds: 5,
          failureThreshold: 1,
        },
      },
    ],
    { isolation: { namespaces: ['pid', 'mount', 'uts', 'ipc', 'net'] } },
  );
  spec.processes[0]?.readinessProbe?.exec?.command.push(spec.name, process.execPath, spec.id);
  const first = await rt.run(spec);
  t.false(first.ready);
  const ready = nextEvent(rt, (e) => e.type === 'ready' && e.replica === spec.id);
  writeFileSync(go, '');
  await ready;
  t.true(rt.status(spec.id).ready);

  // The same check from the host fails: another hostname, another PID 1, nobody on that port.
  const fromHost = await runProbeOnce(
    { exec: { command: ['/bin/sh', '-c', check, 'probe', spec.name, process.execPath, spec.id] } },
    { ports: {}, env: { PATH: '/usr/bin:/bin', PORT: String(first.ports[0]?.port) } },
  );
  t.false(fromHost.ok);
});

test('an exec probe that outlives its timeout fails and leaves nothing running in the replica', async (t) => {
  const { rt, root } = await harness(t);
  const marker = `${30 + Math.random()}`;
  const flag = `${await workloadDir(root)}/hang`;
  const spec = replica(
    [
      {
        readinessProbe: {
          // Passes until the flag file exists, then hangs (in the replica's pid namespace).
          exec: { command: ['/bin/sh', '-c', `if [ -e ${flag} ]; then sleep ${marker}; fi`] },
          periodSeconds: 0.1,
          timeoutSeconds: 0.3,
          failureThreshold: 1,
        },
      },
    ],
    { isolation: { namespaces: ['pid', 'mount', 'uts', 'ipc'] } },
  );
  const ready = nextEvent(rt, (e) => e.type === 'ready' && e.replica === spec.id);
  await rt.run(spec);
  await ready;
  writeFileSync(flag, '');
  const event = await nextEvent(rt, (e) => e.type === 'notReady' && e.replica === spec.id);
  t.regex((event as { message?: string }).message ?? '', /timed out after 300 ms/);
  t.false(rt.status(spec.id).ready);
  /** The probe's processes alive now (a zombie's cmdline is empty): its shell and its sleep. */
  const running = () =>
    readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .flatMap((d) => {
        try {
          const cmdline = readFileSync(`/proc/${d}/cmdline`, 'utf8');
          return cmdline.includes(marker) ? [{ pid: Number(d), sleep: cmdline.startsWith('sleep\0') }] : [];
        } catch {
          return [];
        }
      });
  // Every attempt now hangs until its timeout kills it (one every 0.1 s, each killed at 0.3 s):
  // watched until three attempts' sleeps have come and gone, never more than one attempt at once.
  const sleeps = new Set<number>();
  let most = 0;
  await eventually('three timed-out attempts killed', () => {
    const now = running();
    most = Math.max(most, now.length);
    for (const p of now) if (p.sleep) sleeps.add(p.pid);
    return [...sleeps].filter((pid) => !now.some((p) => p.pid === pid)).length >= 3;
  });
  t.true(most <= 2, `probe commands running at once: ${most}`);
});
