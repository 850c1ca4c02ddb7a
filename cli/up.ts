// `orrery up`: the one-machine quick start. Starts the local control plane on a persistent data
// directory, installs the CRDs and prints the KUBECONFIG line; stops cleanly on Ctrl-C.
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { installCrds } from '../crds/install.ts';
import { ensureControlPlaneBinary, startControlPlane } from '../hack/controlplane/controlplane.ts';
import { untilSignal } from './signals.ts';

export interface UpOptions {
  dataDir?: string;
  port: number;
}

export function defaultDataDir(): string {
  const stateHome = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(stateHome, 'orrery', 'controlplane');
}

export async function up(options: UpOptions): Promise<void> {
  const log = (message: string) => console.error(`[up] ${message}`);
  const dataDir = options.dataDir ?? defaultDataDir();
  const binary = await ensureControlPlaneBinary({ log });
  if (binary.built) log(`built the control plane in ${(binary.buildMs / 1000).toFixed(1)} s`);
  const controlPlane = await startControlPlane({ dataDir, port: options.port, log });
  log(`control plane up in ${controlPlane.bringUpMs} ms at ${controlPlane.server} (data in ${dataDir})`);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(controlPlane.kubeconfig);
  const crds = await installCrds(kubeConfig);
  log(`installed CRDs: ${crds.join(', ')}`);
  console.log(`export KUBECONFIG=${controlPlane.kubeconfig}`);
  log('running; press Ctrl-C to stop');
  await untilSignal();
  log('stopping');
  await controlPlane.stop();
}
