// deploy/policy-workloads.yaml against the real API server: an Instance that asks for host users
// (isolation.hostUsers: true, root on the node) is refused unless its namespace allows it, and a
// default Instance (its own user namespace) is accepted anywhere.
import test from 'ava';
import { stringify } from 'yaml';
import { freshNamespace, kubectl } from '../helpers/cluster.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { eventually } from '../helpers/wait.ts';

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
  const { kubeconfig } = await orreryCluster();
  const applied = await kubectl(kubeconfig, ['apply', '-f', 'deploy/policy-workloads.yaml']);
  t.is(applied.code, 0, applied.stderr);
  t.teardown(async () => {
    await kubectl(kubeconfig, ['delete', '-f', 'deploy/policy-workloads.yaml', '--ignore-not-found']);
  });
  const plain = await freshNamespace(t);
  const allowed = await freshNamespace(t);
  const labelled = await kubectl(kubeconfig, [
    'label',
    'namespace',
    allowed,
    'orrery.dev/host-users=allowed',
  ]);
  t.is(labelled.code, 0, labelled.stderr);
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
