/**
 * The Host object: what this machine is (capacity, kernel and cgroup facts) and its
 * registration (create if missing, then status through the status subresource with server-side
 * apply). `spec.unschedulable` belongs to users (cordon) and is never written here.
 */
import os from 'node:os';
import { cpuMillis, formatBytes, formatCpuMillis, memoryBytes } from '../../crds/quantity.ts';
import type { Host, HostStatus } from '../../crds/types.ts';
import { isAlreadyExists, type ResourceClient } from '../../kube/index.ts';
import type { CgroupLayout } from '../cgroups/index.ts';
import type { CapacityOverrides } from './options.ts';
import { memTotalBytes, pidMax, RESERVED } from './reserve.ts';

const DEFAULT_MAX_REPLICAS = 1000;

export interface HostFacts {
  capacity: { cpuMillis: number; memoryBytes: number; pids: number; replicas: number };
  kernel: NonNullable<HostStatus['kernel']>;
}

export async function hostFacts(overrides: CapacityOverrides): Promise<HostFacts> {
  // Loaded lazily: importing the addon binds the .node file, which only the runtime needs.
  const { kernelFeatures } = await import('../native/index.ts');
  const f = kernelFeatures();
  return {
    capacity: {
      cpuMillis: overrides.cpu !== undefined ? cpuMillis(overrides.cpu) : os.availableParallelism() * 1000,
      memoryBytes: overrides.memory !== undefined ? memoryBytes(overrides.memory) : memTotalBytes(),
      pids: overrides.pids ?? pidMax(),
      replicas: overrides.replicas ?? DEFAULT_MAX_REPLICAS,
    },
    kernel: {
      release: os.release(),
      clone3: f.clone3,
      cloneIntoCgroup: f.cloneIntoCgroup,
      // The runtime refuses to start without pidfd_open and waitid(P_PIDFD): if we are here, it has them.
      pidfd: true,
      pidfdInfoExit: f.pidfdInfoExit,
      cgroupKill: f.cgroupKill,
    },
  };
}

export interface HostStatusInput {
  facts: HostFacts;
  address: string;
  apiEndpoint: string;
  /** PEM of the certificate the API serves, when over TLS. */
  apiCertificate?: string | undefined;
  runtimeVersion: string;
  layout: CgroupLayout;
  cgroupParent: string;
  replicas: number;
  /** The limits a replica without resources gets here (AgentOptions.defaultResources). */
  defaultResources: { memoryBytes: number; pids: number };
  ready: { status: 'True' | 'False'; reason: string; message: string };
  readySince: string;
  /** Which data path replicas' connects to Service ports take here (agent/fastpath.ts). */
  meshDataPath?: { kernel: boolean; reason?: string };
  /** The persistent volume data held here (agent/persistent.ts). */
  persistentData?: NonNullable<HostStatus['persistentData']>;
}

export function hostStatus(i: HostStatusInput): HostStatus {
  const c = i.facts.capacity;
  return {
    address: i.address,
    apiEndpoint: i.apiEndpoint,
    ...(i.apiCertificate ? { apiCertificate: i.apiCertificate } : {}),
    runtimeVersion: i.runtimeVersion,
    replicas: i.replicas,
    capacity: {
      cpu: formatCpuMillis(c.cpuMillis),
      memory: formatBytes(c.memoryBytes),
      pids: c.pids,
      replicas: c.replicas,
    },
    allocatable: {
      cpu: formatCpuMillis(Math.max(0, c.cpuMillis - RESERVED.cpuMillis)),
      memory: formatBytes(
        Math.max(0, c.memoryBytes - Math.min(RESERVED.memoryBytes, Math.floor(c.memoryBytes / 4))),
      ),
      pids: Math.max(0, c.pids - Math.min(RESERVED.pids, Math.floor(c.pids / 10))),
      replicas: c.replicas,
    },
    defaultResources: { memory: formatBytes(i.defaultResources.memoryBytes), pids: i.defaultResources.pids },
    kernel: i.facts.kernel,
    cgroup: { mode: i.layout.mode, parent: i.cgroupParent },
    ...(i.meshDataPath ? { meshDataPath: i.meshDataPath } : {}),
    persistentData: i.persistentData ?? [],
    conditions: [
      {
        type: 'Ready',
        status: i.ready.status,
        reason: i.ready.reason,
        message: i.ready.message,
        lastTransitionTime: i.readySince,
      },
    ],
  };
}

/** Create the Host if it is missing (with the given labels); merge the labels into an existing one. */
export async function ensureHost(
  hosts: ResourceClient<Host>,
  name: string,
  labels: Record<string, string>,
  unschedulable = false,
): Promise<Host> {
  try {
    return await hosts.create({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Host',
      metadata: { name, labels },
      spec: { unschedulable },
    });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
  }
  if (Object.keys(labels).length > 0) return hosts.mergePatch(name, { metadata: { labels } });
  return hosts.get(name);
}

export async function applyHostStatus(
  hosts: ResourceClient<Host>,
  name: string,
  status: HostStatus,
): Promise<void> {
  await hosts.applyStatus({ apiVersion: 'orrery.dev/v1alpha1', kind: 'Host', metadata: { name }, status });
}
