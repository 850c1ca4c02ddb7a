// Entering a running process's namespaces (joinNamespacesOf: exec probes inside a replica) and
// connecting inside its network namespace (netnsConnect: http/tcp probes), with real processes.
import { readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import test from 'ava';
import {
  closeFd,
  netnsConnect,
  pidfdOpen,
  SpawnError,
  spawn,
  spawnAsync,
  watchExit,
} from '../../node-runtime/native/index.ts';
import { runNative, tempDir } from './fixtures/native-run.ts';

// Ignores connection errors: the readiness poll below drops its connections at once, and an
// unhandled ECONNRESET would end the server.
const SERVER =
  "require('net').createServer((s) => s.on('error', () => {}).end('hi')).listen(Number(process.env.PORT), '127.0.0.1')";

/** A target replica-like process: new pid, mount, uts, ipc and net namespaces, a server inside. */
async function target(t: import('ava').ExecutionContext, port: number) {
  const run = runNative(t, {
    file: process.execPath,
    argv: ['node', '-e', SERVER],
    env: [`PORT=${port}`],
    namespaces: ['pid', 'mount', 'uts', 'ipc', 'net'],
    hostname: 'inside',
  });
  // Up once something listens inside (polled through netnsConnect itself; 20 s against a hang).
  for (const deadline = Date.now() + 20_000; ; ) {
    try {
      const fd = await netnsConnect(run.child.pidfd, run.child.pid, {
        host: '127.0.0.1',
        port,
        timeoutMs: 500,
      });
      new net.Socket({ fd }).destroy();
      return run;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

test('joinNamespacesOf runs a command inside: hostname, pid namespace, network; its exit code comes back', async (t) => {
  const inside = await target(t, 18_181);
  const probe = runNative(t, {
    file: '/bin/sh',
    argv: [
      'sh',
      '-c',
      // In the target's pid namespace (not just its /proc), its hostname, and its loopback (the
      // server answers there; bash-less /dev/tcp, so through node).
      `hostname; readlink /proc/self/ns/pid; "$0" -e "require('net').connect(18181,'127.0.0.1').on('data',(d)=>{console.log(String(d));process.exit(3)})"`,
      process.execPath,
    ],
    env: ['PATH=/usr/bin:/bin'],
    joinNamespacesOf: {
      pidfd: inside.child.pidfd,
      pid: inside.child.pid,
      namespaces: ['pid', 'mount', 'uts', 'ipc', 'net'],
    },
  });
  t.deepEqual(await probe.exited, { code: 3, signal: null }, probe.log());
  const [hostname, pidns, greeting] = probe.log().trim().split('\n');
  t.is(hostname, 'inside');
  t.is(pidns, readlinkSync(`/proc/${inside.child.pid}/ns/pid`));
  t.is(greeting, 'hi');
});

test('spawnAsync with joinNamespacesOf keeps its own copy of the pidfd: the caller may close its own at once', async (t) => {
  const inside = await target(t, 18_185);
  const pidfd = pidfdOpen(inside.child.pid);
  const dir = tempDir(t);
  const pending = spawnAsync({
    file: '/bin/sh',
    argv: ['sh', '-c', 'hostname'],
    env: ['PATH=/usr/bin:/bin'],
    namespaces: [],
    logFile: join(dir, 'out'),
    joinNamespacesOf: { pidfd, pid: inside.child.pid, namespaces: ['uts', 'pid', 'mount'] },
  });
  closeFd(pidfd); // before the threadpool thread has run: its dup is what it uses
  const probe = await pending;
  const status = await new Promise((resolve) => watchExit(probe.pidfd, resolve));
  t.deepEqual(status, { code: 0, signal: null });
  t.is(readFileSync(join(dir, 'out'), 'utf8'), 'inside\n');
});

test('joinNamespacesOf: bad requests name the field; a target that is gone fails at setns', async (t) => {
  const base = { file: '/bin/true', argv: ['true'], env: [], logFile: '/dev/null' };
  const inside = await target(t, 18_182);
  const join = { pidfd: inside.child.pidfd, pid: inside.child.pid };
  t.throws(
    () => spawn({ ...base, namespaces: ['uts'], joinNamespacesOf: { ...join, namespaces: ['uts'] } }),
    {
      instanceOf: TypeError,
      message: /joinNamespacesOf.*namespaces must be \[\]/,
    },
  );
  t.throws(
    () => spawn({ ...base, namespaces: [], init: false, joinNamespacesOf: { ...join, namespaces: ['pid'] } }),
    {
      instanceOf: TypeError,
      message: /joinNamespacesOf with 'pid' needs init/,
    },
  );
  t.throws(
    () => spawn({ ...base, namespaces: [], joinNamespacesOf: { ...join, namespaces: ['time' as never] } }),
    {
      instanceOf: TypeError,
      message: /joinNamespacesOf.namespaces/,
    },
  );

  const gone = runNative(t, { file: '/bin/true', argv: ['true'] });
  await gone.exited; // reaped: the pid and its /proc/<pid>/ns are gone
  const err = t.throws(
    () =>
      spawn({
        ...base,
        namespaces: [],
        joinNamespacesOf: { pidfd: inside.child.pidfd, pid: gone.child.pid, namespaces: ['uts'] },
      }),
    { instanceOf: SpawnError },
  );
  t.is(err?.step, 'setns');
});

test('netnsConnect reaches a server only inside the namespace; refusals and bad hosts are clear', async (t) => {
  const inside = await target(t, 18_183);
  const { pidfd, pid } = inside.child;
  const fd = await netnsConnect(pidfd, pid, { host: '127.0.0.1', port: 18_183, timeoutMs: 1000 });
  const greeting = await new Promise<string>((resolve, reject) => {
    const s = new net.Socket({ fd });
    let data = '';
    s.on('data', (d) => (data += d));
    s.on('end', () => resolve(data));
    s.on('error', reject);
  });
  t.is(greeting, 'hi');
  const refused = await t.throwsAsync(
    netnsConnect(pidfd, pid, { host: '127.0.0.1', port: 18_184, timeoutMs: 1000 }),
    {
      instanceOf: SpawnError,
    },
  );
  t.is(refused?.code, 'ECONNREFUSED');
  t.is(refused?.step, 'connect');
  await t.throwsAsync(netnsConnect(pidfd, pid, { host: 'localhost', port: 18_183, timeoutMs: 1000 }), {
    instanceOf: TypeError,
    message: /host must be a numeric IP address/,
  });
  // The host's own loopback has no such server.
  const fromHost = await new Promise<string>((resolve) =>
    net
      .connect(18_183, '127.0.0.1')
      .once('connect', function (this: net.Socket) {
        this.destroy();
        resolve('connected');
      })
      .once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? '')),
  );
  t.is(fromHost, 'ECONNREFUSED');
});
