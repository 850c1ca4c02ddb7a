// What `orrery up` asks of the API server (the CRDs, deploy/'s RBAC and policies, the
// credentials of its daemons), done by a short-lived child process, `orrery up-setup` (hidden):
// `up` itself stays alive as long as everything it started, and a process keeps every module it
// ever loaded; the API client, the YAML parser and TLS would cost `up` ~40 MiB of resident memory
// for hours to use them for a second at the start and once every six hours (token renewal).
// At the start it also has the daemons' code compiled into Node's compile cache (daemons.ts).
//
// The child prints one JSON line on stdout, the paths of the credentials it wrote; its log lines
// go to stderr as `up`'s do.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { packagePath } from '../platform/package.ts';
import { compileDaemons } from './daemons.ts';
import type { Credentials } from './up-identity.ts';

/** How often `up` renews its daemons' tokens (they are valid for 24 h, up-identity.ts). */
export const TOKEN_RENEW_MS = 6 * 3600 * 1000;

/**
 * - `crds`: install the CRDs (`up --api-only`);
 * - `start`: the CRDs, deploy/'s access objects, every daemon's credentials, and wait until the
 *   API server holds a host to its own node;
 * - `renew`: the credentials again (their tokens expire).
 */
export type SetupMode = 'crds' | 'start' | 'renew';

export interface SetupRequest {
  mode: SetupMode;
  /** The control plane's admin kubeconfig. */
  kubeconfig: string;
  dataDir: string;
  hosts: string[];
}

export interface SetupResult {
  proxy: Credentials;
  operator: Credentials;
  hosts: Credentials[];
}

/** Runs `orrery up-setup` and resolves with what it wrote; rejects with its last words. */
export function runSetup(request: SetupRequest): Promise<SetupResult | undefined> {
  const args = [
    packagePath('bin', 'orrery.js'),
    'up-setup',
    '--mode',
    request.mode,
    '--kubeconfig',
    request.kubeconfig,
    '--data-dir',
    request.dataDir,
    ...request.hosts.flatMap((h) => ['--host', h]),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    /** Its last lines that were not progress: a failure's explanation. */
    const lastWords: string[] = [];
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    createInterface({ input: child.stderr }).on('line', (line) => {
      // Its progress lines are up's own.
      if (line.startsWith('[up] ')) console.error(line);
      else if (line.trim() !== '') {
        lastWords.push(line);
        if (lastWords.length > 20) lastWords.shift();
      }
    });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code === 0) {
        const line = out.trim().split('\n').at(-1) ?? '';
        resolve(line === '' ? undefined : (JSON.parse(line) as SetupResult));
        return;
      }
      reject(new Error(`${lastWords.join('\n') || 'it failed'} (orrery up-setup exited ${signal ?? code})`));
    });
  });
}

/** `orrery up-setup`: see the module's comment. */
export async function setup(request: SetupRequest): Promise<void> {
  const log = (message: string) => console.error(`[up] ${message}`);
  // The daemons start right after this process ends: they find their code compiled (daemons.ts).
  const compiled = request.mode === 'start' ? compileDaemons() : Promise.resolve();
  compiled.catch(() => {}); // awaited below; a failure before that is the one to report
  const [{ installCrds }, { KubeApi, loadKubeConfig }, identity] = await Promise.all([
    import('../crds/install.ts'),
    import('../kube/index.ts'),
    import('./up-identity.ts'),
  ]);
  const adminConfig = loadKubeConfig({ kubeconfig: request.kubeconfig });
  if (request.mode !== 'renew') {
    const crds = await installCrds(adminConfig);
    log(`installed CRDs: ${crds.join(', ')}`);
  }
  if (request.mode === 'crds') return;
  const api = await KubeApi.fromKubeConfig(adminConfig);
  try {
    if (request.mode === 'start') await identity.installAccess(api);
    // Each host agent runs as the runtimes' account with a token bound to its own node, held by
    // deploy/'s RBAC and admission policy to its own Host, Lease and Replicas; the mesh proxy as
    // deploy/'s read-only proxy account, the operator as deploy/'s operator account (up-identity.ts).
    const [proxy, operator, ...hosts] = await Promise.all([
      identity.writeAccountCredentials(api, adminConfig.cluster, request.dataDir, 'proxy'),
      identity.writeAccountCredentials(api, adminConfig.cluster, request.dataDir, 'operator'),
      ...request.hosts.map((name) =>
        identity.writeHostCredentials(api, adminConfig.cluster, request.dataDir, name),
      ),
    ]);
    // Not one agent before the API server holds them to their own node.
    if (request.mode === 'start' && hosts[0]) await identity.untilNodePolicyEnforced(hosts[0]);
    const result: SetupResult = { proxy, operator, hosts };
    await compiled;
    console.log(JSON.stringify(result));
  } finally {
    api.close();
  }
}
