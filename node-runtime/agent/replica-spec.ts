/**
 * Replica (the API object) -> the runtime's WorkloadSpec: quantities become numbers, named probe
 * ports become numbers, ports without a number get the one the agent allocated, and the
 * ORRERY_* facts about where the replica runs are added to its environment.
 */
import { createHash } from 'node:crypto';
import { withDefaults } from '../../crds/defaulting.ts';
import { replicaTemplateDefaults } from '../../crds/defaults.ts';
import { cpuMillis, memoryBytes } from '../../crds/quantity.ts';
import type { Replica, ReplicaTemplate, ProcessSpec as TemplateProcess } from '../../crds/types.ts';
import { InvalidSpecError } from '../invalid-spec.ts';
import type { ProbeSpec } from '../probes/types.ts';
import type { EnvVar, Namespace, ProcessSpec, VolumeSpec, WorkloadSpec } from '../supervisor/spec.ts';
import { persistentKey } from './persistent.ts';

/** `<namespace>.<name>`: unique on the host, a valid file and cgroup name; reversible because namespaces hold no dot. */
export function replicaId(namespace: string, name: string): string {
  return `${namespace}.${name}`;
}

/** The `namespace/name` key of a runtime replica id, or undefined for an id this agent did not make. */
export function keyOfReplicaId(id: string): string | undefined {
  const dot = id.indexOf('.');
  if (dot <= 0 || dot === id.length - 1) return undefined;
  return `${id.slice(0, dot)}/${id.slice(dot + 1)}`;
}

/**
 * The runtime's short name (the hostname in a uts namespace) must be a DNS-1123 label, while a
 * Replica name may be a subdomain (an Instance named `api.v2`): dots become dashes, cut to 63.
 */
function hostnameOf(name: string): string {
  return name.replaceAll('.', '-').slice(0, 63).replace(/-+$/, '');
}

/** Gives the number of a port that has none in the template: (process, port name) -> port. */
export type PortLookup = (process: string, port: string) => number;

/**
 * The Replica's template with the schema's defaults. The Replica CRD keeps the template opaque
 * (the API server validated and defaulted it as the Instance's), so a Replica written by hand is
 * checked here: an InvalidSpecError names what is missing, and the replica shows phase Failed.
 */
export function templateOf(replica: Replica): ReplicaTemplate {
  const raw: unknown = replica.spec.template;
  const processes = (raw as { processes?: unknown } | null)?.processes;
  if (!Array.isArray(processes) || processes.length === 0) {
    throw new InvalidSpecError('spec.template.processes must be a non-empty list of processes');
  }
  processes.forEach((p: { name?: unknown; command?: unknown } | null, i) => {
    if (typeof p?.name !== 'string' || !Array.isArray(p.command) || p.command.length === 0) {
      throw new InvalidSpecError(
        `spec.template.processes[${i}] must have a name and a non-empty command (a list of strings)`,
      );
    }
  });
  return withDefaults<ReplicaTemplate>(replicaTemplateDefaults, raw);
}

/** Ports in the template that need a number from the agent. */
export function portsToAllocate(template: ReplicaTemplate): { process: string; name: string }[] {
  return template.processes.flatMap((p) =>
    (p.ports ?? [])
      .filter((port) => port.port === undefined)
      .map((port) => ({ process: p.name, name: port.name })),
  );
}

/** Spec annotation (see WorkloadSpec.annotations): the replicaDigest of the object a replica was run for. */
export const DIGEST_ANNOTATION = 'orrery.dev/replica-digest';

/**
 * What decides whether a running replica still matches its object: the uid (a Replica deleted
 * and created again under the same name is a new replica) and everything the spec is built from.
 */
export function replicaDigest(replica: Replica, hostName: string): string {
  const h = createHash('sha256');
  h.update(
    JSON.stringify([
      replica.metadata.uid ?? '',
      replica.metadata.namespace,
      replica.metadata.name,
      hostName,
      replica.spec.instance,
      replica.spec.template,
    ]),
  );
  return h.digest('hex').slice(0, 32);
}

function resolveProbePort(port: number | string, ports: Record<string, number>, where: string): number {
  if (typeof port === 'number') return port;
  if (/^\d+$/.test(port)) return Number(port);
  const n = ports[port];
  if (n === undefined) {
    throw new InvalidSpecError(
      `${where}.port names "${port}", which is not a port of this process (ports: ${Object.keys(ports).join(', ') || 'none'})`,
    );
  }
  return n;
}

function probe(
  p: TemplateProcess['readinessProbe'],
  ports: Record<string, number>,
  where: string,
  /** Where http and tcp probes dial; absent: 127.0.0.1 (of the replica's own network, if it has one). */
  host: string | undefined,
): ProbeSpec | undefined {
  if (!p) return undefined;
  const out: ProbeSpec = {
    initialDelaySeconds: p.initialDelaySeconds,
    periodSeconds: p.periodSeconds,
    timeoutSeconds: p.timeoutSeconds,
    successThreshold: p.successThreshold,
    failureThreshold: p.failureThreshold,
  };
  if (p.http) out.http = { path: p.http.path, port: resolveProbePort(p.http.port, ports, `${where}.http`) };
  if (p.tcp) out.tcp = { port: resolveProbePort(p.tcp.port, ports, `${where}.tcp`) };
  if (host !== undefined) {
    if (out.http) out.http.host = host;
    if (out.tcp) out.tcp.host = host;
  }
  if (p.exec) out.exec = { command: [...p.exec.command] };
  return out;
}

/** A quantity of the template as a number; an InvalidSpecError naming the field when it does not parse. */
function quantity(parse: (q: string) => number, q: string, field: string): number {
  try {
    return parse(q);
  } catch (err) {
    throw new InvalidSpecError(`${field}: ${(err as Error).message}`);
  }
}

/** Throws an InvalidSpecError naming the field when the object cannot be run (e.g. a probe names a port that does not exist). */
export function buildReplicaSpec(
  replica: Replica,
  t: ReplicaTemplate,
  /** The host's name and the address its replicas' endpoints are published at (`--address`). */
  host: { name: string; address: string },
  portOf: PortLookup,
  /** More variables for every process, before the ORRERY_* ones (the Services of its namespace). */
  env: readonly EnvVar[] = [],
  /** Each process's own variables with its env valueFrom and envFrom resolved (config-env.ts), by process name. */
  resolvedEnv?: ReadonlyMap<string, EnvVar[]>,
): WorkloadSpec {
  const ns = replica.metadata.namespace as string;
  const name = replica.metadata.name as string;
  // On the host's network, probes dial the address that endpoints publish, as kubelet probes the
  // pod's IP: a server that listens on 127.0.0.1 only is not ready, since no peer reaches it there.
  const probeHost = (t.isolation.namespaces as readonly string[]).includes('net') ? undefined : host.address;
  const processes = t.processes.map((p, i): ProcessSpec => {
    const ports: Record<string, number> = {};
    for (const port of p.ports ?? []) ports[port.name] = port.port ?? portOf(p.name, port.name);
    const where = `spec.template.processes[${i}]`;
    const out: ProcessSpec = {
      name: p.name,
      command: [...p.command],
      restart: p.restart,
      stopSignal: p.stopSignal,
    };
    if (p.args) out.args = [...p.args];
    const own = resolvedEnv?.get(p.name);
    if (own) out.env = own;
    else if (p.env) out.env = p.env.map((e) => ({ name: e.name, value: e.value }));
    if (p.workingDir) out.workingDir = p.workingDir;
    if (p.ports) {
      out.ports = p.ports.map((port) => ({
        name: port.name,
        protocol: port.protocol,
        port: ports[port.name] as number,
      }));
    }
    const readiness = probe(p.readinessProbe, ports, `${where}.readinessProbe`, probeHost);
    if (readiness) out.readinessProbe = readiness;
    const liveness = probe(p.livenessProbe, ports, `${where}.livenessProbe`, probeHost);
    if (liveness) out.livenessProbe = liveness;
    if (p.volumeMounts?.length) {
      // Unset readOnly: writable, but for a host path (read-only unless the mount says false).
      const hostPaths = new Set((t.volumes ?? []).filter((v) => v.hostPath).map((v) => v.name));
      out.volumeMounts = p.volumeMounts.map((m) => ({
        name: m.name,
        mountPath: m.mountPath,
        readOnly: m.readOnly ?? hostPaths.has(m.name),
      }));
    }
    return out;
  });
  const resources: WorkloadSpec['resources'] = {};
  if (t.resources?.cpu !== undefined) {
    resources.cpuMillis = quantity(cpuMillis, t.resources.cpu, 'spec.template.resources.cpu');
  }
  if (t.resources?.memory !== undefined) {
    resources.memoryBytes = quantity(memoryBytes, t.resources.memory, 'spec.template.resources.memory');
  }
  if (t.resources?.pids !== undefined) resources.pids = t.resources.pids;
  const isolation: WorkloadSpec['isolation'] = { namespaces: [...t.isolation.namespaces] as Namespace[] };
  if (t.isolation.user) {
    // The CRD lets gid default to the uid, as a user's primary group usually is.
    isolation.user = { uid: t.isolation.user.uid, gid: t.isolation.user.gid ?? t.isolation.user.uid };
  }
  if (t.isolation.hostUsers) isolation.hostUsers = true;
  const extraEnv: EnvVar[] = [
    ...env,
    { name: 'ORRERY_INSTANCE', value: replica.spec.instance },
    { name: 'ORRERY_NAMESPACE', value: ns },
    { name: 'ORRERY_HOST', value: host.name },
    // Where to listen: the address the replica's endpoints are published at (Nomad's NOMAD_IP_*,
    // a pod's status.podIP).
    { name: 'ORRERY_ADDRESS', value: host.address },
  ];
  const volumes = (t.volumes ?? []).map((v, i): VolumeSpec => {
    if (v.hostPath) return { name: v.name, hostPath: { path: v.hostPath.path, type: v.hostPath.type ?? '' } };
    if (v.persistent) {
      return {
        name: v.name,
        persistent: { key: persistentKey(ns, replica.spec.instance, replica.spec.ordinal, v.name) },
      };
    }
    if (v.emptyDir) {
      const emptyDir: { medium: 'disk' | 'memory'; sizeLimitBytes?: number } = {
        medium: v.emptyDir.medium === 'Memory' ? 'memory' : 'disk',
      };
      if (v.emptyDir.sizeLimit !== undefined) {
        emptyDir.sizeLimitBytes = quantity(
          memoryBytes,
          v.emptyDir.sizeLimit,
          `spec.template.volumes[${i}].emptyDir.sizeLimit`,
        );
      }
      return { name: v.name, emptyDir };
    }
    return { name: v.name, files: { secret: v.secret !== undefined } };
  });
  return {
    id: replicaId(ns, name),
    name: hostnameOf(name),
    processes,
    ...(volumes.length > 0 ? { volumes } : {}),
    supervision: {
      strategy: t.supervision.strategy,
      maxRestarts: t.supervision.maxRestarts,
      periodSeconds: t.supervision.periodSeconds,
      backoff: {
        initialSeconds: t.supervision.backoff.initialSeconds,
        maxSeconds: t.supervision.backoff.maxSeconds,
      },
    },
    terminationGracePeriodSeconds: t.terminationGracePeriodSeconds,
    resources,
    isolation,
    extraEnv,
  };
}
