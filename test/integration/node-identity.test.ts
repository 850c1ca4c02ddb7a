// A runtime's credentials reach only its own node (issue 15), as NodeRestriction does for
// kubelets: deploy/rbac.yaml's orrery-runtime RBAC and its admission policy, applied for real
// (as `orrery up` applies them), hold the account, with a token naming node A, to A's Host, A's
// Lease and the status and finalizers of the Replicas bound to A. Asked three ways: the API
// server's authorizer (`kubectl auth can-i --as`), writes impersonating the account with A's
// node-name extra (dry runs), and real writes with the per-host token `orrery up` gives its hosts
// (TokenRequest bound to a Node).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { parse, stringify } from 'yaml';
import { installAccess, runtimeAccessObjects, writeHostCredentials } from '../../cli/up-identity.ts';
import { hostLeaseName, RUNTIME_FINALIZER, SYSTEM_NAMESPACE } from '../../crds/labels.ts';
import { HOSTS, REPLICAS } from '../../crds/resources.ts';
import type { Host, Replica } from '../../crds/types.ts';
import {
  isForbidden,
  KubeApi,
  leaseClient,
  loadKubeConfig,
  resourceClient,
  typed,
} from '../../kube/index.ts';
import { replicaObject } from '../helpers/agent-harness.ts';
import { freshNamespace, kubectl, whoAmI } from '../helpers/cluster.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { eventually } from '../helpers/wait.ts';

const RUNTIME = 'system:serviceaccount:orrery-system:orrery-runtime';
const POLICY_DENIAL = /ValidatingAdmissionPolicy 'orrery-runtime-node' .*denied request/;

const suffix = randomBytes(3).toString('hex');
const nodeA = `ni-${suffix}-a`;
const nodeB = `ni-${suffix}-b`;
let adminKubeconfig = '';
let admin: KubeApi;
let dir = '';

test.before(async () => {
  const { kubeconfig } = await orreryCluster();
  adminKubeconfig = kubeconfig;
  admin = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
  await installAccess(admin);
  dir = mkdtempSync(join(tmpdir(), 'node-identity-'));
  const hosts = resourceClient(admin, typed<Host>(HOSTS), 'orrery-test');
  for (const name of [nodeA, nodeB]) {
    await hosts.create({ apiVersion: 'orrery.dev/v1alpha1', kind: 'Host', metadata: { name }, spec: {} });
  }
  // The policy takes effect once the API server's admission plugin has seen it.
  await eventually('the runtime policy in force', async () => {
    const r = await asNode(nodeA, ['create', '--dry-run=server', '-f', '-'], lease(SYSTEM_NAMESPACE, 'x'));
    return POLICY_DENIAL.test(r.stderr);
  });
});

test.after.always(async () => {
  const hosts = resourceClient(admin, typed<Host>(HOSTS), 'orrery-test');
  for (const name of [nodeA, nodeB]) {
    await hosts.delete(name).catch(() => {});
    await leaseClient(admin, 'orrery-test')
      .delete(hostLeaseName(name), { namespace: SYSTEM_NAMESPACE })
      .catch(() => {});
    await admin.request({ method: 'DELETE', path: `/api/v1/nodes/${name}` }).catch(() => {});
  }
  admin?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  // The account and its policy stay: they are what `orrery up` installs, and bind no one else.
});

function lease(namespace: string, name: string): string {
  return stringify({
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name, namespace },
    spec: { holderIdentity: name },
  });
}

/** kubectl as the runtimes' account with `node`'s node-name extra, through a kubeconfig (kubectl has no flag for extras). */
async function asNode(node: string, args: string[], input?: string) {
  const config = join(dir, `as-${node}`);
  const doc = parse(readFileSync(adminKubeconfig, 'utf8')) as { users: { user: Record<string, unknown> }[] };
  for (const u of doc.users) {
    u.user.as = RUNTIME;
    u.user['as-user-extra'] = { 'authentication.kubernetes.io/node-name': [node] };
  }
  writeFileSync(config, stringify(doc), { mode: 0o600 });
  return kubectl(config, args, input === undefined ? {} : { input });
}

/** Two Replicas, one bound to each node, with the runtime's finalizer (released at teardown). */
async function boundReplicas(t: ExecutionContext): Promise<{ ns: string; a: string; b: string }> {
  const ns = await freshNamespace(t);
  const replicas = resourceClient(admin, typed<Replica>(REPLICAS), 'orrery-test');
  const proc = [{ name: 'main', command: ['/bin/true'] }];
  await replicas.create(replicaObject(ns, 'on-a', nodeA, proc));
  await replicas.create(replicaObject(ns, 'on-b', nodeB, proc));
  t.teardown(async () => {
    for (const name of ['on-a', 'on-b']) {
      await replicas.mergePatch(name, { metadata: { finalizers: null } }, { namespace: ns }).catch(() => {});
    }
  });
  return { ns, a: 'on-a', b: 'on-b' };
}

test('deploy/rbac.yaml gives the runtimes exactly what the agent writes', async (t) => {
  const objects = runtimeAccessObjects().map((o) => `${o.kind}/${o.metadata?.name}`);
  t.deepEqual(objects.sort(), [
    'ClusterRole/orrery-runtime',
    'ClusterRoleBinding/orrery-runtime',
    'Role/orrery-runtime',
    'RoleBinding/orrery-runtime',
    'ServiceAccount/orrery-runtime',
    'ValidatingAdmissionPolicy/orrery-runtime-host-account',
    'ValidatingAdmissionPolicy/orrery-runtime-node',
    'ValidatingAdmissionPolicyBinding/orrery-runtime-host-account',
    'ValidatingAdmissionPolicyBinding/orrery-runtime-node',
  ]);
  const canI = async (...args: string[]) =>
    (await kubectl(adminKubeconfig, ['auth', 'can-i', ...args, `--as=${RUNTIME}`])).stdout.trim();
  const allowed = [
    ['watch', 'replicas.orrery.dev', '--all-namespaces'],
    ['patch', 'replicas.orrery.dev', '-n', 'default'],
    ['update', 'replicas.orrery.dev', '--subresource=status', '-n', 'default'],
    ['create', 'hosts.orrery.dev'],
    ['patch', 'hosts.orrery.dev', '--subresource=status'],
    ['watch', 'services.orrery.dev', '--all-namespaces'],
    ['get', 'leases', '-n', 'orrery-system'],
    ['create', 'leases', '-n', 'orrery-system'],
    ['update', 'leases', '-n', 'orrery-system'],
    ['create', 'events', '-n', 'default'],
    ['get', 'namespaces/orrery-system'],
    // A token of its host's account (issue 19); the policy orrery-runtime-host-account names which.
    ['create', 'serviceaccounts', '--subresource=token', '-n', 'orrery-system'],
  ];
  const denied = [
    // The issue's reproduction: before, yes.
    ['update', 'leases', '-n', 'kube-system'],
    ['create', 'leases', '-n', 'default'],
    ['delete', 'leases', '-n', 'orrery-system'],
    ['list', 'leases', '-n', 'orrery-system'],
    ['create', 'replicas.orrery.dev', '-n', 'default'],
    ['delete', 'replicas.orrery.dev', '-n', 'default'],
    ['delete', 'hosts.orrery.dev'],
    ['create', 'services.orrery.dev', '-n', 'default'],
    ['patch', 'services.orrery.dev', '-n', 'default'],
    ['patch', 'services.orrery.dev', '--subresource=status', '-n', 'default'],
    ['create', 'endpointslices.orrery.dev', '-n', 'default'],
    ['patch', 'instances.orrery.dev', '-n', 'default'],
    ['create', 'namespaces'],
    ['get', 'namespaces/default'],
    ['get', 'secrets', '-n', 'orrery-system'],
    ['get', 'secrets', '-n', 'default'],
    ['get', 'configmaps', '-n', 'default'],
    ['create', 'serviceaccounts', '--subresource=token', '-n', 'default'],
  ];
  for (const args of allowed) t.is(await canI(...args), 'yes', `can-i ${args.join(' ')}`);
  for (const args of denied) t.is(await canI(...args), 'no', `can-i ${args.join(' ')}`);
});

test.serial(
  "node A's runtime writes its own Host, Lease and Replicas' status, and nothing of node B's",
  async (t) => {
    const { ns, a, b } = await boundReplicas(t);
    const dry = ['--dry-run=server'];
    const status = (name: string) => [
      'patch',
      'replicas.orrery.dev',
      name,
      '-n',
      ns,
      '--subresource=status',
      '--type=merge',
      '-p',
      '{"status":{"phase":"Running"}}',
      ...dry,
    ];
    const dropFinalizer = (name: string) => [
      'patch',
      'replicas.orrery.dev',
      name,
      '-n',
      ns,
      '--type=json',
      '-p',
      JSON.stringify([{ op: 'remove', path: '/metadata/finalizers/0' }]),
      ...dry,
    ];
    const hostStatus = (name: string) => [
      'patch',
      'hosts.orrery.dev',
      name,
      '--subresource=status',
      '--type=merge',
      '-p',
      '{"status":{"apiEndpoint":"http://203.0.113.1:7777"}}',
      ...dry,
    ];
    const ok = async (what: string, args: string[], input?: string) => {
      const r = await asNode(nodeA, args, input);
      t.is(r.code, 0, `${what}: ${r.stderr}`);
    };
    const denied = async (what: string, args: string[], why: RegExp, input?: string) => {
      const r = await asNode(nodeA, args, input);
      t.not(r.code, 0, `${what} was allowed`);
      t.regex(r.stderr, why, what);
    };
    await ok("its Replica's status", status(a));
    await ok('its finalizer on its Replica', dropFinalizer(a));
    await ok('its Host status', hostStatus(nodeA));
    await ok('its Lease', ['create', '-f', '-', ...dry], lease(SYSTEM_NAMESPACE, hostLeaseName(nodeA)));

    await denied(
      "B's Replica status",
      status(b),
      /may write only Replicas bound to it, not .*on-b \(bound to ni-/,
    );
    await denied("B's Replica finalizer", dropFinalizer(b), /may write only Replicas bound to it/);
    await denied(
      'a spec, of its own Replica',
      [
        'patch',
        'replicas.orrery.dev',
        a,
        '-n',
        ns,
        '--type=merge',
        '-p',
        '{"spec":{"template":{"processes":[{"name":"evil","command":["/bin/sh"]}]}}}',
        ...dry,
      ],
      /writes only a Replica's status and removes its finalizer/,
    );
    await denied(
      'a label, of its own Replica',
      ['label', 'replicas.orrery.dev', a, '-n', ns, 'x=y', ...dry],
      /writes only a Replica's status/,
    );
    await denied(
      'a finalizer added',
      [
        'patch',
        'replicas.orrery.dev',
        a,
        '-n',
        ns,
        '--type=json',
        '-p',
        JSON.stringify([{ op: 'add', path: '/metadata/finalizers/-', value: 'x.dev/keep' }]),
        ...dry,
      ],
      /removes its finalizer/,
    );
    await denied("B's Host status", hostStatus(nodeB), /may write only the Host ni-.*-a, not ni-.*-b/);
    await denied(
      "its Host's spec (a user's cordon)",
      ['patch', 'hosts.orrery.dev', nodeA, '--type=merge', '-p', '{"spec":{"unschedulable":true}}', ...dry],
      /may not change its Host's spec/,
    );
    await denied(
      "B's Lease",
      ['create', '-f', '-', ...dry],
      /may write only the Lease orrery-system\/host-ni-.*-a, not orrery-system\/host-ni-.*-b/,
      lease(SYSTEM_NAMESPACE, hostLeaseName(nodeB)),
    );
    await denied(
      "the operator's Lease",
      ['create', '-f', '-', ...dry],
      POLICY_DENIAL,
      lease(SYSTEM_NAMESPACE, 'orrery-operator'),
    );
    await denied(
      'a kube-system Lease',
      ['create', '-f', '-', ...dry],
      /forbidden/,
      lease('kube-system', hostLeaseName(nodeA)),
    );
    await denied(
      'a Replica',
      ['create', '-f', '-', ...dry],
      /forbidden/,
      stringify(replicaObject(ns, 'new', nodeA, [{ name: 'm', command: ['/bin/true'] }])),
    );

    // A token that names no node writes nothing.
    const r = await kubectl(adminKubeconfig, ['create', '-f', '-', ...dry, `--as=${RUNTIME}`], {
      input: lease(SYSTEM_NAMESPACE, hostLeaseName(nodeA)),
    });
    t.regex(r.stderr, /writes only with a token bound to its node/);
  },
);

test.serial(
  "orrery up's per-host token: node A's agent credentials write A's objects and are refused B's",
  async (t) => {
    const { ns, a, b } = await boundReplicas(t);
    const cluster = loadKubeConfig({ kubeconfig: adminKubeconfig }).cluster;
    const creds = await writeHostCredentials(admin, cluster, dir, nodeA);
    t.is(statSync(creds.tokenFile).mode & 0o777, 0o600);
    t.is(statSync(join(dir, 'credentials', 'hosts', nodeA)).mode & 0o777, 0o700);
    t.is(statSync(join(dir, 'credentials')).mode & 0o777, 0o700);
    const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig: creds.kubeconfig }));
    t.teardown(() => api.close());

    // Who the API server takes it for: the account, with the node in the token.
    const user = await whoAmI(api);
    t.is(user.username, RUNTIME);
    t.deepEqual(user.extra?.['authentication.kubernetes.io/node-name'], [nodeA]);

    const replicas = resourceClient(api, typed<Replica>(REPLICAS), `orrery-runtime/${nodeA}`);
    const hosts = resourceClient(api, typed<Host>(HOSTS), `orrery-runtime/${nodeA}`);
    const leases = leaseClient(api, `orrery-runtime/${nodeA}`);
    const forbidden = async (what: string, write: Promise<unknown>) => {
      const err = await write.then(
        () => undefined,
        (e: unknown) => e,
      );
      t.true(isForbidden(err), `${what}: ${err === undefined ? 'allowed' : String(err)}`);
    };

    await replicas.patchStatus(a, { phase: 'Running' } as never, { namespace: ns });
    await hosts.applyStatus({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Host',
      metadata: { name: nodeA },
      status: { replicas: 1 } as never,
    });
    await leases.create({
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: hostLeaseName(nodeA), namespace: SYSTEM_NAMESPACE },
      spec: { holderIdentity: nodeA },
    });
    const own = await replicas.get(a, { namespace: ns });
    t.deepEqual(own.metadata?.finalizers, [RUNTIME_FINALIZER]);
    await replicas.patch(a, [{ op: 'remove', path: '/metadata/finalizers/0' }], {
      namespace: ns,
      type: 'json',
    });

    await forbidden(
      "B's Replica status",
      replicas.patchStatus(b, { phase: 'Running' } as never, { namespace: ns }),
    );
    await forbidden(
      'a Replica spec',
      replicas.mergePatch(
        a,
        { spec: { template: { processes: [{ name: 'x', command: ['/bin/sh'] }] } } } as never,
        {
          namespace: ns,
        },
      ),
    );
    await forbidden(
      "B's Host",
      hosts.applyStatus({
        apiVersion: 'orrery.dev/v1alpha1',
        kind: 'Host',
        metadata: { name: nodeB },
        status: { replicas: 9 } as never,
      }),
    );
    await forbidden(
      "B's Lease",
      leases.create({
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: hostLeaseName(nodeB), namespace: SYSTEM_NAMESPACE },
        spec: { holderIdentity: nodeB },
      }),
    );
    await forbidden(
      'a kube-system Lease',
      leases.create({
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: 'kube-scheduler', namespace: 'kube-system' },
        spec: { holderIdentity: nodeA },
      }),
    );
  },
);
