// The local control plane keeps its state to its owner: etcd listens on a unix socket in the
// 0700 data dir and on no TCP port (a user who could once POST /v3/kv/range on 127.0.0.1 now
// finds nothing to connect to, and the socket refuses them), its JSON gateway is off, the data
// and pki dirs are 0700 even when they existed looser, and its log is not opened through a
// symlink planted in its place.
import { spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { type ControlPlane, startControlPlane } from '../../controlplane/controlplane.ts';

function tempDir(t: ExecutionContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The TCP ports a process listens on: its socket inodes matched against /proc/net/tcp{,6}. */
function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m?.[1]) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of [`/proc/${pid}/net/tcp`, `/proc/${pid}/net/tcp6`]) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // f[1] local address:port (hex), f[3] state (0A = LISTEN), f[9] inode
      if (f[3] === '0A' && f[9] && inodes.has(f[9]))
        ports.push(Number.parseInt(f[1]?.split(':')[1] ?? '', 16));
    }
  }
  return ports.sort();
}

/** An HTTP request over the unix socket, as the given user (a child process does the connect). */
function socketRequest(
  socket: string,
  method: string,
  path: string,
  uid?: number,
): Promise<{ status?: number; body?: string; error?: string }> {
  const script = `
    const [socket, method, path] = process.argv.slice(1);
    const req = require('node:http').request({ socketPath: socket, method, path }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body })));
    });
    req.on('error', (err) => console.log(JSON.stringify({ error: err.code })));
    req.end(method === 'POST' ? '{"key":"AA==","range_end":"AA=="}' : undefined);
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, socket, method, path], {
      stdio: ['ignore', 'pipe', 'inherit'],
      ...(uid === undefined ? {} : { uid, gid: uid }),
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.once('error', reject);
    child.once('exit', () => resolve(JSON.parse(out || '{"error":"no answer"}')));
  });
}

/** Plain HTTP GET /version on a loopback port: what an etcd client URL used to answer. */
function tcpVersion(port: number): Promise<string> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/version', timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

let plane: ControlPlane | undefined;
let dataDir = '';

test.before(async (t) => {
  dataDir = mkdtempSync(join(tmpdir(), 'orrery-cp-security-'));
  // Made looser than the control plane wants them, as an older version or a user may have.
  chmodSync(dataDir, 0o755);
  mkdirSync(join(dataDir, 'pki'), { mode: 0o755 });
  chmodSync(join(dataDir, 'pki'), 0o755);
  plane = await startControlPlane({ dataDir, log: (m) => t.log(m) });
});

test.after.always(async () => {
  await plane?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

test('etcd listens on no TCP port: the apiserver is the only listener of the control plane', async (t) => {
  if (!plane) return t.fail('no control plane');
  const apiserverPort = Number(new URL(plane.server).port);
  t.deepEqual(listeningPorts(plane.pid), [apiserverPort]);
  // The apiserver's port is TLS: plain HTTP gets no etcd answer there either.
  t.notRegex(await tcpVersion(apiserverPort), /etcdserver/);
});

test('the etcd socket is in the 0700 data dir and refuses another user', async (t) => {
  const socket = join(dataDir, 'etcd.sock');
  t.true(lstatSync(socket).isSocket());
  t.is(statSync(dataDir).mode & 0o777, 0o700);
  // Its owner reaches etcd there (it is etcd), without the JSON gateway.
  const version = await socketRequest(socket, 'GET', '/version');
  t.regex(version.body ?? '', /"etcdserver"/);
  t.is((await socketRequest(socket, 'POST', '/v3/kv/range')).status, 404, 'the JSON gateway is off');
  // Any other user: connect(2) needs search permission on the directory.
  t.deepEqual(await socketRequest(socket, 'GET', '/version', 65534), { error: 'EACCES' });
  t.deepEqual(await socketRequest(socket, 'POST', '/v3/kv/range', 65534), { error: 'EACCES' });
});

test('the data and pki dirs are 0700 and the log 0600, though they existed looser', (t) => {
  t.is(statSync(dataDir).mode & 0o777, 0o700);
  t.is(statSync(join(dataDir, 'pki')).mode & 0o777, 0o700);
  t.is(statSync(join(dataDir, 'controlplane.log')).mode & 0o777, 0o600);
  t.is(statSync(join(dataDir, 'pki', 'ca.key')).mode & 0o777, 0o600);
});

test('the log is not opened through a symlink in its place', async (t) => {
  const dir = tempDir(t, 'orrery-cp-symlink-');
  const target = join(dir, 'target');
  writeFileSync(target, 'precious\n');
  const cpDir = join(dir, 'cp');
  mkdirSync(cpDir, { mode: 0o700 });
  symlinkSync(target, join(cpDir, 'controlplane.log'));
  const err = await t.throwsAsync(startControlPlane({ dataDir: cpDir }));
  t.regex(err?.message ?? '', /ELOOP/);
  t.is(readFileSync(target, 'utf8'), 'precious\n', 'the symlink target is untouched');
  t.false(existsSync(join(cpDir, 'lock')), 'no control plane started');
});

test('a data dir too deep for a unix socket address is refused, saying so', async (t) => {
  const dir = tempDir(t, 'orrery-cp-deep-');
  const deep = join(dir, 'd'.repeat(100));
  const err = await t.throwsAsync(startControlPlane({ dataDir: deep }));
  t.regex(err?.message ?? '', /more than a unix socket address holds \(107\): use a shorter --data-dir/);
});
