// Installs (or updates) the Orrery CRDs with server-side apply and waits until the API server
// serves them. Used by `orrery up` and by the test harness.
//
// The manifests are sent as they are (JSON), not through @kubernetes/client-node's typed
// serializer, which drops schema keys it maps under other names (`default` becomes `_default`).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import {
  KubeApi,
  KubeApiError,
  type KubeConfig,
  type KubeObject,
  resourceClient,
  sleep,
} from '../kube/index.ts';
import { packagePath } from '../platform/package.ts';

const crdDir = packagePath('crds');

interface CustomResourceDefinition extends KubeObject {
  spec?: { group: string; names: { plural: string }; versions: { name: string; storage: boolean }[] };
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
        await sleep(50);
      }
    }
    for (const crd of crds) await untilWatchable(api, crd, deadline);
    return names;
  } finally {
    api.close();
  }
}

/**
 * Established means the API server serves the kind, not that its watch cache is filled: until
 * it is, a watch (and a list with a selector) is answered 429 "storage is (re)initializing", and
 * the informers of whoever starts right after the install (the operator, the host agents) would
 * log that as a failure. A watch that opens is the readiness that matters to them.
 */
async function untilWatchable(api: KubeApi, crd: CustomResourceDefinition, deadline: number): Promise<void> {
  const spec = crd.spec;
  const version = spec?.versions.find((v) => v.storage)?.name;
  if (!spec || !version) throw new Error(`CRD ${crd.metadata?.name} has no storage version`);
  const path = `/apis/${spec.group}/${version}/${spec.names.plural}`;
  for (;;) {
    const opened = new AbortController();
    try {
      await api.watchStream({
        path,
        // Matches nothing: the stream opens without replaying the existing objects.
        query: { fieldSelector: 'metadata.name=orrery-install-probe', timeoutSeconds: 1 },
        signal: opened.signal,
        onOpen: () => opened.abort(),
        onEvent: () => {},
      });
      return;
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 429)) throw err;
      if (Date.now() > deadline)
        throw new Error(`${path} was not watchable within the timeout`, { cause: err });
    }
    await sleep(50);
  }
}
