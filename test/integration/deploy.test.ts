// deploy/ (kubectl apply -k) is accepted by a real API server: every manifest validates
// (server-side dry run), RBAC and the admission policy included. And the mesh proxy's account is
// what deploy/ says: its RBAC and policy applied for real, the API server's own authorizer
// (`kubectl auth can-i --as`) lets it read Services and EndpointSlices everywhere and write Leases
// in orrery-system, and nothing else; the admission policy holds it to its own Lease; and the
// proxy itself, run with a token of that account, serves, renews its Lease and deletes it.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { PROXY_EJECTED_ANNOTATION, PROXY_NAMESPACE_ANNOTATION, proxyLeaseName } from '../../crds/labels.ts';
import { isNotFound, KubeApi, kubeConfigFromString, leaseClient, loadKubeConfig } from '../../kube/index.ts';
import { startProxy } from '../../mesh/proxy.ts';
import { freshNamespace, kubectl } from '../helpers/cluster.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { eventually } from '../helpers/wait.ts';

const PROXY_ACCOUNT = 'system:serviceaccount:orrery-system:orrery-proxy';

/** `kubectl kustomize deploy/`: the objects `kubectl apply -k deploy/` would send. */
async function deployObjects(kubeconfig: string): Promise<Record<string, unknown>[]> {
  const built = await kubectl(kubeconfig, ['kustomize', 'deploy/']);
  if (built.code !== 0) throw new Error(`kubectl kustomize deploy/: ${built.stderr}`);
  return parseAllDocuments(built.stdout).map((d) => d.toJS() as Record<string, unknown>);
}

/** The namespaced objects need their namespace (the operator and runtime create it on a live cluster too). */
async function systemNamespace(kubeconfig: string): Promise<void> {
  const made = await kubectl(kubeconfig, ['create', 'namespace', 'orrery-system']);
  if (made.code !== 0 && !/AlreadyExists/.test(made.stderr)) throw new Error(made.stderr);
}

test('kubectl apply -k deploy/ passes server-side validation', async (t) => {
  const { kubeconfig } = await orreryCluster();
  await systemNamespace(kubeconfig);
  const result = await kubectl(kubeconfig, ['apply', '-k', 'deploy/', '--dry-run=server']);
  t.is(result.code, 0, result.stderr);
  for (const object of [
    'customresourcedefinition.apiextensions.k8s.io/instances.orrery.dev',
    'customresourcedefinition.apiextensions.k8s.io/services.orrery.dev',
    'clusterrole.rbac.authorization.k8s.io/orrery-operator',
    'clusterrole.rbac.authorization.k8s.io/orrery-runtime',
    'role.rbac.authorization.k8s.io/orrery-runtime',
    'rolebinding.rbac.authorization.k8s.io/orrery-runtime',
    'validatingadmissionpolicy.admissionregistration.k8s.io/orrery-runtime-node',
    'validatingadmissionpolicybinding.admissionregistration.k8s.io/orrery-runtime-node',
    'validatingadmissionpolicy.admissionregistration.k8s.io/orrery-runtime-host-account',
    'validatingadmissionpolicybinding.admissionregistration.k8s.io/orrery-runtime-host-account',
    'role.rbac.authorization.k8s.io/orrery-operator',
    'rolebinding.rbac.authorization.k8s.io/orrery-operator',
    'validatingadmissionpolicy.admissionregistration.k8s.io/orrery-operator-host-access',
    'validatingadmissionpolicybinding.admissionregistration.k8s.io/orrery-operator-host-access',
    'clusterrole.rbac.authorization.k8s.io/orrery-proxy',
    'clusterrolebinding.rbac.authorization.k8s.io/orrery-proxy',
    'role.rbac.authorization.k8s.io/orrery-proxy',
    'rolebinding.rbac.authorization.k8s.io/orrery-proxy',
    'serviceaccount/orrery-proxy',
    'validatingadmissionpolicy.admissionregistration.k8s.io/orrery-proxy-lease',
    'validatingadmissionpolicybinding.admissionregistration.k8s.io/orrery-proxy-lease',
    'clusterrole.rbac.authorization.k8s.io/orrery-users-view',
    'clusterrole.rbac.authorization.k8s.io/orrery-users-edit',
    'validatingadmissionpolicy.admissionregistration.k8s.io/orrery-replica-restart',
    'validatingadmissionpolicybinding.admissionregistration.k8s.io/orrery-replica-restart',
    'deployment.apps/orrery-operator',
    'daemonset.apps/orrery-runtime',
    'daemonset.apps/orrery-proxy',
  ]) {
    t.regex(
      result.stdout,
      new RegExp(`${object.replaceAll('.', '\\.')} (created|configured|unchanged) \\(server dry run\\)`),
    );
  }
});

test('the mesh proxy runs on every node beside the runtime, in the node network, with probes and resources', async (t) => {
  const { kubeconfig } = await orreryCluster();
  const objects = await deployObjects(kubeconfig);
  type Pod = {
    serviceAccountName: string;
    hostNetwork?: boolean;
    containers: {
      args: string[];
      ports: { name: string; containerPort: number }[];
      readinessProbe: { httpGet: { path: string; port: string } };
      livenessProbe: { httpGet: { path: string; port: string } };
      resources: { requests: Record<string, string>; limits: Record<string, string> };
      securityContext: { privileged?: boolean; capabilities: { drop: string[]; add: string[] } };
    }[];
  };
  const daemonSet = (name: string) =>
    objects.find((o) => o.kind === 'DaemonSet' && (o.metadata as { name: string }).name === name) as
      | { spec: { template: { spec: Pod } } }
      | undefined;
  const proxy = daemonSet('orrery-proxy')?.spec.template.spec;
  const runtime = daemonSet('orrery-runtime')?.spec.template.spec;
  if (!proxy || !runtime) return t.fail('no proxy or runtime DaemonSet in deploy/');
  t.is(proxy.serviceAccountName, 'orrery-proxy');
  // Both in the node's network namespace: the workloads (the runtime's children) reach the
  // virtual IPs the proxy binds on the node's loopback.
  t.true(proxy.hostNetwork);
  t.true(runtime.hostNetwork);
  const [container] = proxy.containers;
  if (!container) return t.fail('no proxy container');
  t.is(container.args[0], 'proxy');
  t.true(container.args.includes('--name=$(NODE_NAME)'));
  // The same-host fast path: its node's runtime, over TLS, with the shared token when it exists.
  t.true(container.args.includes('--runtime=https://$(HOST_IP):7777'));
  t.true(container.args.includes('--runtime-token-file=/var/run/orrery-runtime/token'));
  const tokenVolume = (
    proxy as unknown as { volumes: { name: string; secret?: { secretName: string; optional?: boolean } }[] }
  ).volumes.find((v) => v.secret?.secretName === 'orrery-runtime-token');
  t.true(tokenVolume?.secret?.optional, 'without the Secret the proxy still starts');
  const metrics = container.args.find((a) => a.startsWith('--metrics-listen='));
  t.is(
    metrics,
    `--metrics-listen=$(POD_IP):${container.ports.find((p) => p.name === 'metrics')?.containerPort}`,
  );
  t.like(container.readinessProbe.httpGet, { path: '/readyz', port: 'metrics' });
  t.like(container.livenessProbe.httpGet, { path: '/healthz', port: 'metrics' });
  t.truthy(container.resources.requests.cpu && container.resources.requests.memory);
  t.truthy(container.resources.limits.memory);
  t.falsy(container.securityContext.privileged);
  t.deepEqual(container.securityContext.capabilities, { drop: ['ALL'], add: ['NET_BIND_SERVICE'] });
});

test("the runtime runs workloads on the node's filesystem, and serves its API over TLS", async (t) => {
  const { kubeconfig } = await orreryCluster();
  type Pod = {
    containers: {
      args: string[];
      readinessProbe: { httpGet: { scheme?: string } };
      volumeMounts: { name: string; mountPath: string; mountPropagation?: string }[];
    }[];
    volumes: { name: string; hostPath?: { path: string } }[];
  };
  const runtime = (
    (await deployObjects(kubeconfig)).find(
      (o) => o.kind === 'DaemonSet' && (o.metadata as { name: string }).name === 'orrery-runtime',
    ) as { spec: { template: { spec: Pod } } } | undefined
  )?.spec.template.spec;
  const container = runtime?.containers[0];
  if (!runtime || !container) return t.fail('no runtime DaemonSet in deploy/');
  t.true(container.args.includes('--workload-root=/host'));
  const mount = container.volumeMounts.find((m) => m.mountPath === '/host');
  t.is(mount?.mountPropagation, 'HostToContainer');
  t.is(runtime.volumes.find((v) => v.name === mount?.name)?.hostPath?.path, '/');
  // --listen is the node's address (not loopback): TLS, and the kubelet probes it so.
  t.true(container.args.some((a) => a.startsWith('--listen=$(HOST_IP):')));
  t.is(container.readinessProbe.httpGet.scheme, 'HTTPS');
});

test("the proxy's account reads Services and EndpointSlices, writes its own Lease, and nothing else", async (t) => {
  const { kubeconfig } = await orreryCluster();
  await systemNamespace(kubeconfig);
  // The proxy's ServiceAccount, RBAC and admission policy, applied for real (deleted afterwards).
  const mine = (await deployObjects(kubeconfig)).filter(
    (o) => (o.metadata as { name: string }).name.startsWith('orrery-proxy') && o.kind !== 'DaemonSet',
  );
  t.deepEqual(mine.map((o) => o.kind).sort(), [
    'ClusterRole',
    'ClusterRoleBinding',
    'Role',
    'RoleBinding',
    'ServiceAccount',
    'ValidatingAdmissionPolicy',
    'ValidatingAdmissionPolicyBinding',
  ]);
  const manifest = mine.map((o) => stringify(o)).join('---\n');
  t.teardown(async () => {
    await kubectl(kubeconfig, ['delete', '-f', '-', '--ignore-not-found', '--wait=false'], {
      input: manifest,
    });
  });
  const applied = await kubectl(kubeconfig, ['apply', '-f', '-'], { input: manifest });
  t.is(applied.code, 0, applied.stderr);

  // The API server's authorizer, asked as the account (SubjectAccessReview through kubectl).
  const canI = async (...args: string[]) => {
    const r = await kubectl(kubeconfig, ['auth', 'can-i', ...args, `--as=${PROXY_ACCOUNT}`]);
    return r.stdout.trim();
  };
  const allowed = [
    ['get', 'services.orrery.dev', '--all-namespaces'],
    ['list', 'services.orrery.dev', '--all-namespaces'],
    ['watch', 'services.orrery.dev', '--all-namespaces'],
    ['list', 'endpointslices.orrery.dev', '--all-namespaces'],
    ['watch', 'endpointslices.orrery.dev', '--all-namespaces'],
    ['get', 'leases', '-n', 'orrery-system'],
    ['create', 'leases', '-n', 'orrery-system'],
    ['update', 'leases', '-n', 'orrery-system'],
    ['delete', 'leases', '-n', 'orrery-system'],
    ['get', 'namespaces/orrery-system'],
    ['list', 'hosts.orrery.dev'],
  ];
  const denied = [
    ['create', 'services.orrery.dev', '-n', 'default'],
    ['update', 'services.orrery.dev', '-n', 'default'],
    ['patch', 'services.orrery.dev', '-n', 'default'],
    ['delete', 'services.orrery.dev', '-n', 'default'],
    ['update', 'services.orrery.dev', '--subresource=status', '-n', 'default'],
    ['patch', 'services.orrery.dev', '--subresource=status', '-n', 'default'],
    ['create', 'replicas.orrery.dev', '-n', 'default'],
    ['update', 'replicas.orrery.dev', '-n', 'default'],
    ['delete', 'replicas.orrery.dev', '-n', 'default'],
    ['update', 'replicas.orrery.dev', '--subresource=status', '-n', 'default'],
    ['list', 'replicas.orrery.dev', '--all-namespaces'],
    ['create', 'endpointslices.orrery.dev', '-n', 'default'],
    ['update', 'endpointslices.orrery.dev', '-n', 'default'],
    ['update', 'hosts.orrery.dev'],
    ['watch', 'hosts.orrery.dev'],
    ['update', 'hosts.orrery.dev', '--subresource=status'],
    ['create', 'leases', '-n', 'default'],
    ['list', 'leases', '-n', 'orrery-system'],
    ['patch', 'leases', '-n', 'orrery-system'],
    ['get', 'namespaces/default'],
    ['create', 'namespaces'],
    ['list', 'secrets', '-n', 'orrery-system'],
    ['create', 'events', '-n', 'default'],
  ];
  for (const args of allowed) t.is(await canI(...args), 'yes', `can-i ${args.join(' ')}`);
  for (const args of denied) t.is(await canI(...args), 'no', `can-i ${args.join(' ')}`);

  // The admission policy: a token bound to a node's pod names the node, and holds the account to
  // proxy-<node>; without one, to proxy-*. Impersonated with the node's extra (as the token would
  // carry it), through a kubeconfig, since kubectl has no flag for it. Dry runs: nothing is written.
  const dir = mkdtempSync(join(tmpdir(), 'deploy-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const admin = parse(readFileSync(kubeconfig, 'utf8')) as { users: { user: Record<string, unknown> }[] };
  for (const u of admin.users) {
    u.user.as = PROXY_ACCOUNT;
    u.user['as-user-extra'] = { 'authentication.kubernetes.io/node-name': ['node-a'] };
  }
  const nodeA = join(dir, 'node-a');
  writeFileSync(nodeA, stringify(admin), { mode: 0o600 });
  const createLease = (name: string, config: string, as: string[] = []) =>
    kubectl(config, ['create', '--dry-run=server', '-f', '-', ...as], {
      input: stringify({
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name, namespace: 'orrery-system' },
        spec: { holderIdentity: name },
      }),
    });
  const denial = /ValidatingAdmissionPolicy 'orrery-proxy-lease' .*denied request/;
  // The policy takes effect once the API server's admission plugin has seen it.
  await eventually('the policy to deny the Lease of another node', async () => {
    const r = await createLease('proxy-node-b', nodeA);
    return r.code !== 0 && denial.test(r.stderr) && r;
  });
  t.is((await createLease('proxy-node-a', nodeA)).code, 0, 'its own Lease');
  const hostLease = await createLease('host-node-a', nodeA);
  t.regex(hostLease.stderr, /may write only the Lease proxy-node-a, not host-node-a/);
  const asAccount = [`--as=${PROXY_ACCOUNT}`];
  t.regex((await createLease('host-node-a', kubeconfig, asAccount)).stderr, denial, "a host's Lease");
  t.regex(
    (await createLease('orrery-operator', kubeconfig, asAccount)).stderr,
    denial,
    "the operator's Lease",
  );
  t.is((await createLease('proxy-anything', kubeconfig, asAccount)).code, 0, 'a token that names no node');
  // Other accounts are not the policy's business.
  t.is((await createLease('host-node-a', kubeconfig)).code, 0);

  // The proxy itself with a token of the account (TokenRequest), serving one fresh namespace so
  // that it does not serve other tests' Services: it syncs, renews its Lease and deletes it.
  const ns = await freshNamespace(t);
  const token = await kubectl(kubeconfig, ['create', 'token', 'orrery-proxy', '-n', 'orrery-system']);
  t.is(token.code, 0, token.stderr);
  const cluster = loadKubeConfig({ kubeconfig }).cluster;
  const kubeConfig = kubeConfigFromString(
    stringify({
      clusters: [
        {
          name: 'c',
          cluster: { server: cluster.server, 'certificate-authority-data': cluster.certificateAuthorityData },
        },
      ],
      users: [{ name: 'proxy', user: { token: token.stdout.trim() } }],
      contexts: [{ name: 'x', context: { cluster: 'c', user: 'proxy' } }],
      'current-context': 'x',
    }),
  );
  const name = `deploy-test-${ns.slice(-6)}`;
  const proxy = await startProxy({ kubeConfig, namespace: ns, name });
  t.teardown(() => proxy.stop({ drainTimeoutMs: 0 }));
  await proxy.ready;
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
  t.teardown(() => api.close());
  const leases = leaseClient(api, 'orrery-test');
  const lease = await eventually('the proxy Lease', () =>
    leases.get(proxyLeaseName(name), { namespace: 'orrery-system' }).catch(() => undefined),
  );
  t.like(lease.metadata?.annotations, { [PROXY_NAMESPACE_ANNOTATION]: ns, [PROXY_EJECTED_ANNOTATION]: '' });
  await proxy.stop({ drainTimeoutMs: 0 });
  const gone = await leases.get(proxyLeaseName(name), { namespace: 'orrery-system' }).then(
    () => false,
    (err: unknown) => isNotFound(err),
  );
  t.true(gone, 'the Lease is deleted when the proxy stops');
});
