// The runtime's HTTP API over TLS (issue 15, item 6): a certificate made at each start, published in
// the Host's status, and trusted by clients for that host alone. Real agent, real sockets, the real
// API server; `orrery logs` and `orrery top` as users run them.
import { X509Certificate } from 'node:crypto';
import test from 'ava';
import { loadKubeConfig } from '../../kube/index.ts';
import { startProxy } from '../../mesh/proxy.ts';
import { runtimeGet } from '../../platform/runtime-api.ts';
import { selfSignedCertificate } from '../../platform/x509.ts';
import {
  agentDirs,
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

const orreryCli = (args: string[]) => runOrrery(args);

test('over TLS: the Host publishes the certificate, clients trust it alone, logs and top work through it', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs, { tls: true });
  t.regex(agent.apiEndpoint, /^https:\/\/127\.0\.0\.1:\d+$/);

  const host = await waitFor('the Host with its certificate', async () => {
    const h = await k.hosts.get(dirs.hostName);
    return h.status?.apiEndpoint === agent.apiEndpoint && h.status.apiCertificate ? h : undefined;
  });
  const pem = host.status?.apiCertificate as string;
  const cert = new X509Certificate(pem);
  t.true(cert.verify(cert.publicKey), 'self-signed');
  t.is(cert.checkIP('127.0.0.1'), '127.0.0.1', 'names the address it is reached at');
  t.is(cert.checkHost(dirs.hostName), dirs.hostName, "and the host's name");

  // A client that trusts the usual CAs refuses it: nothing is sent before the pin is checked.
  const plain = await fetch(`${agent.apiEndpoint}/healthz`).then(
    () => 'answered',
    (err: Error) => String((err.cause as NodeJS.ErrnoException | undefined)?.code ?? err.message),
  );
  t.regex(plain, /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);
  // Plain HTTP to the same port is not served.
  const http = await fetch(agent.apiEndpoint.replace('https:', 'http:')).then(
    () => 'answered',
    () => 'refused',
  );
  t.is(http, 'refused');

  const target = { name: dirs.hostName, endpoint: agent.apiEndpoint, certificate: pem };
  t.is((await runtimeGet(target, agent.token, '/healthz')).status, 200);
  await t.throwsAsync(() => runtimeGet(target, 'x'.repeat(32), '/v1/replicas'), { message: /answered 401/ });
  // Another certificate (one an impostor at that address would have) is refused.
  const other = selfSignedCertificate({ commonName: 'impostor', altNames: ['127.0.0.1'] });
  await t.throwsAsync(() => runtimeGet({ ...target, certificate: other.cert }, agent.token, '/healthz'), {
    message: new RegExp(`host ${dirs.hostName}: .*(SELF_SIGNED|UNABLE_TO_VERIFY|certificate)`, 'i'),
  });
  // An https endpoint without a certificate to trust: nothing is sent.
  await t.throwsAsync(() => runtimeGet({ ...target, certificate: undefined }, agent.token, '/healthz'), {
    message: `host ${dirs.hostName}: its runtime serves https, and its Host publishes no status.apiCertificate to trust`,
  });

  // A replica that prints, read by `orrery logs` (Host -> endpoint and certificate) and counted by `orrery top`.
  await k.replicas.create(
    replicaObject(ns, 'talker-0', dirs.hostName, [
      { name: 'talker', command: ['sh', '-c', 'for i in 0 1 2; do echo line $i; done; exec sleep 600'] },
    ]),
  );
  await waitFor('three lines', async () => {
    const r = await runtimeGet(target, agent.token, `/v1/replicas/${ns}/talker-0/logs`).catch(
      () => undefined,
    );
    return (await r?.text())?.split('\n').filter(Boolean).length === 3 ? true : undefined;
  });
  const logs = await orreryCli([
    'logs',
    'talker-0',
    '-n',
    ns,
    '--tail',
    '2',
    '--kubeconfig',
    k.kubeconfig,
    '--state-dir',
    dirs.stateDir,
  ]);
  t.is(logs.stderr, '');
  t.is(logs.stdout, 'line 1\nline 2\n');
  const top = await orreryCli([
    'top',
    'replicas',
    '-n',
    ns,
    '--kubeconfig',
    k.kubeconfig,
    '--token',
    agent.token,
  ]);
  t.is(top.code, 0, top.stderr);
  t.regex(top.stdout, /talker-0/);
});

test("the mesh proxy's stream of an https runtime: it trusts the Host's certificate, and no other", async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs, { tls: true });
  await waitFor('the Host with its certificate', async () =>
    (await k.hosts.get(dirs.hostName)).status?.apiCertificate ? true : undefined,
  );
  const start = (certificate?: () => Promise<string | undefined>) =>
    startProxy({
      kubeConfig: loadKubeConfig({ kubeconfig: k.kubeconfig }),
      namespace: ns,
      name: `tls-${dirs.hostName}-${certificate ? 'pinned-elsewhere' : 'host'}`,
      localFeed: {
        runtimes: [agent.apiEndpoint],
        token: () => agent.token,
        ...(certificate ? { certificate } : {}),
      },
    });
  // The proxy's own lookup: the Host whose apiEndpoint this is.
  const proxy = await start();
  t.teardown(() => proxy.stop({ drainTimeoutMs: 0 }));
  const stream = await waitFor('the stream open', async () => {
    const s = proxy.localFeed?.streams()[0];
    return s?.connected ? s : undefined;
  });
  t.is(stream.host, dirs.hostName);

  // A certificate that is not the runtime's: the handshake fails and nothing is sent.
  const impostor = selfSignedCertificate({ commonName: 'impostor', altNames: ['127.0.0.1'] }).cert;
  const wrong = await start(async () => impostor);
  t.teardown(() => wrong.stop({ drainTimeoutMs: 0 }));
  const refused = await waitFor('a failed connect', async () => {
    const s = wrong.localFeed?.streams()[0];
    return s?.lastError ? s : undefined;
  });
  t.false(refused.connected);
  t.regex(refused.lastError ?? '', /self[- ]signed|certificate/i);
});
