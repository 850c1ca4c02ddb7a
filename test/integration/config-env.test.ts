// Env from ConfigMaps and Secrets (issue 19, parts 1 and 6), end to end: the real operator (as
// deploy/'s orrery-operator account, so RBAC's escalation check and the admission policies are
// the real ones), real host runtimes with their node-bound credentials, real processes whose
// environment is read back from /proc. And who may read what: a host's account reads the objects
// its replicas reference and is refused the others by the API server itself.
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import test from 'ava';
import { stringify } from 'yaml';
import { hostCredentialsPaths, writeAccountCredentials } from '../../cli/up-identity.ts';
import { hostAccountName, SYSTEM_NAMESPACE } from '../../crds/labels.ts';
import type { Instance, Replica } from '../../crds/types.ts';
import {
  CONFIGMAPS,
  isForbidden,
  KubeApi,
  KubeConfig,
  loadKubeConfig,
  resourceClient,
  SECRETS,
} from '../../kube/index.ts';
import { kubectl } from '../helpers/cluster.ts';
import { type E2e, e2e, firstRunning, putConfigObject } from '../helpers/e2e.ts';
import { eventually } from '../helpers/wait.ts';

/** The operator as deploy/ runs it: its own account, not the test's admin; its kubeconfig. */
async function operatorAsItsAccount(env: E2e): Promise<string> {
  const root = dirname(env.hosts[0]?.stateDir as string);
  const credentials = await writeAccountCredentials(env.api, env.api.kubeConfig.cluster, root, 'operator');
  await env.startOperator({ kubeConfig: loadKubeConfig({ kubeconfig: credentials.kubeconfig }) });
  return credentials.kubeconfig;
}

function instance(name: string, process: Record<string, unknown>, slot?: number): Instance {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name },
    spec: {
      replicas: 1,
      template: {
        processes: [{ name: 'main', command: ['sleep', 'infinity'], ...process }],
        isolation: { namespaces: [] },
        terminationGracePeriodSeconds: 1,
        ...(slot === undefined ? {} : { hostSelector: { matchLabels: { 'orrery.dev/slot': String(slot) } } }),
      },
    },
  } as unknown as Instance;
}

/** The replica's process environment, from /proc (no pid namespace: the status pid is the process). */
function environOf(replica: Replica): Map<string, string> {
  const pid = replica.status?.processes?.[0]?.pid;
  if (!pid) throw new Error(`${replica.metadata.name} has no pid`);
  const pairs = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  return new Map(pairs.map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
}

const running = firstRunning;

test('env from a Secret and a ConfigMap, envFrom with a prefix: the process gets them, env winning', async (t) => {
  const env = await e2e(t, { hosts: 1, operator: 'none' });
  await operatorAsItsAccount(env);
  await putConfigObject(env, 'ConfigMap', 'app-config', {
    mode: 'fast',
    'log.level': 'debug',
    PORT_X: '1',
  });
  await putConfigObject(env, 'Secret', 'db', { password: 's3cr=t\nline2', user: 'app', '9lives': 'x' });
  await env.instances.create(
    instance('cfg', {
      envFrom: [
        { prefix: 'APP_', configMapRef: { name: 'app-config' } },
        { secretRef: { name: 'db' } },
        { configMapRef: { name: 'not-there', optional: true } },
      ],
      env: [
        { name: 'DB_PASSWORD', valueFrom: { secretKeyRef: { name: 'db', key: 'password' } } },
        { name: 'MODE', valueFrom: { configMapKeyRef: { name: 'app-config', key: 'mode' } } },
        // env overrides envFrom; an optional reference to a missing key leaves the variable unset.
        { name: 'user', value: 'literal' },
        { name: 'MAYBE', valueFrom: { secretKeyRef: { name: 'db', key: 'nope', optional: true } } },
      ],
    }),
    { namespace: env.ns },
  );
  const replica = await running(env, 'cfg');
  const vars = environOf(replica);
  t.is(vars.get('DB_PASSWORD'), 's3cr=t\nline2');
  t.is(vars.get('MODE'), 'fast');
  t.is(vars.get('APP_mode'), 'fast');
  t.is(vars.get('APP_log.level'), 'debug');
  t.is(vars.get('APP_PORT_X'), '1');
  t.is(vars.get('password'), 's3cr=t\nline2');
  t.is(vars.get('user'), 'literal');
  t.false(vars.has('MAYBE'));
  t.false(vars.has('9lives'), 'a key that is no variable name is skipped');
  t.is(vars.get('ORRERY_INSTANCE'), 'cfg');
  const resolved = replica.status?.conditions?.find((c) => c.type === 'ConfigResolved');
  t.is(resolved?.status, 'True');
  // The secret is in no Orrery object: the Replica carries only the reference.
  t.false(JSON.stringify(replica).includes('s3cr=t'));
  const events = await eventually(
    'the InvalidEnvironmentVariableNames event',
    async () => {
      const out = await env.kubectl([
        'get',
        'events',
        '--field-selector',
        'reason=InvalidEnvironmentVariableNames',
        '-o',
        'json',
      ]);
      const items = (JSON.parse(out) as { items: { message: string }[] }).items;
      if (items.length === 0) throw new Error('no event yet');
      return items;
    },
    { timeoutMs: 20_000 },
  );
  t.regex(events[0]?.message ?? '', /keys \[9lives\] from the envFrom secret .*\/db were skipped/);
});

test('a missing Secret keeps the replica Pending with ConfigResolved naming it; created, it starts', async (t) => {
  const env = await e2e(t, { hosts: 1, operator: 'none' });
  await operatorAsItsAccount(env);
  await putConfigObject(env, 'ConfigMap', 'settings', { other: 'x' });
  await env.instances.create(
    instance('waits', {
      env: [
        { name: 'TOKEN', valueFrom: { secretKeyRef: { name: 'api-token', key: 'token' } } },
        { name: 'REGION', valueFrom: { configMapKeyRef: { name: 'settings', key: 'region' } } },
      ],
    }),
    { namespace: env.ns },
  );
  const pending = await eventually(
    'waits-0 Pending with ConfigResolved False',
    async () => {
      const [r] = await env.replicasOf('waits');
      const c = r?.status?.conditions?.find((x) => x.type === 'ConfigResolved');
      if (r?.status?.phase !== 'Pending' || c?.status !== 'False' || c.reason !== 'ConfigMissing') {
        throw new Error(`phase ${r?.status?.phase}, ConfigResolved ${JSON.stringify(c)}`);
      }
      return { r, c };
    },
    { timeoutMs: 60_000 },
  );
  t.regex(pending.c.message ?? '', /secret "api-token" not found \(processes\[0\]\.env\[0\] TOKEN\)/);
  t.regex(
    pending.c.message ?? '',
    /key "region" not found in configmap .*\/settings \(processes\[0\]\.env\[1\] REGION\)/,
  );
  t.is(pending.r.status?.reason, 'ConfigMissing');
  t.falsy(pending.r.status?.processes?.length, 'nothing was started');
  // Still Pending a while later: it does not start without them.
  await new Promise((r) => setTimeout(r, 3000));
  t.is((await env.replicasOf('waits'))[0]?.status?.phase, 'Pending');

  await putConfigObject(env, 'Secret', 'api-token', { token: 'tok-1' });
  await resourceClient(env.api, CONFIGMAPS, 'orrery-test').mergePatch(
    'settings',
    { data: { region: 'eu-1' } },
    { namespace: env.ns },
  );
  const t0 = performance.now();
  const replica = await running(env, 'waits');
  t.log(`Running ${Math.round(performance.now() - t0)} ms after the objects were created`);
  const vars = environOf(replica);
  t.is(vars.get('TOKEN'), 'tok-1');
  t.is(vars.get('REGION'), 'eu-1');
  t.is(replica.status?.conditions?.find((c) => c.type === 'ConfigResolved')?.status, 'True');
});

test("host A's account reads the Secrets its replicas reference and is refused host B's, by the API server", async (t) => {
  const env = await e2e(t, {
    hosts: 2,
    operator: 'none',
    agentArgs: (i) => ['--label', `orrery.dev/slot=${i}`],
  });
  const operatorKubeconfig = await operatorAsItsAccount(env);
  const [a, b] = env.hosts;
  if (!a || !b) return t.fail('two hosts');
  await putConfigObject(env, 'Secret', 'secret-a', { v: 'a' });
  await putConfigObject(env, 'Secret', 'secret-b', { v: 'b' });
  await putConfigObject(env, 'Secret', 'unreferenced', { v: 'n' });
  for (const [name, slot, secret] of [
    ['on-a', 0, 'secret-a'],
    ['on-b', 1, 'secret-b'],
  ] as const) {
    await env.instances.create(
      instance(name, { env: [{ name: 'V', valueFrom: { secretKeyRef: { name: secret, key: 'v' } } }] }, slot),
      { namespace: env.ns },
    );
  }
  t.is(environOf(await running(env, 'on-a')).get('V'), 'a');
  t.is(environOf(await running(env, 'on-b')).get('V'), 'b');
  t.is((await env.replicasOf('on-a'))[0]?.spec.host, a.name);

  // As host A's runtime: its node-bound credentials, and the token of its own account.
  const runtimeA = await KubeApi.fromKubeConfig(
    loadKubeConfig({ kubeconfig: hostCredentialsPaths(dirname(a.stateDir), a.name).kubeconfig }),
  );
  t.teardown(() => runtimeA.close());
  const tokenOf = (account: string) =>
    runtimeA.request<{ status: { token: string } }>({
      method: 'POST',
      path: `/api/v1/namespaces/${SYSTEM_NAMESPACE}/serviceaccounts/${account}/token`,
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds: 3600 },
      },
    });
  // The admission policy sees the TokenRequest: B's account is not A's to ask for.
  const refused = await tokenOf(hostAccountName(b.name)).then(
    () => undefined,
    (err: Error) => err,
  );
  t.true(isForbidden(refused), `asking for B's token: ${refused?.message}`);
  t.regex(refused?.message ?? '', /orrery-runtime-host-account.*may ask for a token of orrery-host-/);
  const tooLong = await runtimeA
    .request({
      method: 'POST',
      path: `/api/v1/namespaces/${SYSTEM_NAMESPACE}/serviceaccounts/${hostAccountName(a.name)}/token`,
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds: 86400 },
      },
    })
    .then(
      () => undefined,
      (err: Error) => err,
    );
  t.true(isForbidden(tooLong), 'a token of more than an hour is refused');

  const { status } = await tokenOf(hostAccountName(a.name));
  const cluster = env.api.kubeConfig.cluster;
  const hostApi = await KubeApi.fromKubeConfig(
    new KubeConfig([
      {
        source: 'test',
        clusters: [{ ...cluster, name: 'c' }],
        users: [{ name: 'a', source: 'test', token: status.token }],
        contexts: [{ name: 'a', source: 'test', cluster: 'c', user: 'a' }],
        currentContext: 'a',
      },
    ]),
  );
  t.teardown(() => hostApi.close());
  const secrets = resourceClient(hostApi, SECRETS, 'orrery-test');
  const read = (name: string) =>
    secrets.get(name, { namespace: env.ns }).then(
      () => 'allowed',
      (err: Error) => (isForbidden(err) ? 'forbidden' : err.message),
    );
  t.is(await read('secret-a'), 'allowed');
  t.is(await read('secret-b'), 'forbidden');
  t.is(await read('unreferenced'), 'forbidden');
  t.is(
    await secrets.list({ namespace: env.ns }).then(
      () => 'allowed',
      (err: Error) => (isForbidden(err) ? 'forbidden' : err.message),
    ),
    'forbidden',
    'no list',
  );
  t.is(
    await resourceClient(hostApi, CONFIGMAPS, 'orrery-test')
      .get('kube-root-ca.crt', { namespace: env.ns })
      .then(
        () => 'allowed',
        (err: Error) => (isForbidden(err) ? 'forbidden' : err.message),
      ),
    'forbidden',
  );

  // A's replica gone: A's grant in this namespace goes with it, and its reads are refused.
  await env.instances.delete('on-a', { namespace: env.ns });
  await eventually(
    "secret-a refused to host A once no replica of A's references it",
    async () => {
      const r = await read('secret-a');
      if (r !== 'forbidden') throw new Error(r);
      return true;
    },
    { timeoutMs: 30_000 },
  );
  t.is(
    await env.kubectl(['get', 'role', hostAccountName(a.name), '-o', 'name']).then(
      (o) => o.trim(),
      (err: Error) => (/NotFound/.test(err.message) ? 'gone' : err.message),
    ),
    'gone',
  );

  // The operator's own account grants nothing else (orrery-operator-host-access).
  const asOperator = (yaml: string) =>
    kubectl(operatorKubeconfig, ['create', '--dry-run=server', '-n', env.ns, '-f', '-'], { input: yaml });
  const role = (name: string, verbs: string[], resource = 'secrets') =>
    stringify({
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name },
      rules: [{ apiGroups: [''], resources: [resource], verbs, resourceNames: ['secret-b'] }],
    });
  t.regex((await asOperator(role('reader', ['get']))).stderr, /writes only objects named orrery-host-<host>/);
  // RBAC's escalation check: it cannot grant what it does not hold (list).
  t.regex(
    (await asOperator(role(hostAccountName(a.name), ['get', 'list']))).stderr,
    /attempting to grant RBAC permissions not currently held/,
  );
  // What it holds, but not for hosts: the admission policy.
  t.regex(
    (await asOperator(role(hostAccountName(a.name), ['create'], 'events'))).stderr,
    /grants only get on named ConfigMaps and Secrets/,
  );
  t.regex(
    (
      await asOperator(
        stringify({
          apiVersion: 'rbac.authorization.k8s.io/v1',
          kind: 'RoleBinding',
          metadata: { name: hostAccountName(b.name) },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: hostAccountName(b.name) },
          subjects: [{ kind: 'User', name: 'mallory' }],
        }),
      )
    ).stderr,
    /to the account orrery-system\/orrery-host-<host> alone/,
  );
  t.is((await asOperator(role(hostAccountName(a.name), ['get']))).code, 0, 'the one shape it makes');
});
