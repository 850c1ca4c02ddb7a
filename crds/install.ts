// Installs (or updates) the Orrery CRDs with server-side apply and waits until the API server
// serves them. Used by `orrery up` and by the test harness.
//
// The manifests are sent as they are (JSON), not through @kubernetes/client-node's typed
// serializer, which drops schema keys it maps under other names (`default` becomes `_default`).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { KubeApi, type KubeObject, resourceClient } from '../kube/index.ts';
import { packagePath } from '../platform/package.ts';

const crdDir = packagePath('crds');

interface CustomResourceDefinition extends KubeObject {
  status?: { conditions?: { type: string; status: string }[] };
}

const CRDS = {
  group: 'apiextensions.k8s.io',
  version: 'v1',
  plural: 'customresourcedefinitions',
  kind: 'CustomResourceDefinition',
  namespaced: false,
} as const;

/** The CRD manifests shipped in crds/ (generated from crds/src by `npm run gen`). */
export function loadCrds(): CustomResourceDefinition[] {
  return readdirSync(crdDir)
    .filter((name) => name.endsWith('.orrery.dev.yaml'))
    .sort()
    .map((name) => parse(readFileSync(join(crdDir, name), 'utf8')) as CustomResourceDefinition);
}

export async function installCrds(
  kubeConfig: KubeConfig,
  opts: { fieldManager?: string; timeoutMs?: number } = {},
): Promise<string[]> {
  const api = await KubeApi.fromKubeConfig(kubeConfig);
  try {
    const client = resourceClient<CustomResourceDefinition>(api, CRDS, opts.fieldManager ?? 'orrery');
    const crds = loadCrds();
    for (const crd of crds) await client.apply(crd, { force: true });
    const names = crds.map((crd) => crd.metadata?.name as string);
    const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
    for (const name of names) {
      for (;;) {
        const current = await client.get(name);
        if (current.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
        if (Date.now() > deadline) throw new Error(`CRD ${name} was not Established within the timeout`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    return names;
  } finally {
    api.close();
  }
}
