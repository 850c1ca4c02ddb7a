import { existsSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';

/**
 * The one place that decides which cluster a component talks to. Order, as kubectl
 * and client-go's `clientcmd` do it:
 *   1. an explicit kubeconfig path (CLI `--kubeconfig`),
 *   2. `$KUBECONFIG` (first file of the list; client-node merges them),
 *   3. in-cluster service account (KUBERNETES_SERVICE_HOST + the mounted token),
 *   4. `~/.kube/config`.
 */
export interface LoadKubeConfigOptions {
  /** Path to a kubeconfig file; wins over everything else. */
  kubeconfig?: string | undefined;
  /** Context name to use instead of the file's current-context. */
  context?: string | undefined;
  /** Environment to read (`KUBECONFIG`, `KUBERNETES_SERVICE_HOST`); defaults to process.env. */
  env?: NodeJS.ProcessEnv;
}

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

export function loadKubeConfig(opts: LoadKubeConfigOptions = {}): KubeConfig {
  const env = opts.env ?? process.env;
  const kc = new KubeConfig();
  if (opts.kubeconfig !== undefined) {
    if (typeof opts.kubeconfig !== 'string' || opts.kubeconfig.length === 0) {
      throw new TypeError(`kubeconfig must be a non-empty file path, got ${JSON.stringify(opts.kubeconfig)}`);
    }
    if (!existsSync(opts.kubeconfig)) {
      throw new Error(`kubeconfig file ${opts.kubeconfig} does not exist`);
    }
    kc.loadFromFile(opts.kubeconfig);
  } else if (env.KUBECONFIG) {
    const files = env.KUBECONFIG.split(':').filter((f) => f.length > 0 && existsSync(f));
    if (files.length === 0) throw new Error(`KUBECONFIG=${env.KUBECONFIG} names no existing file`);
    mergeKubeConfigFiles(kc, files);
  } else if (env.KUBERNETES_SERVICE_HOST && existsSync(SERVICE_ACCOUNT_TOKEN)) {
    kc.loadFromCluster();
  } else {
    kc.loadFromDefault();
  }
  if (opts.context !== undefined) kc.setCurrentContext(opts.context);
  if (!kc.getCurrentCluster()) {
    throw new Error(
      'no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, run in-cluster, or create ~/.kube/config',
    );
  }
  return kc;
}

/**
 * kubectl's merge of a KUBECONFIG list: the first file to define a cluster, user or context name
 * wins, and current-context comes from the first file that sets one
 * (https://kubernetes.io/docs/concepts/configuration/organize-cluster-access-kubeconfig/#merging-kubeconfig-files).
 * client-node's own merge throws on duplicate names instead.
 */
function mergeKubeConfigFiles(kc: KubeConfig, files: string[]): void {
  const clusters = new Map<string, KubeConfig['clusters'][number]>();
  const users = new Map<string, KubeConfig['users'][number]>();
  const contexts = new Map<string, KubeConfig['contexts'][number]>();
  let currentContext = '';
  for (const file of files) {
    const one = new KubeConfig();
    one.loadFromFile(file);
    for (const c of one.clusters) if (!clusters.has(c.name)) clusters.set(c.name, c);
    for (const u of one.users) if (!users.has(u.name)) users.set(u.name, u);
    for (const c of one.contexts) if (!contexts.has(c.name)) contexts.set(c.name, c);
    if (!currentContext && one.currentContext) currentContext = one.currentContext;
  }
  kc.loadFromOptions({
    clusters: [...clusters.values()],
    users: [...users.values()],
    contexts: [...contexts.values()],
    currentContext,
  });
}

/** Load from a kubeconfig given as text (the local control plane hands one over as a string or a path). */
export function kubeConfigFromString(yaml: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(yaml);
  return kc;
}
