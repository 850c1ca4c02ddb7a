import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { KubeConfig, KubeConfigError, type KubeConfigFile, parseKubeConfig } from './kubeconfig.ts';

/**
 * The one place that decides which cluster a component talks to. Order, as kubectl
 * and client-go's `clientcmd` do it:
 *   1. an explicit kubeconfig path (CLI `--kubeconfig`),
 *   2. `$KUBECONFIG` (a list of files, merged as kubectl merges them),
 *   3. in-cluster service account (KUBERNETES_SERVICE_HOST + the mounted token),
 *   4. `~/.kube/config`.
 */
export interface LoadKubeConfigOptions {
  /** Path to a kubeconfig file; wins over everything else. */
  kubeconfig?: string | undefined;
  /** Context name to use instead of the file's current-context. */
  context?: string | undefined;
  /** Environment to read (`KUBECONFIG`, `KUBERNETES_SERVICE_*`, `HOME`); defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /** Where the service account is mounted in a pod; tests point it elsewhere. */
  serviceAccountDir?: string;
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export function loadKubeConfig(opts: LoadKubeConfigOptions = {}): KubeConfig {
  const env = opts.env ?? process.env;
  const select = { context: opts.context };
  if (opts.context !== undefined && (typeof opts.context !== 'string' || opts.context.length === 0)) {
    throw new TypeError(`context must be a non-empty context name, got ${JSON.stringify(opts.context)}`);
  }
  if (opts.kubeconfig !== undefined) {
    if (typeof opts.kubeconfig !== 'string' || opts.kubeconfig.length === 0) {
      throw new TypeError(`kubeconfig must be a non-empty file path, got ${JSON.stringify(opts.kubeconfig)}`);
    }
    if (!existsSync(opts.kubeconfig)) {
      throw new KubeConfigError(`kubeconfig file ${opts.kubeconfig} does not exist`);
    }
    return new KubeConfig([readKubeConfigFile(opts.kubeconfig)], select);
  }
  if (env.KUBECONFIG) {
    // kubectl skips missing files in the list and reads a file named twice once.
    const files = [...new Set(env.KUBECONFIG.split(':'))].filter((f) => f.length > 0 && existsSync(f));
    if (files.length === 0) throw new KubeConfigError(`KUBECONFIG=${env.KUBECONFIG} names no existing file`);
    return new KubeConfig(files.map(readKubeConfigFile), select);
  }
  const serviceAccount = opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  if (env.KUBERNETES_SERVICE_HOST && existsSync(join(serviceAccount, 'token'))) {
    return new KubeConfig([inClusterConfig(env, serviceAccount)], select);
  }
  const home = join(env.HOME || homedir(), '.kube', 'config');
  if (existsSync(home)) return new KubeConfig([readKubeConfigFile(home)], select);
  throw new KubeConfigError(
    'no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, run in-cluster, or create ~/.kube/config',
  );
}

function readKubeConfigFile(path: string): KubeConfigFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new KubeConfigError(`kubeconfig ${path}: cannot read: ${(err as Error).message}`, { cause: err });
  }
  return parseKubeConfig(text, path);
}

/**
 * client-go's InClusterConfig: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the
 * mounted CA, and the token *file* (re-read, the kubelet rotates projected tokens).
 */
function inClusterConfig(env: NodeJS.ProcessEnv, dir: string): KubeConfigFile {
  const host = env.KUBERNETES_SERVICE_HOST as string;
  const port = env.KUBERNETES_SERVICE_PORT;
  const source = `in-cluster service account (${dir})`;
  if (!port) {
    throw new KubeConfigError(
      `${source}: KUBERNETES_SERVICE_HOST is set but KUBERNETES_SERVICE_PORT is not; both must be`,
    );
  }
  const name = 'in-cluster';
  const ca = join(dir, 'ca.crt');
  const namespaceFile = join(dir, 'namespace');
  const namespace = existsSync(namespaceFile) ? readFileSync(namespaceFile, 'utf8').trim() : undefined;
  return {
    source,
    clusters: [
      {
        name,
        source,
        server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
        certificateAuthority: existsSync(ca) ? ca : undefined,
        insecureSkipTlsVerify: false,
      },
    ],
    users: [{ name, source, tokenFile: join(dir, 'token') }],
    contexts: [{ name, source, cluster: name, user: name, namespace: namespace || undefined }],
    currentContext: name,
  };
}

/**
 * Load from a kubeconfig given as text. Relative paths in it are resolved against `baseDir`
 * (default: the working directory).
 */
export function kubeConfigFromString(
  text: string,
  opts: { context?: string; baseDir?: string } = {},
): KubeConfig {
  const baseDir = opts.baseDir ?? process.cwd();
  const file = parseKubeConfig(text, '(from a string)', isAbsolute(baseDir) ? baseDir : resolve(baseDir));
  return new KubeConfig([file], { context: opts.context });
}
