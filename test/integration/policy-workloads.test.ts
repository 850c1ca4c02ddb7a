// deploy/policy-workloads.yaml against the real API server: an Instance that asks for host users
// (isolation.hostUsers: true, root on the node) is refused unless its namespace allows it, and a
// default Instance (its own user namespace) is accepted anywhere; host paths only under the
// prefixes the namespace's annotations allow, writable ones only under the writable prefixes.
// The policies stay installed: `orrery up` and the e2e fixture install them too (installAccess).
import test, { type ExecutionContext } from 'ava';
import { stringify } from 'yaml';
import { freshNamespace, kubectl } from '../helpers/cluster.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { eventually } from '../helpers/wait.ts';

/**
 * The shipped policies applied, and two fresh namespaces: one as it is, one given `marks`
 * (`kubectl label|annotate namespace NS marks...`), the admin's opt-in.
 */
async function plainAndAllowed(
  t: ExecutionContext,
  verb: 'label' | 'annotate',
  marks: string[],
): Promise<{ kubeconfig: string; plain: string; allowed: string }> {
  const { kubeconfig } = await orreryCluster();
  const applied = await kubectl(kubeconfig, ['apply', '-f', 'deploy/policy-workloads.yaml']);
  t.is(applied.code, 0, applied.stderr);
  const plain = await freshNamespace(t);
  const allowed = await freshNamespace(t);
  const marked = await kubectl(kubeconfig, [verb, 'namespace', allowed, ...marks]);
  t.is(marked.code, 0, marked.stderr);
  return { kubeconfig, plain, allowed };
}

function instance(name: string, hostUsers: boolean): string {
  return stringify({
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name },
    spec: {
      replicas: 0,
      template: { processes: [{ name: 'main', command: ['sleep', '1000'] }], isolation: { hostUsers } },
    },
  });
}

test('isolation.hostUsers is refused by the shipped policy unless the namespace allows it', async (t) => {
  const { kubeconfig, plain, allowed } = await plainAndAllowed(t, 'label', ['orrery.dev/host-users=allowed']);
  const create = (ns: string, name: string, hostUsers: boolean) =>
    kubectl(kubeconfig, ['create', '-n', ns, '-f', '-'], { input: instance(name, hostUsers) });

  // The policy takes effect once the API server's admission plugin has seen it.
  const denied = await eventually('the policy to refuse hostUsers', async () => {
    const r = await create(plain, 'root-on-node', true);
    if (r.code === 0)
      await kubectl(kubeconfig, ['delete', '-n', plain, 'inst', 'root-on-node', '--wait=false']);
    return r.code !== 0 && !/AlreadyExists/.test(r.stderr) && r;
  });
  t.regex(denied.stderr, /ValidatingAdmissionPolicy 'orrery-host-users'.*denied request/);
  t.regex(denied.stderr, /spec\.template\.isolation\.hostUsers: true runs the replicas as root on the node/);
  t.is((await create(plain, 'unprivileged', false)).code, 0, 'a default Instance is accepted');
  const inAllowed = await create(allowed, 'root-on-node', true);
  t.is(
    inAllowed.code,
    0,
    `a namespace labelled orrery.dev/host-users=allowed accepts it: ${inAllowed.stderr}`,
  );
});

function hostPathInstance(name: string, path: string, readOnly?: boolean): string {
  return stringify({
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name },
    spec: {
      replicas: 0,
      template: {
        processes: [
          {
            name: 'main',
            command: ['sleep', '1000'],
            volumeMounts: [
              { name: 'logs', mountPath: '/logs', ...(readOnly === undefined ? {} : { readOnly }) },
            ],
          },
        ],
        volumes: [{ name: 'logs', hostPath: { path } }],
      },
    },
  });
}

test('hostPath volumes are refused by the shipped policy but under the prefixes a namespace allows', async (t) => {
  const { kubeconfig, plain, allowed } = await plainAndAllowed(t, 'annotate', [
    'orrery.dev/host-paths=/var/log, /etc/ssl/',
    'orrery.dev/writable-host-paths=/srv/data',
  ]);
  const create = (ns: string, name: string, path: string, readOnly?: boolean) =>
    kubectl(kubeconfig, ['create', '-n', ns, '-f', '-'], { input: hostPathInstance(name, path, readOnly) });

  const denied = await eventually('the policy to refuse hostPath', async () => {
    const r = await create(plain, 'logs', '/var/log');
    if (r.code === 0) await kubectl(kubeconfig, ['delete', '-n', plain, 'inst', 'logs', '--wait=false']);
    return r.code !== 0 && !/AlreadyExists/.test(r.stderr) && r;
  });
  t.regex(denied.stderr, /ValidatingAdmissionPolicy 'orrery-host-paths'.*denied request/);
  t.regex(
    denied.stderr,
    new RegExp(
      `spec\\.template\\.volumes\\[\\]\\.hostPath: namespace ${plain} does not allow host path\\(s\\) /var/log `,
    ),
  );

  // Read-only (the default, and written out) under an allowed prefix, whole elements only.
  t.is((await create(allowed, 'logs', '/var/log')).code, 0);
  t.is((await create(allowed, 'app-logs', '/var/log/app', true)).code, 0);
  t.is((await create(allowed, 'certs', '/etc/ssl/certs')).code, 0, 'a prefix written with a trailing /');
  t.is((await create(allowed, 'data-ro', '/srv/data/db')).code, 0, 'a writable prefix is readable');
  const sibling = await create(allowed, 'sibling', '/var/logs');
  t.not(sibling.code, 0, '/var/log does not allow /var/logs');
  t.regex(sibling.stderr, /does not allow host path\(s\) \/var\/logs/);

  // Writes: readOnly false only under a writable prefix.
  const write = await create(allowed, 'logs-rw', '/var/log', false);
  t.not(write.code, 0);
  t.regex(
    write.stderr,
    /spec\.template\.processes\[\]\.volumeMounts\[\]\.readOnly: false mounts host path\(s\) \/var\/log writable; namespace \S+ allows no writes there/,
  );
  t.is((await create(allowed, 'data', '/srv/data/db', false)).code, 0, 'a write under the writable prefix');

  // Hand-written Replicas carry the template and are held to the same rule.
  const replica = await kubectl(kubeconfig, ['create', '-n', plain, '-f', '-'], {
    input: stringify({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Replica',
      metadata: { name: 'hand-0' },
      spec: {
        instance: 'hand',
        ordinal: 0,
        template: {
          processes: [
            { name: 'main', command: ['sleep', '1'], volumeMounts: [{ name: 'h', mountPath: '/h' }] },
          ],
          volumes: [{ name: 'h', hostPath: { path: '/etc' } }],
        },
      },
    }),
  });
  t.not(replica.code, 0);
  t.regex(replica.stderr, /orrery-host-paths/);

  // A revoked allowance refuses new templates but not changes that leave the template alone.
  const revoked = await kubectl(kubeconfig, ['annotate', 'namespace', allowed, 'orrery.dev/host-paths-']);
  t.is(revoked.code, 0, revoked.stderr);
  await eventually('the revocation to be seen', async () => {
    const r = await create(allowed, 'late', '/var/log');
    if (r.code === 0) await kubectl(kubeconfig, ['delete', '-n', allowed, 'inst', 'late', '--wait=false']);
    return r.code !== 0 && !/AlreadyExists/.test(r.stderr);
  });
  const scaled = await kubectl(kubeconfig, ['label', '-n', allowed, 'inst', 'logs', 'touched=yes']);
  t.is(scaled.code, 0, `a change outside the template is accepted: ${scaled.stderr}`);
  const changed = await kubectl(kubeconfig, [
    'patch',
    '-n',
    allowed,
    'inst',
    'logs',
    '--type=json',
    '-p',
    '[{"op":"replace","path":"/spec/template/volumes/0/hostPath/path","value":"/var/log/other"}]',
  ]);
  t.not(changed.code, 0, 'a template change is checked again');
  t.regex(changed.stderr, /orrery-host-paths/);
});
