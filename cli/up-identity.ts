// Each host `orrery up` starts gets its own identity, the one a runtime has on a real cluster
// (deploy/): the orrery-runtime ServiceAccount with a token that names its node in
// `authentication.kubernetes.io/node-name`. On a cluster the kubelet's pod-bound token carries
// it; here there are no pods, so each host has a Node object, which exists only to anchor its
// token (TokenRequest bound to the Node: the API server puts the node's name and uid in the
// token and stops accepting it once that Node is gone). The RBAC and the admission policy that
// read it are deploy/rbac.yaml's own, installed as they are (and deploy/policy-workloads.yaml's
// policies on workloads, so `up` refuses by default what a cluster does): a host's agent can write only its
// Host, its Lease and the status and finalizers of the Replicas bound to it. `up`'s mesh proxy
// runs as deploy/'s orrery-proxy account too (a token that names no node: its Lease must be
// proxy-*), which reads Services and EndpointSlices and writes nothing else; the operator as
// deploy/'s orrery-operator account. Only `up` itself keeps the admin credentials (to install the
// CRDs and these objects, and to issue the tokens).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { SYSTEM_NAMESPACE } from '../crds/labels.ts';
import { HOSTS as HOSTS_RESOURCE } from '../crds/resources.ts';
import {
  ensureNamespace,
  isAlreadyExists,
  isForbidden,
  KubeApi,
  type KubeObject,
  loadKubeConfig,
  type ResourceDescriptor,
  resourceClient,
} from '../kube/index.ts';
import { packagePath } from '../platform/package.ts';
import { privateDir, writePrivateFile } from '../platform/private-fs.ts';

/** The runtimes' account in deploy/rbac.yaml. */
export const RUNTIME_ACCOUNT = 'orrery-runtime';
/** The mesh proxy's account in deploy/rbac.yaml. */
export const PROXY_ACCOUNT = 'orrery-proxy';
/** The operator's account in deploy/rbac.yaml. */
export const OPERATOR_ACCOUNT = 'orrery-operator';

/** A host's token lives a day and is renewed well before: agents re-read the file each minute. */
const TOKEN_SECONDS = 24 * 3600;

const FIELD_MANAGER = 'orrery-up';

const KINDS: Record<string, ResourceDescriptor> = {
  ServiceAccount: {
    group: '',
    version: 'v1',
    plural: 'serviceaccounts',
    kind: 'ServiceAccount',
    namespaced: true,
  },
  ClusterRole: rbac('clusterroles', 'ClusterRole', false),
  ClusterRoleBinding: rbac('clusterrolebindings', 'ClusterRoleBinding', false),
  Role: rbac('roles', 'Role', true),
  RoleBinding: rbac('rolebindings', 'RoleBinding', true),
  ValidatingAdmissionPolicy: admission('validatingadmissionpolicies', 'ValidatingAdmissionPolicy'),
  ValidatingAdmissionPolicyBinding: admission(
    'validatingadmissionpolicybindings',
    'ValidatingAdmissionPolicyBinding',
  ),
};
const NODES: ResourceDescriptor = {
  group: '',
  version: 'v1',
  plural: 'nodes',
  kind: 'Node',
  namespaced: false,
};

function rbac(plural: string, kind: string, namespaced: boolean): ResourceDescriptor {
  return { group: 'rbac.authorization.k8s.io', version: 'v1', plural, kind, namespaced };
}

function admission(plural: string, kind: string): ResourceDescriptor {
  return { group: 'admissionregistration.k8s.io', version: 'v1', plural, kind, namespaced: false };
}

/** deploy/rbac.yaml's objects whose names start with `account`: its ServiceAccount, roles, bindings and policies. */
export function accessObjects(account: string): KubeObject[] {
  const text = readFileSync(packagePath('deploy', 'rbac.yaml'), 'utf8');
  return parseAllDocuments(text)
    .map((d) => d.toJS() as KubeObject)
    .filter((o) => o?.metadata?.name?.startsWith(account));
}

/** deploy/rbac.yaml's objects for the runtimes: their account, roles, bindings and node policy. */
export function runtimeAccessObjects(): KubeObject[] {
  return accessObjects(RUNTIME_ACCOUNT);
}

/**
 * deploy/policy-workloads.yaml's admission policies, all of them: what a cluster refuses to
 * workloads by default (host users, host paths) is refused under `orrery up` too.
 */
export function workloadPolicyObjects(): KubeObject[] {
  const text = readFileSync(packagePath('deploy', 'policy-workloads.yaml'), 'utf8');
  return parseAllDocuments(text)
    .map((d) => d.toJS() as KubeObject)
    .filter((o) => o?.kind !== undefined);
}

/**
 * deploy/rbac-users.yaml: the ClusterRoles `view`, `edit` and `admin` aggregate for Orrery's kinds,
 * and the policy that holds a user's Replica write to the restart annotation.
 */
export function userAccessObjects(): KubeObject[] {
  const text = readFileSync(packagePath('deploy', 'rbac-users.yaml'), 'utf8');
  return parseAllDocuments(text)
    .map((d) => d.toJS() as KubeObject)
    .filter((o) => o?.kind !== undefined);
}

/**
 * Applies the runtimes', the mesh proxy's and the operator's accounts, RBAC and admission
 * policies, the workload policies and the users' roles (server-side apply, as admin).
 */
export async function installAccess(api: KubeApi): Promise<void> {
  await ensureNamespace(api, SYSTEM_NAMESPACE, FIELD_MANAGER);
  for (const object of [
    ...runtimeAccessObjects(),
    ...accessObjects(PROXY_ACCOUNT),
    ...accessObjects(OPERATOR_ACCOUNT),
    ...workloadPolicyObjects(),
    ...userAccessObjects(),
  ]) {
    const kind = object.kind ?? '';
    const descriptor = KINDS[kind];
    if (!descriptor) throw new Error(`deploy/: ${kind} ${object.metadata?.name} is not a kind up installs`);
    const namespace = descriptor.namespaced ? SYSTEM_NAMESPACE : undefined;
    await resourceClient(api, descriptor, FIELD_MANAGER).apply(
      { ...object, metadata: { ...object.metadata, ...(namespace ? { namespace } : {}) } },
      { force: true },
    );
  }
}

/** The Node object a host's token is bound to: created when missing. */
async function ensureNode(api: KubeApi, host: string): Promise<{ name: string; uid: string }> {
  const nodes = resourceClient(api, NODES, FIELD_MANAGER);
  let node: KubeObject;
  try {
    node = await nodes.create({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: host, labels: { 'orrery.dev/up-host': 'true' } },
    });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
    node = await nodes.get(host);
  }
  return { name: host, uid: node.metadata?.uid as string };
}

/** A token of `account` in orrery-system (TokenRequest), bound to `node` when given. */
async function requestToken(
  api: KubeApi,
  account: string,
  node: { name: string; uid: string } | undefined,
  seconds = TOKEN_SECONDS,
): Promise<string> {
  const answer = await api.request<{ status: { token: string } }>({
    method: 'POST',
    path: `/api/v1/namespaces/${SYSTEM_NAMESPACE}/serviceaccounts/${account}/token`,
    body: {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec: {
        expirationSeconds: seconds,
        ...(node
          ? { boundObjectRef: { apiVersion: 'v1', kind: 'Node', name: node.name, uid: node.uid } }
          : {}),
      },
    },
  });
  return answer.status.token;
}

/** A token of the runtimes' account bound to the host's Node. */
export async function requestHostToken(api: KubeApi, host: string, seconds = TOKEN_SECONDS): Promise<string> {
  return requestToken(api, RUNTIME_ACCOUNT, await ensureNode(api, host), seconds);
}

export interface Credentials {
  /** A kubeconfig: the cluster of `up`'s, the user a token file beside it. */
  kubeconfig: string;
  tokenFile: string;
}

/** Where a host's credentials live: DIR/credentials/hosts/HOST, readable by `up`'s user only. */
export function hostCredentialsPaths(dataDir: string, host: string): Credentials {
  return credentialsPaths(dataDir, join('hosts', host));
}

function credentialsPaths(dataDir: string, name: string): Credentials {
  const dir = join(dataDir, 'credentials', name);
  return { kubeconfig: join(dir, 'kubeconfig'), tokenFile: join(dir, 'token') };
}

type Cluster = { server: string; certificateAuthorityData?: string | undefined };

/**
 * Writes (or renews) the token and kubeconfig of an account that names no node (the mesh proxy's,
 * the operator's), in DIR/credentials/<name>.
 */
export async function writeAccountCredentials(
  api: KubeApi,
  cluster: Cluster,
  dataDir: string,
  name: 'proxy' | 'operator',
): Promise<Credentials> {
  const account = name === 'proxy' ? PROXY_ACCOUNT : OPERATOR_ACCOUNT;
  const paths = credentialsPaths(dataDir, name);
  writeCredentials(paths, cluster, account, await requestToken(api, account, undefined), dataDir);
  return paths;
}

/**
 * Writes (or renews) a host's token and its kubeconfig, which names the token file: the agent
 * re-reads it, so a renewed token is used without a restart.
 */
export async function writeHostCredentials(
  api: KubeApi,
  cluster: Cluster,
  dataDir: string,
  host: string,
): Promise<Credentials> {
  const paths = hostCredentialsPaths(dataDir, host);
  writeCredentials(paths, cluster, host, await requestHostToken(api, host), dataDir);
  return paths;
}

function writeCredentials(
  paths: Credentials,
  cluster: Cluster,
  user: string,
  token: string,
  dataDir: string,
): void {
  // Every directory from DIR/credentials down: `up`'s user's only.
  for (
    let dir = dirname(paths.kubeconfig);
    dir.startsWith(join(dataDir, 'credentials'));
    dir = dirname(dir)
  ) {
    privateDir(dir);
  }
  writePrivateFile(paths.tokenFile, `${token}\n`);
  // JSON (a kubeconfig may be JSON, as kubectl reads it): the daemon reading it then never loads
  // a YAML parser (kube/kubeconfig.ts).
  writePrivateFile(
    paths.kubeconfig,
    `${JSON.stringify(
      {
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name: 'orrery-local',
            cluster: {
              server: cluster.server,
              ...(cluster.certificateAuthorityData
                ? { 'certificate-authority-data': cluster.certificateAuthorityData }
                : {}),
            },
          },
        ],
        users: [{ name: user, user: { tokenFile: paths.tokenFile } }],
        contexts: [{ name: user, context: { cluster: 'orrery-local', user } }],
        'current-context': user,
      },
      null,
      2,
    )}\n`,
  );
}

/**
 * Waits until the API server enforces the node policy (deploy/rbac.yaml orrery-runtime-node) for
 * the runtimes' account: an admission policy takes effect a moment after it is written, and no
 * host agent may start in that moment. Probed with a host's own credentials: a dry-run create of
 * a Host by another name must be refused. Rejects after `timeoutMs`, saying so.
 */
export async function untilNodePolicyEnforced(credentials: Credentials, timeoutMs = 30_000): Promise<void> {
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig: credentials.kubeconfig }));
  const hosts = resourceClient(api, HOSTS_RESOURCE, FIELD_MANAGER);
  const deadline = performance.now() + timeoutMs;
  try {
    for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
      try {
        await hosts.create(
          { apiVersion: 'orrery.dev/v1alpha1', kind: 'Host', metadata: { name: 'orrery-up-policy-probe' } },
          { dryRun: true },
        );
      } catch (err) {
        // Refused by the policy itself; RBAC not yet in force refuses too, and is waited out.
        if (
          isForbidden(err) &&
          /ValidatingAdmissionPolicy 'orrery-runtime-node'/.test((err as Error).message)
        )
          return;
        if (!isForbidden(err)) throw err;
      }
      if (performance.now() > deadline) {
        throw new Error(
          `the admission policy orrery-runtime-node is not enforced ${timeoutMs / 1000} s after it was written: is ValidatingAdmissionPolicy enabled in the API server?`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  } finally {
    api.close();
  }
}
