// Installs (or updates) the Orrery CRDs with server-side apply and waits until the API server
// serves them. Used by `orrery up` and by the test harness.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ApiextensionsV1Api,
  type KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  type V1CustomResourceDefinition,
} from '@kubernetes/client-node';
import { parse } from 'yaml';

const crdDir = join(dirname(fileURLToPath(import.meta.url)));

/** The CRD manifests shipped in crds/ (generated from crds/src by `npm run gen`). */
export function loadCrds(): V1CustomResourceDefinition[] {
  return readdirSync(crdDir)
    .filter((name) => name.endsWith('.orrery.dev.yaml'))
    .sort()
    .map((name) => parse(readFileSync(join(crdDir, name), 'utf8')) as V1CustomResourceDefinition);
}

export async function installCrds(
  kubeConfig: KubeConfig,
  opts: { fieldManager?: string; timeoutMs?: number } = {},
): Promise<string[]> {
  const objects = KubernetesObjectApi.makeApiClient(kubeConfig);
  const extensions = kubeConfig.makeApiClient(ApiextensionsV1Api);
  const crds = loadCrds();
  for (const crd of crds) {
    await objects.patch(
      { apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', ...crd },
      undefined,
      undefined,
      opts.fieldManager ?? 'orrery',
      true,
      PatchStrategy.ServerSideApply,
    );
  }
  const names = crds.map((crd) => crd.metadata?.name as string);
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (const name of names) {
    for (;;) {
      const current = await extensions.readCustomResourceDefinition({ name });
      const established = current.status?.conditions?.some(
        (c) => c.type === 'Established' && c.status === 'True',
      );
      if (established) break;
      if (Date.now() > deadline) throw new Error(`CRD ${name} was not Established within the timeout`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return names;
}
