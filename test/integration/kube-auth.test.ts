// Each way kube/ authenticates, against the real API server: the admin token given in the
// kubeconfig, read from a tokenFile, printed by an exec credential plugin (through client-node),
// and the admin client certificate, with the CA and certificate files named by relative paths;
// a wrong token is refused with 401.
import { chmodSync, existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { KubeApi } from '../../kube/api.ts';
import { loadKubeConfig } from '../../kube/config.ts';
import { isUnauthorized } from '../../kube/errors.ts';
import type { KubeConfig } from '../../kube/kubeconfig.ts';
import { testCluster } from '../helpers/cluster.ts';

/**
 * A KubeApi from a kubeconfig written in a fresh directory, for the test cluster: `cluster` and
 * `user` are YAML flow mappings, made from the admin kubeconfig.
 */
async function apiWith(
  t: ExecutionContext,
  user: (dir: string, admin: KubeConfig) => string,
  cluster = (_dir: string, admin: KubeConfig) =>
    `{server: "${admin.cluster.server}", certificate-authority-data: ${admin.cluster.certificateAuthorityData}}`,
): Promise<KubeApi> {
  const admin = loadKubeConfig({ kubeconfig: (await testCluster()).kubeconfig });
  const dir = mkdtempSync(join(tmpdir(), 'kube-auth-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'config');
  writeFileSync(
    file,
    `clusters: [{name: c, cluster: ${cluster(dir, admin)}}]
users: [{name: u, user: ${user(dir, admin)}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
  );
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig: file }));
  t.teardown(() => api.close());
  return api;
}

const listNamespaces = async (api: KubeApi) =>
  (await api.request<{ items: unknown[] }>({ method: 'GET', path: '/api/v1/namespaces' })).items;

test('a bearer token from a tokenFile', async (t) => {
  const api = await apiWith(t, (dir, admin) => {
    writeFileSync(join(dir, 'token'), `${admin.user.token}\n`);
    return '{tokenFile: token}';
  });
  t.true((await listNamespaces(api)).length > 0);
});

test('a bearer token printed by an exec credential plugin', async (t) => {
  const api = await apiWith(t, (dir, admin) => {
    const credential = JSON.stringify({
      apiVersion: 'client.authentication.k8s.io/v1',
      kind: 'ExecCredential',
      status: { token: admin.user.token },
    });
    writeFileSync(join(dir, 'plugin'), `#!/bin/sh\nprintf '%s' '${credential}'\n`);
    chmodSync(join(dir, 'plugin'), 0o755);
    return '{exec: {apiVersion: client.authentication.k8s.io/v1, command: ./plugin}}';
  });
  t.true((await listNamespaces(api)).length > 0);
});

test('the admin client certificate, with the CA and the key pair named by relative paths', async (t) => {
  const pki = join(dirname((await testCluster()).kubeconfig), 'pki');
  if (!existsSync(join(pki, 'admin.key'))) {
    t.pass(`no control plane PKI next to the kubeconfig (${pki}): nothing to test with`);
    return;
  }
  const api = await apiWith(
    t,
    (dir) => {
      symlinkSync(pki, join(dir, 'pki'));
      return '{client-certificate: pki/admin.crt, client-key: pki/admin.key}';
    },
    (_dir, admin) => `{server: "${admin.cluster.server}", certificate-authority: pki/ca.crt}`,
  );
  t.true((await listNamespaces(api)).length > 0);
});

test('a wrong token is refused with 401', async (t) => {
  const api = await apiWith(t, () => '{token: not-the-token}');
  const err = await t.throwsAsync(listNamespaces(api));
  t.true(isUnauthorized(err), String(err));
});
