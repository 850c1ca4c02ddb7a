// deploy/ (kubectl apply -k) is accepted by a real API server: every manifest validates
// (server-side dry run), RBAC included.
import { spawnSync } from 'node:child_process';
import test from 'ava';
import { orreryCluster } from '../helpers/orrery.ts';

test('kubectl apply -k deploy/ passes server-side validation', async (t) => {
  const { kubeconfig } = await orreryCluster();
  // A server-side dry run creates nothing, so the namespaced objects need their namespace to exist
  // already (the operator and runtime create it on a live cluster too).
  spawnSync('kubectl', ['--kubeconfig', kubeconfig, 'create', 'namespace', 'orrery-system'], {
    encoding: 'utf8',
  });
  const result = spawnSync(
    'kubectl',
    ['--kubeconfig', kubeconfig, 'apply', '-k', 'deploy/', '--dry-run=server'],
    {
      encoding: 'utf8',
    },
  );
  t.is(result.status, 0, result.stderr);
  for (const object of [
    'customresourcedefinition.apiextensions.k8s.io/instances.orrery.dev',
    'clusterrole.rbac.authorization.k8s.io/orrery-operator',
    'clusterrole.rbac.authorization.k8s.io/orrery-runtime',
    'deployment.apps/orrery-operator',
    'daemonset.apps/orrery-runtime',
  ]) {
    t.regex(
      result.stdout,
      new RegExp(`${object.replaceAll('.', '\\.')} (created|configured|unchanged) \\(server dry run\\)`),
    );
  }
});
