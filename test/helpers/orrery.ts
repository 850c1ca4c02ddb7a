// The test control plane with the Orrery CRDs installed (once per test process; a run-wide
// control plane from hack/test.ts already has them, and installing again is a no-op apply).
import { installCrds } from '../../crds/install.ts';
import { loadKubeConfig } from '../../kube/index.ts';
import { type TestCluster, testCluster } from './cluster.ts';

let ready: Promise<TestCluster> | undefined;

export function orreryCluster(): Promise<TestCluster> {
  ready ??= (async () => {
    const cluster = await testCluster();
    await installCrds(loadKubeConfig({ kubeconfig: cluster.kubeconfig }));
    return cluster;
  })();
  return ready;
}
