import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import { kubeConfigFromString, loadKubeConfig } from '../../kube/config.ts';
import { credentialsFor } from '../../kube/credentials.ts';
import { KubeConfigError } from '../../kube/kubeconfig.ts';

const repo = join(import.meta.dirname, '..', '..');

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'kubeconfig-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A kubeconfig whose cluster c points at `server`, with contexts x (current) and y. */
const kubeconfigFor = (server: string) => `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: ${server}, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}, {name: y, context: {cluster: c, user: u}}]
current-context: x
`;

/** A service account mount as the kubelet makes it. */
function serviceAccount(dir: string, token: string): string {
  const sa = join(dir, 'serviceaccount');
  mkdirSync(sa);
  writeFileSync(join(sa, 'token'), token);
  writeFileSync(join(sa, 'ca.crt'), 'CA PEM');
  writeFileSync(join(sa, 'namespace'), 'team-a');
  return sa;
}

test('precedence: --kubeconfig, then KUBECONFIG, then in-cluster, then ~/.kube/config; --context picks another context', (t) => {
  const dir = tempDir(t);
  const write = (name: string, port: number) => {
    writeFileSync(join(dir, name), kubeconfigFor(`https://127.0.0.1:${port}`));
    return join(dir, name);
  };
  const explicit = write('explicit', 1111);
  const fromEnv = write('env', 2222);
  mkdirSync(join(dir, 'home', '.kube'), { recursive: true });
  writeFileSync(join(dir, 'home', '.kube', 'config'), kubeconfigFor('https://127.0.0.1:4444'));
  const serviceAccountDir = serviceAccount(dir, 'sa-token');
  const inCluster = { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '443' };
  const home = { HOME: join(dir, 'home') };
  const server = (opts: Parameters<typeof loadKubeConfig>[0]) =>
    loadKubeConfig({ serviceAccountDir, ...opts }).cluster.server;

  const all = { ...home, ...inCluster, KUBECONFIG: `${join(dir, 'missing')}:${fromEnv}` };
  t.is(server({ kubeconfig: explicit, env: all }), 'https://127.0.0.1:1111');
  t.is(server({ env: all }), 'https://127.0.0.1:2222', 'the first existing KUBECONFIG file');
  t.is(server({ env: { ...home, ...inCluster } }), 'https://10.0.0.1:443');
  t.is(server({ env: home }), 'https://127.0.0.1:4444');

  const y = loadKubeConfig({ kubeconfig: explicit, context: 'y', env: all });
  t.is(y.currentContext, 'y');
  t.is(y.context.name, 'y');
  t.is(loadKubeConfig({ kubeconfig: explicit, env: all }).currentContext, 'x');
});

test('a KUBECONFIG list is merged the way kubectl merges it: first definition wins', (t) => {
  const dir = tempDir(t);
  const first = join(dir, 'first');
  const second = join(dir, 'second');
  writeFileSync(first, kubeconfigFor('https://127.0.0.1:1111'));
  writeFileSync(
    second,
    kubeconfigFor('https://127.0.0.1:2222')
      .replace('contexts: [', 'contexts: [{name: z, context: {cluster: c, user: u}}, ')
      .replace('current-context: x', 'current-context: z'),
  );
  const kc = loadKubeConfig({ env: { KUBECONFIG: `${first}::${second}:${first}` } });
  t.is(kc.currentContext, 'x', 'current-context of the first file that sets one');
  t.is(kc.cluster.server, 'https://127.0.0.1:1111', 'cluster c from the first file');
  t.deepEqual([...kc.contexts.keys()].sort(), ['x', 'y', 'z']);
  t.deepEqual(kc.sources, [first, second]);

  // A file without current-context leaves it to the next one.
  writeFileSync(first, kubeconfigFor('https://127.0.0.1:1111').replace('current-context: x', ''));
  const merged = loadKubeConfig({ env: { KUBECONFIG: `${first}:${second}` } });
  t.is(merged.currentContext, 'z');
  t.is(merged.cluster.server, 'https://127.0.0.1:1111', 'z names cluster c, and c is the first file’s');
});

// Serial: it changes the working directory.
test.serial(
  'relative paths resolve against the directory of the kubeconfig that names them, as kubectl does',
  async (t) => {
    const dir = tempDir(t);
    mkdirSync(join(dir, 'conf', 'pki'), { recursive: true });
    writeFileSync(join(dir, 'conf', 'pki', 'ca.crt'), 'CA PEM');
    writeFileSync(join(dir, 'conf', 'pki', 'admin.crt'), 'CERT PEM');
    writeFileSync(join(dir, 'conf', 'pki', 'admin.key'), 'KEY PEM');
    writeFileSync(join(dir, 'conf', 'token'), 'file-token\n');
    writeFileSync(
      join(dir, 'conf', 'config'),
      `clusters:
- name: c
  cluster: {server: https://k8s.example:6443, certificate-authority: pki/ca.crt, tls-server-name: api.internal}
users:
- name: cert
  user: {client-certificate: pki/admin.crt, client-key: ./pki/admin.key}
- name: file
  user: {tokenFile: token}
- name: plugin
  user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: bin/plugin, args: [get-token]}}
- name: on-path
  user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: aws}}
contexts:
- {name: cert, context: {cluster: c, user: cert}}
- {name: file, context: {cluster: c, user: file}}
- {name: plugin, context: {cluster: c, user: plugin}}
- {name: on-path, context: {cluster: c, user: on-path}}
current-context: cert
`,
    );
    // Loaded from another working directory, through a relative path to the file.
    const cwd = process.cwd();
    process.chdir(dir);
    t.teardown(() => process.chdir(cwd));
    const kc = loadKubeConfig({ kubeconfig: 'conf/config' });
    t.is(kc.cluster.certificateAuthority, join(dir, 'conf', 'pki', 'ca.crt'));
    t.is(kc.user.clientCertificate, join(dir, 'conf', 'pki', 'admin.crt'));
    t.is(kc.user.clientKey, join(dir, 'conf', 'pki', 'admin.key'));
    t.is(
      loadKubeConfig({ kubeconfig: 'conf/config', context: 'file' }).user.tokenFile,
      join(dir, 'conf', 'token'),
    );
    const plugin = loadKubeConfig({ kubeconfig: 'conf/config', context: 'plugin' }).user.exec;
    t.is(plugin?.command, join(dir, 'conf', 'bin', 'plugin'));
    t.deepEqual(plugin?.args, ['get-token']);
    t.is(
      loadKubeConfig({ kubeconfig: 'conf/config', context: 'on-path' }).user.exec?.command,
      'aws',
      'a bare command name is looked up in PATH',
    );

    const creds = await credentialsFor(kc);
    t.deepEqual(creds.tls, {
      ca: Buffer.from('CA PEM'),
      cert: Buffer.from('CERT PEM'),
      key: Buffer.from('KEY PEM'),
      servername: 'api.internal',
    });
    t.deepEqual(await creds.headers(), {});
    const fromFile = await credentialsFor(loadKubeConfig({ kubeconfig: 'conf/config', context: 'file' }));
    t.deepEqual(await fromFile.headers(), { Authorization: 'Bearer file-token' });
  },
);

test('in-cluster: the service host and port, the mounted CA and namespace, and a token file re-read when it rotates', async (t) => {
  const dir = tempDir(t);
  const serviceAccountDir = serviceAccount(dir, 'first\n');
  const env = { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' };
  const kc = loadKubeConfig({ env, serviceAccountDir });
  t.is(kc.cluster.server, 'https://[fd00::1]:6443');
  t.is(kc.context.namespace, 'team-a');
  const creds = await credentialsFor(kc, { tokenFileRefreshMs: 0 });
  t.deepEqual(creds.tls.ca, Buffer.from('CA PEM'));
  t.deepEqual(await creds.headers(), { Authorization: 'Bearer first' });
  writeFileSync(join(serviceAccountDir, 'token'), 'second');
  t.deepEqual(await creds.headers(), { Authorization: 'Bearer second' }, 'the rotated token');
  rmSync(join(serviceAccountDir, 'token'));
  t.deepEqual(
    await creds.headers(),
    { Authorization: 'Bearer second' },
    'a failed read keeps the last token',
  );

  const cached = await credentialsFor(
    loadKubeConfig({ env, serviceAccountDir: serviceAccount(tempDir(t), 'a') }),
  );
  t.deepEqual(await cached.headers(), { Authorization: 'Bearer a' });

  t.throws(
    () =>
      loadKubeConfig({
        env: { KUBERNETES_SERVICE_HOST: '10.0.0.1' },
        serviceAccountDir: serviceAccount(tempDir(t), 'b'),
      }),
    {
      message: /KUBERNETES_SERVICE_PORT is not/,
    },
  );
});

test('tokens, basic auth and impersonation become headers; certificates given as data become TLS options', async (t) => {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const text = `
clusters: [{name: c, cluster: {server: "https://h:6443/prefix/", certificate-authority-data: ${b64('CA')}}}]
users:
- {name: basic, user: {username: admin, password: "s3cret", as: jane, as-groups: [dev, ops]}}
- {name: cert, user: {client-certificate-data: ${b64('CERT')}, client-key-data: ${b64('KEY')}, token: tok}}
contexts: [{name: basic, context: {cluster: c, user: basic}}, {name: cert, context: {cluster: c, user: cert}}]
current-context: basic
`;
  const basic = await credentialsFor(kubeConfigFromString(text));
  t.deepEqual(await basic.headers(), {
    Authorization: `Basic ${b64('admin:s3cret')}`,
    'Impersonate-User': 'jane',
    'Impersonate-Group': ['dev', 'ops'],
  });
  t.deepEqual(basic.tls, { ca: Buffer.from('CA'), cert: undefined, key: undefined });
  const cert = await credentialsFor(kubeConfigFromString(text, { context: 'cert' }));
  t.deepEqual(cert.tls, { ca: Buffer.from('CA'), cert: Buffer.from('CERT'), key: Buffer.from('KEY') });
  t.deepEqual(await cert.headers(), { Authorization: 'Bearer tok' });
});

test('errors name the file and the field', (t) => {
  const dir = tempDir(t);
  const load = (text: string, context?: string) => {
    const file = join(dir, 'config');
    writeFileSync(file, text);
    return () => loadKubeConfig({ kubeconfig: file, context });
  };
  const file = join(dir, 'config');
  const good = kubeconfigFor('https://127.0.0.1:1111');

  t.throws(() => loadKubeConfig({ kubeconfig: join(dir, 'nope') }), {
    instanceOf: KubeConfigError,
    message: `kubeconfig file ${join(dir, 'nope')} does not exist`,
  });
  t.throws(() => loadKubeConfig({ kubeconfig: '' }), {
    instanceOf: TypeError,
    message: /non-empty file path, got ""/,
  });
  t.throws(() => loadKubeConfig({ env: { KUBECONFIG: '/nope/a:/nope/b' } }), {
    message: /names no existing file/,
  });
  t.throws(() => loadKubeConfig({ env: { HOME: dir } }), { message: /no Kubernetes cluster configured/ });

  t.throws(load(good.replace('current-context: x', '')), {
    message: `kubeconfig ${file}: current-context is not set; set it (kubectl config use-context) or pass --context`,
  });
  t.throws(load(good.replace('current-context: x', 'current-context: gone')), {
    message: `kubeconfig ${file}: current-context "gone" is not defined (contexts: x, y)`,
  });
  t.throws(load(good, 'prod'), {
    message: `kubeconfig ${file}: context "prod" is not defined (contexts: x, y)`,
  });
  t.throws(load(good.replace('{token: t}', '{}')), {
    message: new RegExp(`^kubeconfig ${file}: users\\["u"\\]\\.user: no credentials; set token, tokenFile,`),
  });
  t.throws(load(good.replace('{token: t}', '{token: t, username: a, password: b}')), {
    message: `kubeconfig ${file}: users["u"].user: more than one way to authenticate (token, username/password); keep one`,
  });
  t.throws(load(good.replace('{token: t}', '{token-file: /t}')), {
    message: `kubeconfig ${file}: users["u"].user.token-file: the kubeconfig field is spelled tokenFile`,
  });
  t.throws(load(good.replace('{token: t}', '{token: 42}')), {
    message: `kubeconfig ${file}: users["u"].user.token: expected a string, got number 42`,
  });
  t.throws(load(good.replace('{token: t}', '{client-certificate: a.crt, token: t}')), {
    message: `kubeconfig ${file}: users["u"].user.client-key: client-certificate is set but no client-key or client-key-data`,
  });
  t.throws(load(good.replace('insecure-skip-tls-verify: true', 'proxy-url: "http://proxy:3128"')), {
    message: `kubeconfig ${file}: clusters["c"].cluster.proxy-url: not supported; Orrery connects to the API server directly`,
  });
  t.throws(load(good.replace('https://127.0.0.1:1111', 'localhost:6443')), {
    message: `kubeconfig ${file}: clusters["c"].cluster.server: expected an https:// or http:// URL, got "localhost:6443"`,
  });
  t.throws(load(good.replace('{cluster: c, user: u}}, {name: y', '{cluster: d, user: u}}, {name: y')), {
    message: `kubeconfig ${file}: contexts["x"].context.cluster: cluster "d" is not defined in ${file}`,
  });
  t.throws(load(good.replace('users: [{name: u,', 'users: [{name: v,')), {
    message: `kubeconfig ${file}: contexts["x"].context.user: user "u" is not defined in ${file}`,
  });
  t.throws(load(`${good}users: []\n`), { message: new RegExp(`^kubeconfig ${file}: not valid YAML: `) });
  t.throws(load('clusters: {c: {}}'), {
    message: `kubeconfig ${file}: clusters: expected a list, got a mapping`,
  });
  t.throws(load('clusters: [{cluster: {}}]'), {
    message: `kubeconfig ${file}: clusters[0].name: required, not set`,
  });
  // An entry nobody selects may use what Orrery does not support.
  t.notThrows(
    load(
      `${good.replace('clusters: [', 'clusters: [{name: p, cluster: {server: https://p, proxy-url: http://q}}, ')}`,
    ),
  );
});

const execCredential = (token: string, expired: boolean) =>
  JSON.stringify({
    apiVersion: 'client.authentication.k8s.io/v1',
    kind: 'ExecCredential',
    status: { token, ...(expired ? { expirationTimestamp: '2000-01-01T00:00:00Z' } : {}) },
  });

/** An exec credential plugin that counts its runs; its credentials expire at once when `expired`. */
function writeExecKubeconfig(dir: string, expired: boolean): string {
  mkdirSync(join(dir, 'bin'));
  const plugin = join(dir, 'bin', 'plugin');
  writeFileSync(
    plugin,
    `#!/bin/sh
n=$(( $(cat "$COUNT_FILE" 2>/dev/null || echo 0) + 1 ))
echo $n > "$COUNT_FILE"
printf '%s' '${execCredential('exec-TOKEN', expired)}' | sed "s/TOKEN/$n-$1/"
`,
  );
  chmodSync(plugin, 0o755);
  const file = join(dir, 'config');
  writeFileSync(
    file,
    `clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users:
- name: u
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ./bin/plugin
      args: [arg]
      env: [{name: COUNT_FILE, value: ${join(dir, 'count')}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
  );
  return file;
}

test('an exec user: client-node is imported only then, and the plugin runs for real for its token', async (t) => {
  const dir = tempDir(t);
  const execConfig = writeExecKubeconfig(dir, false);
  const tokenConfig = join(dir, 'token-config');
  writeFileSync(tokenConfig, kubeconfigFor('https://127.0.0.1:1'));
  // A fresh process that counts the modules it loads from client-node at each step.
  const script = `
import { registerHooks } from 'node:module';
let loaded = 0;
registerHooks({ load(url, context, next) { if (url.includes('/@kubernetes/client-node/')) loaded++; return next(url, context); } });
const kube = await import('./kube/index.ts');
await import('./operator/operator.ts');
await import('./node-runtime/agent/index.ts');
await import('./crds/install.ts');
const api = await kube.KubeApi.fromKubeConfig(kube.loadKubeConfig({ kubeconfig: ${JSON.stringify(tokenConfig)} }));
api.close();
const before = loaded;
const { credentialsFor } = await import('./kube/credentials.ts');
const creds = await credentialsFor(kube.loadKubeConfig({ kubeconfig: ${JSON.stringify(execConfig)} }));
console.log(JSON.stringify({ before, after: loaded, headers: await creds.headers() }));
`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    cwd: repo,
  });
  const out = JSON.parse(stdout) as { before: number; after: number; headers: Record<string, string> };
  t.is(
    out.before,
    0,
    'kube/, the operator, the agent and the CRD installer with a token user: no client-node',
  );
  t.true(out.after > 100, `client-node loaded for the exec user (${out.after} modules)`);
  t.deepEqual(out.headers, { Authorization: 'Bearer exec-1-arg' });
});

test('an exec credential that expired is asked for again', async (t) => {
  const dir = tempDir(t);
  const creds = await credentialsFor(loadKubeConfig({ kubeconfig: writeExecKubeconfig(dir, true) }), {
    pluginRefreshMs: 0,
  });
  // Run 1 was credentialsFor's own.
  t.deepEqual(await creds.headers(), { Authorization: 'Bearer exec-2-arg' });
  const [a, b] = await Promise.all([creds.headers(), creds.headers()]);
  t.deepEqual(a, { Authorization: 'Bearer exec-3-arg' });
  t.deepEqual(b, a, 'concurrent requests share one plugin run');
  t.deepEqual(await creds.headers(), { Authorization: 'Bearer exec-4-arg' });
});
