// deploy/rbac-users.yaml against the real API server: a ServiceAccount bound to orrery-users-edit
// (what `edit` aggregates) in its namespace creates an Instance, scales it, restarts a Replica by
// its annotation orrery.dev/restartedAt, and is refused a change of the Replica's spec or labels
// (the policy orrery-replica-restart) and any Instance in another namespace; one bound to
// orrery-users-view lists but does not patch. Writes impersonate the account (`kubectl --as`), so
// RBAC and admission see it, not the admin. They are installed as `orrery up` installs them. The
// last test binds the built-in view and edit instead: the control plane's clusterrole-aggregation
// controller gathers Orrery's rules into them, as kube-controller-manager does on a cluster.
import test, { type ExecutionContext } from 'ava';
import { stringify } from 'yaml';
import { installAccess } from '../../cli/up-identity.ts';
import { KubeApi, loadKubeConfig } from '../../kube/index.ts';
import { freshNamespace, kubectl } from '../helpers/cluster.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { eventually } from '../helpers/wait.ts';

async function boundAccount(
  t: ExecutionContext,
  kubeconfig: string,
  namespace: string,
  role: 'orrery-users-edit' | 'orrery-users-view',
): Promise<string[]> {
  const sa = await kubectl(kubeconfig, ['create', 'serviceaccount', '-n', namespace, 'user']);
  t.is(sa.code, 0, sa.stderr);
  const roles = role === 'orrery-users-edit' ? ['orrery-users-view', role] : [role];
  for (const r of roles) {
    const b = await kubectl(kubeconfig, [
      'create',
      'rolebinding',
      '-n',
      namespace,
      r,
      `--clusterrole=${r}`,
      `--serviceaccount=${namespace}:user`,
    ]);
    t.is(b.code, 0, b.stderr);
  }
  return [`--as=system:serviceaccount:${namespace}:user`];
}

function instanceYaml(name: string): string {
  return stringify({
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name },
    spec: { replicas: 0, template: { processes: [{ name: 'main', command: ['sleep', '1000'] }] } },
  });
}

/** A Replica as the operator would make it, written by the admin (no operator runs here). */
function replicaYaml(name: string): string {
  return stringify({
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Replica',
    metadata: { name, labels: { 'orrery.dev/instance': 'web' }, annotations: { keep: 'me' } },
    spec: {
      instance: 'web',
      ordinal: 0,
      templateHash: 'abc',
      template: { processes: [{ name: 'main', command: ['sleep', '1000'] }] },
    },
  });
}

/** deploy/'s objects installed as `orrery up` installs them (installAccess), users' roles among them. */
async function applyShipped(t: ExecutionContext): Promise<string> {
  const { kubeconfig } = await orreryCluster();
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
  t.teardown(() => api.close());
  await installAccess(api);
  return kubeconfig;
}

test('edit: create and scale Instances, restart a Replica, nothing else of a Replica, not elsewhere', async (t) => {
  const kubeconfig = await applyShipped(t);
  const ns = await freshNamespace(t);
  const other = await freshNamespace(t);
  const as = await boundAccount(t, kubeconfig, ns, 'orrery-users-edit');

  const created = await kubectl(kubeconfig, ['create', '-n', ns, '-f', '-', ...as], {
    input: instanceYaml('web'),
  });
  t.is(created.code, 0, created.stderr);
  const scaled = await kubectl(kubeconfig, ['scale', '-n', ns, 'instance', 'web', '--replicas=2', ...as]);
  t.is(scaled.code, 0, scaled.stderr);
  const spec = await kubectl(kubeconfig, [
    'get',
    '-n',
    ns,
    'instance',
    'web',
    '-o',
    'jsonpath={.spec.replicas}',
    ...as,
  ]);
  t.is(spec.stdout, '2');

  const elsewhere = await kubectl(kubeconfig, ['create', '-n', other, '-f', '-', ...as], {
    input: instanceYaml('web'),
  });
  t.not(elsewhere.code, 0);
  t.regex(elsewhere.stderr, /forbidden/i);

  const replica = await kubectl(kubeconfig, ['create', '-n', ns, '-f', '-'], { input: replicaYaml('web-0') });
  t.is(replica.code, 0, replica.stderr);
  const userCreate = await kubectl(kubeconfig, ['create', '-n', ns, '-f', '-', ...as], {
    input: replicaYaml('web-1'),
  });
  t.not(userCreate.code, 0, 'users do not create Replicas');
  t.regex(userCreate.stderr, /forbidden/i);

  // The policy takes effect once the API server's admission plugin has seen it.
  const specDenied = await eventually('the policy to refuse a Replica spec change', async () => {
    const r = await kubectl(kubeconfig, [
      'patch',
      '-n',
      ns,
      'replica',
      'web-0',
      '--type=merge',
      '-p',
      '{"spec":{"templateHash":"evil"}}',
      ...as,
    ]);
    return r.code !== 0 && r;
  });
  t.regex(specDenied.stderr, /ValidatingAdmissionPolicy 'orrery-replica-restart'.*denied request/);
  t.regex(specDenied.stderr, /a Replica's spec is the operator's/);
  const labelDenied = await kubectl(kubeconfig, [
    'label',
    '-n',
    ns,
    'replica',
    'web-0',
    'orrery.dev/instance=other',
    '--overwrite',
    ...as,
  ]);
  t.regex(labelDenied.stderr, /labels, owners and finalizers are Orrery's/);
  const otherAnnotation = await kubectl(kubeconfig, [
    'annotate',
    '-n',
    ns,
    'replica',
    'web-0',
    'keep=no',
    '--overwrite',
    ...as,
  ]);
  t.regex(otherAnnotation.stderr, /of a Replica's annotations users change only orrery.dev\/restartedAt/);

  const at = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const restart = await kubectl(kubeconfig, [
    'annotate',
    '-n',
    ns,
    'replica',
    'web-0',
    `orrery.dev/restartedAt=${at}`,
    '--overwrite',
    ...as,
  ]);
  t.is(restart.code, 0, restart.stderr);
  const seen = await kubectl(kubeconfig, [
    'get',
    '-n',
    ns,
    'replica',
    'web-0',
    '-o',
    'jsonpath={.metadata.annotations.orrery\\.dev/restartedAt} {.spec.templateHash}',
  ]);
  t.is(seen.stdout, `${at} abc`);
  // The admin (system:masters) is not held by the policy.
  const admin = await kubectl(kubeconfig, [
    'annotate',
    '-n',
    ns,
    'replica',
    'web-0',
    'keep=admin',
    '--overwrite',
  ]);
  t.is(admin.code, 0, admin.stderr);
});

test('view: list and get, no patch, no restart', async (t) => {
  const kubeconfig = await applyShipped(t);
  const ns = await freshNamespace(t);
  const as = await boundAccount(t, kubeconfig, ns, 'orrery-users-view');
  t.is((await kubectl(kubeconfig, ['create', '-n', ns, '-f', '-'], { input: instanceYaml('web') })).code, 0);
  t.is((await kubectl(kubeconfig, ['create', '-n', ns, '-f', '-'], { input: replicaYaml('web-0') })).code, 0);

  for (const kind of ['instances', 'replicas', 'services.orrery.dev', 'endpointslices.orrery.dev']) {
    const list = await kubectl(kubeconfig, ['get', '-n', ns, kind, ...as]);
    t.is(list.code, 0, `${kind}: ${list.stderr}`);
  }
  const listed = await kubectl(kubeconfig, ['get', '-n', ns, 'instances', '-o', 'name', ...as]);
  t.regex(listed.stdout, /instance.orrery.dev\/web/);
  const scale = await kubectl(kubeconfig, ['scale', '-n', ns, 'instance', 'web', '--replicas=3', ...as]);
  t.not(scale.code, 0);
  t.regex(scale.stderr, /forbidden/i);
  const restart = await kubectl(kubeconfig, [
    'annotate',
    '-n',
    ns,
    'replica',
    'web-0',
    'orrery.dev/restartedAt=2026-01-01T00:00:00Z',
    ...as,
  ]);
  t.not(restart.code, 0);
  t.regex(restart.stderr, /forbidden/i);
  // Hosts are cluster-scoped: a namespace's binding does not reach them.
  const hosts = await kubectl(kubeconfig, ['auth', 'can-i', 'list', 'hosts.orrery.dev', ...as]);
  t.is(hosts.stdout.trim(), 'no');
});

test("the built-in view and edit roles carry Orrery's kinds: the control plane aggregates them", async (t) => {
  const kubeconfig = await applyShipped(t);
  const ns = await freshNamespace(t);
  for (const role of ['view', 'edit']) {
    const sa = await kubectl(kubeconfig, ['create', 'serviceaccount', '-n', ns, role]);
    t.is(sa.code, 0, sa.stderr);
    const b = await kubectl(kubeconfig, [
      'create',
      'rolebinding',
      '-n',
      ns,
      `builtin-${role}`,
      `--clusterrole=${role}`,
      `--serviceaccount=${ns}:${role}`,
    ]);
    t.is(b.code, 0, b.stderr);
  }
  const can = async (who: string, verb: string, resource: string) =>
    (
      await kubectl(kubeconfig, [
        'auth',
        'can-i',
        verb,
        resource,
        '-n',
        ns,
        `--as=system:serviceaccount:${ns}:${who}`,
      ])
    ).stdout.trim();
  await eventually(
    'edit aggregated: create instances.orrery.dev',
    async () => (await can('edit', 'create', 'instances.orrery.dev')) === 'yes',
    { timeoutMs: 20_000 },
  );
  t.is(await can('edit', 'patch', 'replicas.orrery.dev'), 'yes', 'edit restarts Replicas');
  t.is(await can('edit', 'create', 'replicas.orrery.dev'), 'no', 'edit does not create Replicas');
  await eventually(
    'view aggregated: list replicas.orrery.dev',
    async () => (await can('view', 'list', 'replicas.orrery.dev')) === 'yes',
    { timeoutMs: 20_000 },
  );
  t.is(await can('view', 'patch', 'replicas.orrery.dev'), 'no', 'view does not restart');
  t.is(await can('view', 'create', 'instances.orrery.dev'), 'no', 'view does not create');
});
