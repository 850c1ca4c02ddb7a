/**
 * The replica as the runtime receives it from the host agent (docs/DESIGN.md §3.2, Replica.spec after the
 * agent has turned quantities into numbers), and the status and events it reports back.
 * Validated once, here, at the edge; the supervisor trusts it afterwards.
 */

import { isProcessName } from '../../crds/process-name.ts';
import { InvalidSpecError } from '../invalid-spec.ts';
import type { ProbeSpec } from '../probes/types.ts';
import type { ExitReason, RestartType, SupervisionSpec } from './types.ts';

export interface EnvVar {
  name: string;
  value: string;
}

export interface PortSpec {
  name: string;
  protocol?: 'http' | 'tcp';
  /** Omitted: the runtime allocates a free loopback port when the replica is first run. */
  port?: number;
}

export type Namespace = 'pid' | 'mount' | 'uts' | 'ipc' | 'net';

export interface ProcessSpec {
  name: string;
  /** argv, never a shell string; command[0] is resolved against PATH when it has no slash. */
  command: string[];
  args?: string[];
  env?: EnvVar[];
  workingDir?: string;
  restart: RestartType;
  stopSignal?: string;
  readinessProbe?: ProbeSpec;
  livenessProbe?: ProbeSpec;
  ports?: PortSpec[];
  /** Volumes of the replica attached in this process's mount namespace (it always gets one then). */
  volumeMounts?: VolumeMount[];
}

export interface VolumeMount {
  /** A name of WorkloadSpec.volumes. */
  name: string;
  /** Absolute path inside the process's root. */
  mountPath: string;
  readOnly: boolean;
}

/**
 * A replica's volume (node-runtime/volumes/): `files`, a configMap or secret volume whose files the
 * agent writes (Engine.run's `files`, Engine.writeVolumeFiles), on a tmpfs; or an emptyDir, on disk
 * under the volume root or a tmpfs of its own (`memory`); or `persistent`, a directory under the
 * persistent root named by `key` (the agent's `<namespace>/<instance>/<ordinal>/<volume>`), which
 * outlives the replica: only Engine.removePersistent removes it.
 */
export type VolumeSpec =
  | { name: string; files: { secret: boolean } }
  | { name: string; emptyDir: { medium: 'disk' | 'memory'; sizeLimitBytes?: number } }
  | { name: string; persistent: { key: string } }
  | { name: string; hostPath: HostPathSpec };

/**
 * A path of the host (below the engine's workload root when it has one), checked as `type` says
 * and bind-mounted without following symbolic links (docs/DESIGN.md §5.1 "Volumes").
 */
export interface HostPathSpec {
  path: string;
  type: HostPathType;
}

/** Kubernetes' names: "" anything that exists; DirectoryOrCreate makes a missing directory. */
export type HostPathType = '' | 'Directory' | 'DirectoryOrCreate' | 'File';
const HOST_PATH_TYPES: readonly string[] = ['', 'Directory', 'DirectoryOrCreate', 'File'];

export interface WorkloadSpec {
  /** Unique on the host, e.g. `ns.web-0`; names the cgroup, the state file and the log directory. */
  id: string;
  /** Short name, e.g. `web-0`; the hostname with a uts namespace. */
  name: string;
  processes: ProcessSpec[];
  supervision: SupervisionSpec;
  terminationGracePeriodSeconds: number;
  resources: { cpuMillis?: number; memoryBytes?: number; pids?: number };
  /**
   * `user` is the uid/gid inside the replica's user namespace (default 0: root there, an
   * unprivileged id on the host). `hostUsers: true` runs without a user namespace, as the
   * runtime's own identity (host root) unless `user` drops it: the explicit opt-in.
   */
  isolation: { namespaces: Namespace[]; user?: { uid: number; gid: number }; hostUsers?: boolean };
  extraEnv?: EnvVar[];
  volumes?: VolumeSpec[];
  /**
   * Opaque to the runtime, as OCI runtime annotations are: kept with the spec in the replica's
   * state record (so they are written with it, atomically, and survive a runtime restart) and read
   * back with `Engine.spec(id)`. The host agent records there which object a replica was run for.
   */
  annotations?: Record<string, string>;
}

export type WorkloadPhase =
  | 'Pending'
  | 'Starting'
  | 'Running'
  | 'Succeeded'
  | 'Failed'
  | 'CrashLoopBackOff'
  | 'Terminating';

export type ProcessState = 'Waiting' | 'Running' | 'Stopping' | 'Exited';

export interface LastExit {
  code: number | null;
  signal: string | null;
  reason: ExitReason;
  message?: string;
  at: string;
}

export interface ProcessStatus {
  name: string;
  pid: number | null;
  state: ProcessState;
  ready: boolean;
  restarts: number;
  startedAt: string | null;
  lastExit: LastExit | null;
}

export interface WorkloadStatus {
  id: string;
  name: string;
  phase: WorkloadPhase;
  ready: boolean;
  ports: { process: string; name: string; port: number }[];
  startedAt: string | null;
  /** Set in CrashLoopBackOff: when the replica will be started again. */
  backoffUntil?: string;
  /** The last restart request acted on (Engine.restart), or the one it was run under (RunOptions). */
  restartedAt?: string;
  processes: ProcessStatus[];
}

interface EventBase {
  replica: string;
  at: string;
}

export type EngineEvent =
  | (EventBase & { type: 'started'; process: string; pid: number })
  | (EventBase & { type: 'adopted'; process: string; pid: number })
  | (EventBase & {
      type: 'exited';
      process: string;
      pid: number | null;
      code: number | null;
      signal: string | null;
      reason: ExitReason;
      message?: string;
    })
  | (EventBase & {
      type: 'restarting';
      process: string;
      cause: 'Exited' | 'LivenessProbeFailed' | 'Sibling' | 'BackoffEnded' | 'Requested';
    })
  | (EventBase & { type: 'backoff'; delayMs: number; crashLoops: number })
  | (EventBase & { type: 'ready' | 'notReady'; process: string; replicaReady: boolean; message?: string })
  | (EventBase & { type: 'stopped' });

/** Ids mapped per replica's user namespace: 0..65535 inside, as Kubernetes maps a pod's. */
export const USER_NAMESPACE_SIZE = 65536;

/** A pid namespace always comes with a mount namespace, for a /proc of its own (the host's would show every process). */
export function effectiveNamespaces(namespaces: readonly Namespace[]): Namespace[] {
  return namespaces.includes('pid') && !namespaces.includes('mount')
    ? [...namespaces, 'mount']
    : [...namespaces];
}

const NAMESPACES: readonly Namespace[] = ['pid', 'mount', 'uts', 'ipc', 'net'];
const RESTARTS: readonly RestartType[] = ['permanent', 'transient', 'temporary'];
const STRATEGIES: readonly SupervisionSpec['strategy'][] = ['one-for-one', 'one-for-all', 'rest-for-one'];
/** A DNS-1123 subdomain: safe as a file and cgroup name. */
const ID = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function fail(field: string, expected: string, got: unknown): never {
  throw new InvalidSpecError(`spec.${field} must be ${expected}, got ${JSON.stringify(got) ?? typeof got}`);
}

function nonNegative(field: string, v: unknown): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail(field, 'a non-negative number', v);
}

/** Throws an InvalidSpecError naming the first field that is not as expected. */
export function validateWorkloadSpec(spec: WorkloadSpec): void {
  if (typeof spec !== 'object' || spec === null) fail('', 'an object', spec);
  if (typeof spec.id !== 'string' || !ID.test(spec.id) || spec.id.includes('..')) {
    fail('id', 'a DNS-1123 subdomain such as "ns.web-0"', spec.id);
  }
  if (typeof spec.name !== 'string' || !NAME.test(spec.name))
    fail('name', 'a DNS-1123 label such as "web-0"', spec.name);
  if (!Array.isArray(spec.processes) || spec.processes.length === 0)
    fail('processes', 'a non-empty array', spec.processes);
  const names = new Set<string>();
  spec.processes.forEach((p, i) => {
    const f = `processes[${i}]`;
    if (typeof p.name !== 'string' || !isProcessName(p.name)) fail(`${f}.name`, 'a DNS-1123 label', p.name);
    if (names.has(p.name)) fail(`${f}.name`, 'unique within the replica', p.name);
    names.add(p.name);
    if (
      !Array.isArray(p.command) ||
      p.command.length === 0 ||
      !p.command.every((s) => typeof s === 'string' && s !== '')
    ) {
      fail(`${f}.command`, 'a non-empty array of non-empty strings', p.command);
    }
    if (p.args !== undefined && (!Array.isArray(p.args) || !p.args.every((s) => typeof s === 'string'))) {
      fail(`${f}.args`, 'an array of strings', p.args);
    }
    for (const [j, e] of (p.env ?? []).entries()) {
      if (
        typeof e?.name !== 'string' ||
        e.name === '' ||
        e.name.includes('=') ||
        typeof e.value !== 'string'
      ) {
        fail(`${f}.env[${j}]`, 'a {name, value} pair of strings without "=" in the name', e);
      }
    }
    if (!RESTARTS.includes(p.restart)) fail(`${f}.restart`, `one of ${RESTARTS.join(', ')}`, p.restart);
    if (p.stopSignal !== undefined && !/^SIG[A-Z0-9]+$/.test(p.stopSignal))
      fail(`${f}.stopSignal`, 'a signal name such as "SIGTERM"', p.stopSignal);
    for (const [j, port] of (p.ports ?? []).entries()) {
      if (typeof port?.name !== 'string' || port.name === '')
        fail(`${f}.ports[${j}].name`, 'a non-empty string', port?.name);
      if (port.port !== undefined && (!Number.isInteger(port.port) || port.port < 1 || port.port > 65535)) {
        fail(`${f}.ports[${j}].port`, 'an integer in 1..65535', port.port);
      }
    }
  });
  const s = spec.supervision;
  if (typeof s !== 'object' || s === null) fail('supervision', 'an object', s);
  if (!STRATEGIES.includes(s.strategy))
    fail('supervision.strategy', `one of ${STRATEGIES.join(', ')}`, s.strategy);
  if (!Number.isInteger(s.maxRestarts) || s.maxRestarts < 0)
    fail('supervision.maxRestarts', 'a non-negative integer', s.maxRestarts);
  if (typeof s.periodSeconds !== 'number' || !(s.periodSeconds > 0))
    fail('supervision.periodSeconds', 'a positive number', s.periodSeconds);
  if (typeof s.backoff?.initialSeconds !== 'number' || !(s.backoff.initialSeconds > 0)) {
    fail('supervision.backoff.initialSeconds', 'a positive number', s.backoff?.initialSeconds);
  }
  if (typeof s.backoff.maxSeconds !== 'number' || s.backoff.maxSeconds < s.backoff.initialSeconds) {
    fail('supervision.backoff.maxSeconds', 'a number >= initialSeconds', s.backoff.maxSeconds);
  }
  nonNegative('terminationGracePeriodSeconds', spec.terminationGracePeriodSeconds);
  if (typeof spec.resources !== 'object' || spec.resources === null)
    fail('resources', 'an object', spec.resources);
  if (typeof spec.isolation !== 'object' || !Array.isArray(spec.isolation?.namespaces)) {
    fail('isolation.namespaces', 'an array', spec.isolation?.namespaces);
  }
  for (const ns of spec.isolation.namespaces) {
    if (!NAMESPACES.includes(ns)) fail('isolation.namespaces', `a list of ${NAMESPACES.join(', ')}`, ns);
  }
  const user = spec.isolation.user;
  if (
    user !== undefined &&
    (!Number.isInteger(user.uid) || !Number.isInteger(user.gid) || user.uid < 0 || user.gid < 0)
  ) {
    fail('isolation.user', 'non-negative integer uid and gid', user);
  }
  const hostUsers = spec.isolation.hostUsers;
  if (hostUsers !== undefined && typeof hostUsers !== 'boolean')
    fail('isolation.hostUsers', 'a boolean', hostUsers);
  if (
    !hostUsers &&
    user !== undefined &&
    (user.uid >= USER_NAMESPACE_SIZE || user.gid >= USER_NAMESPACE_SIZE)
  ) {
    fail('isolation.user', `uid and gid below ${USER_NAMESPACE_SIZE} (the ids a user namespace maps)`, user);
  }
  const annotations = spec.annotations;
  if (
    annotations !== undefined &&
    (typeof annotations !== 'object' ||
      annotations === null ||
      Object.values(annotations).some((v) => typeof v !== 'string'))
  ) {
    fail('annotations', 'an object of string values', annotations);
  }
  validateVolumes(spec);
}

const VOLUME_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A persistent volume's key: a relative path that stays below the persistent root. */
export function isPersistentKey(key: unknown): key is string {
  return (
    typeof key === 'string' &&
    key.length <= 1024 &&
    key.split('/').every((e) => /^[A-Za-z0-9._-]+$/.test(e) && e !== '.' && e !== '..')
  );
}

/** Volume names unique DNS labels; every mount names one, at an absolute clean path, once per process. */
function validateVolumes(spec: WorkloadSpec): void {
  const volumes = spec.volumes ?? [];
  if (!Array.isArray(volumes)) fail('volumes', 'an array', volumes);
  const names = new Set<string>();
  volumes.forEach((v, i) => {
    if (typeof v?.name !== 'string' || !VOLUME_NAME.test(v.name) || names.has(v.name))
      fail(`volumes[${i}].name`, 'a DNS label, unique in the replica', v?.name);
    names.add(v.name);
    const kinds =
      ('files' in v ? 1 : 0) +
      ('emptyDir' in v ? 1 : 0) +
      ('persistent' in v ? 1 : 0) +
      ('hostPath' in v ? 1 : 0);
    if (kinds !== 1) fail(`volumes[${i}]`, 'exactly one of files, emptyDir, persistent and hostPath', v);
    if ('hostPath' in v) {
      const { path, type } = v.hostPath ?? {};
      if (
        typeof path !== 'string' ||
        !/^(\/[^/]+)+$/.test(path) ||
        path.length > 1024 ||
        path.split('/').some((e) => e === '.' || e === '..')
      )
        fail(`volumes[${i}].hostPath.path`, "an absolute clean path other than '/'", path);
      if (!HOST_PATH_TYPES.includes(type as string))
        fail(
          `volumes[${i}].hostPath.type`,
          `one of ${HOST_PATH_TYPES.map((x) => JSON.stringify(x)).join(', ')}`,
          type,
        );
    }
    if ('persistent' in v && !isPersistentKey(v.persistent?.key))
      fail(
        `volumes[${i}].persistent.key`,
        'a relative path of names of [A-Za-z0-9._-], none "." or ".."',
        v.persistent?.key,
      );
    if ('emptyDir' in v) {
      const { medium, sizeLimitBytes } = v.emptyDir ?? {};
      if (medium !== 'disk' && medium !== 'memory')
        fail(`volumes[${i}].emptyDir.medium`, 'disk or memory', medium);
      if (sizeLimitBytes !== undefined && !(Number.isInteger(sizeLimitBytes) && sizeLimitBytes >= 4096))
        fail(`volumes[${i}].emptyDir.sizeLimitBytes`, 'an integer of at least 4096', sizeLimitBytes);
    }
  });
  spec.processes.forEach((p, i) => {
    const paths = new Set<string>();
    (p.volumeMounts ?? []).forEach((m, j) => {
      const f = `processes[${i}].volumeMounts[${j}]`;
      if (!names.has(m?.name))
        fail(`${f}.name`, `one of the volumes (${[...names].join(', ') || 'none'})`, m?.name);
      const mp = m.mountPath;
      if (
        typeof mp !== 'string' ||
        !/^(\/[^/]+)+$/.test(mp) ||
        mp.split('/').some((e) => e === '.' || e === '..') ||
        /^\/(proc|sys)(\/|$)/.test(mp) ||
        paths.has(mp)
      )
        fail(`${f}.mountPath`, 'an absolute clean path, not under /proc or /sys, unique in the process', mp);
      paths.add(mp);
    });
  });
}
