/**
 * The host agent's options, normalized and validated once, here at the edge (execa's habit):
 * every error names the option, the expected form and the value it got. The rest of the agent
 * trusts the normalized form.
 */
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { memoryBytes } from '../../crds/quantity.ts';
import type { KubeConfig } from '../../kube/index.ts';
import { defaultStateDir } from '../../platform/runtime-api.ts';
import { type ApiLimits, DEFAULT_API_LIMITS } from './api-limits.ts';

/** Defaults of AgentOptions.defaultResources. */
export const DEFAULT_MEMORY = '1Gi';
export const DEFAULT_PIDS = 1024;

export interface PortRange {
  min: number;
  max: number;
}

export interface CapacityOverrides {
  /** CPU as a quantity ("2", "1500m"). */
  cpu?: string;
  /** Memory as a quantity ("8Gi"). */
  memory?: string;
  pids?: number;
  replicas?: number;
}

export interface AgentOptions {
  /** A kubeconfig path or a loaded KubeConfig; unset: $KUBECONFIG, in-cluster, ~/.kube/config. */
  kubeconfig?: string | KubeConfig;
  /** Host object name and Lease identity; default os.hostname() (lower-cased). */
  hostName?: string;
  /** Engine state, agent records and the API token; default `defaultStateDir(hostName)`. */
  stateDir?: string;
  /**
   * The runtime's records of its live processes (one per replica, rewritten at every start and
   * stop) and their exit statuses; default `stateDir`. They describe processes, which a reboot
   * ends, so they belong on tmpfs: `/run/orrery/<host>`, as runc keeps /run/runc. Files there
   * cost no disk inode allocation per replica start.
   */
  runDir?: string;
  /** Per-process log files; default `<stateDir>/logs`. */
  logDir?: string;
  /** Size at which a process's live log file is rotated; default 10 MiB (the kubelet's --container-log-max-size). */
  logMaxBytes?: number;
  /** Log files kept per process run, the live one included; default 5 (the kubelet's --container-log-max-files). */
  logMaxFiles?: number;
  /** cgroup parent below each hierarchy root; default `orrery/<hostName>`. */
  cgroupParent?: string;
  /** `host:port` for the HTTP API; default 127.0.0.1:0 (a free port). */
  listen?: string;
  /** Bearer token of the HTTP API; default: generated and written to `<stateDir>/api-token` (0600). */
  token?: string;
  /**
   * Serve the HTTP API over TLS with a certificate made at each start (its key only in memory),
   * published in Host.status.apiCertificate for clients to pin. Default: on unless `listen` is a
   * loopback address (a token sent over a network is sent encrypted).
   */
  tls?: boolean;
  /** Caps of the HTTP API: open connections, open streams, bytes queued for a slow event reader (http.ts DEFAULT_API_LIMITS). */
  apiLimits?: Partial<ApiLimits>;
  /** Lease duration in whole seconds (the Lease API has second precision); default 1. */
  leaseDurationSeconds?: number;
  /** How often the Lease is renewed; default a quarter of the duration. */
  leaseRenewIntervalMs?: number;
  /** Labels put on the Host when it is created (and merged into it at every registration). */
  labels?: Record<string, string>;
  /** Create the Host cordoned (spec.unschedulable true), like the kubelet's --register-schedulable=false. Only at creation. */
  registerUnschedulable?: boolean;
  capacity?: CapacityOverrides;
  /**
   * Limits of a replica whose template sets none (--default-memory, --default-pids): memory as a
   * quantity, default 1Gi; pids, default 1024. Without them one fork bomb or leak takes the host.
   */
  defaultResources?: { memory?: string; pids?: number };
  /** Range allocated ports are taken from; default 20000-32767. */
  portRange?: PortRange;
  /** Replicas reconciled (started, stopped) in parallel; default 8. A key is never reconciled twice at once. */
  workers?: number;
  /** Address the replicas' ports listen on and that Host.status.address reports; default 127.0.0.1. */
  address?: string;
  /**
   * The directory replicas run in (EngineOptions.workloadRoot): the node's filesystem for a
   * runtime in a container (deploy/ mounts it at /host). Default: the runtime's own root.
   */
  workloadRoot?: string;
  /**
   * The mesh's kernel fast path (agent/fastpath.ts, node-runtime/bpf/): replicas' connects to
   * `tcp` Service ports balanced in the kernel. Default off while issue 13 is in progress.
   */
  kernelFastPath?: boolean;
  log?: Logger;
}

export interface NormalizedAgentOptions {
  kubeconfig: string | KubeConfig | undefined;
  hostName: string;
  stateDir: string;
  runDir: string;
  logDir: string;
  logMaxBytes: number;
  logMaxFiles: number;
  cgroupParent: string;
  listenHost: string;
  listenPort: number;
  token: string | undefined;
  apiLimits: ApiLimits;
  leaseDurationSeconds: number;
  leaseRenewIntervalMs: number;
  labels: Record<string, string>;
  registerUnschedulable: boolean;
  capacity: CapacityOverrides;
  defaultResources: { memoryBytes: number; pids: number };
  portRange: PortRange;
  address: string;
  workers: number;
  kernelFastPath: boolean;
  tls: boolean;
  workloadRoot: string | undefined;
}

/** A DNS-1123 subdomain, as Kubernetes requires of object names. */
export const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

function fail(option: string, expected: string, got: unknown): never {
  throw new TypeError(`${option} must be ${expected}, got ${JSON.stringify(got) ?? typeof got}`);
}

// The default state dir is where local clients look for the token too (platform/runtime-api.ts).
export { defaultStateDir };

export function defaultHostName(): string {
  return os.hostname().toLowerCase();
}

/** `host:port`, `[v6]:port` or `:port`; port 0 picks a free one. */
export function parseListen(value: string, option = 'listen'): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) fail(option, 'host:port such as 127.0.0.1:0 (port 0..65535)', value);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/**
 * Fraction of the Lease duration by which the fence comes before the Lease can expire for anyone
 * else. The operator counts a host's silence from when it saw the last renewal, which is after
 * the renewal started, and evicts no sooner than the Lease duration after that; the fence is
 * declared this much earlier, counted from the start of the last renewal that succeeded. The lead
 * covers a late timer on a loaded host and the kill itself (cgroup.kill and the wait for the
 * cgroup to empty): with the default 1 s Lease, 250 ms (measured in test/integration/failover-fencing.test.ts).
 */
export const FENCE_LEAD = 0.25;

/** When the host Lease counts as lost for this host: FENCE_LEAD before its duration, in ms. */
export function fenceAfterMs(leaseDurationSeconds: number): number {
  return leaseDurationSeconds * 1000 * (1 - FENCE_LEAD);
}

/** `20000-32767`. */
export function parsePortRange(value: string, option = 'portRange'): PortRange {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(value);
  const min = Number(m?.[1]);
  const max = Number(m?.[2]);
  if (!m || min < 1 || max > 65535 || min > max) fail(option, 'a range MIN-MAX within 1-65535', value);
  return { min, max };
}

export function normalizeAgentOptions(opts: AgentOptions = {}): NormalizedAgentOptions {
  const hostName = opts.hostName ?? defaultHostName();
  if (typeof hostName !== 'string' || !DNS_SUBDOMAIN.test(hostName)) {
    fail('hostName', 'a DNS-1123 subdomain (lower-case letters, digits, "-" and ".")', hostName);
  }
  const stateDir = opts.stateDir ?? defaultStateDir(hostName);
  if (typeof stateDir !== 'string' || stateDir === '') fail('stateDir', 'a directory path', stateDir);
  const runDir = opts.runDir ?? stateDir;
  if (typeof runDir !== 'string' || runDir === '') fail('runDir', 'a directory path', runDir);
  const logDir = opts.logDir ?? path.join(stateDir, 'logs');
  if (typeof logDir !== 'string' || logDir === '') fail('logDir', 'a directory path', logDir);
  const logMaxBytes = opts.logMaxBytes ?? 10 * 1024 * 1024;
  if (!Number.isSafeInteger(logMaxBytes) || logMaxBytes < 4096)
    fail('logMaxBytes', 'a whole number of bytes >= 4096', logMaxBytes);
  const logMaxFiles = opts.logMaxFiles ?? 5;
  if (!Number.isInteger(logMaxFiles) || logMaxFiles < 1 || logMaxFiles > 100)
    fail('logMaxFiles', 'an integer in 1..100', logMaxFiles);
  const cgroupParent = opts.cgroupParent ?? `orrery/${hostName}`;
  if (typeof cgroupParent !== 'string' || !/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/.test(cgroupParent)) {
    fail('cgroupParent', 'a relative cgroup path such as "orrery/host-a"', cgroupParent);
  }
  const { host: listenHost, port: listenPort } = parseListen(opts.listen ?? '127.0.0.1:0');
  if (opts.token !== undefined && (typeof opts.token !== 'string' || opts.token.length < 16)) {
    fail('token', 'a string of at least 16 characters', opts.token === undefined ? opts.token : '<hidden>');
  }
  const apiLimits = { ...DEFAULT_API_LIMITS, ...opts.apiLimits };
  for (const [k, v] of Object.entries(apiLimits)) {
    if (!Number.isSafeInteger(v) || v < 1) fail(`apiLimits.${k}`, 'a whole number >= 1', v);
  }
  const leaseDurationSeconds = opts.leaseDurationSeconds ?? 1;
  if (!Number.isInteger(leaseDurationSeconds) || leaseDurationSeconds < 1) {
    fail('leaseDurationSeconds', 'a whole number of seconds >= 1', leaseDurationSeconds);
  }
  const leaseRenewIntervalMs = opts.leaseRenewIntervalMs ?? (leaseDurationSeconds * 1000) / 4;
  if (
    typeof leaseRenewIntervalMs !== 'number' ||
    !(leaseRenewIntervalMs >= 10) ||
    leaseRenewIntervalMs >= fenceAfterMs(leaseDurationSeconds)
  ) {
    fail(
      'leaseRenewIntervalMs',
      `a number of ms >= 10 and below ${fenceAfterMs(leaseDurationSeconds)} (three quarters of the lease duration: the host fences itself then)`,
      leaseRenewIntervalMs,
    );
  }
  const labels = opts.labels ?? {};
  for (const [k, v] of Object.entries(labels)) {
    if (!LABEL_KEY.test(k)) fail(`labels key ${JSON.stringify(k)}`, 'a Kubernetes label key', k);
    if (typeof v !== 'string' || !LABEL_VALUE.test(v)) fail(`labels[${k}]`, 'a Kubernetes label value', v);
  }
  const capacity = opts.capacity ?? {};
  for (const k of ['pids', 'replicas'] as const) {
    const v = capacity[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 0))
      fail(`capacity.${k}`, 'a non-negative integer', v);
  }
  const defaults = opts.defaultResources ?? {};
  let defaultMemory = Number.NaN;
  try {
    defaultMemory = memoryBytes(defaults.memory ?? DEFAULT_MEMORY);
  } catch {
    // reported below with the value
  }
  if (!Number.isSafeInteger(defaultMemory) || defaultMemory < 1)
    fail('defaultResources.memory', 'a positive memory quantity such as "512Mi"', defaults.memory);
  const defaultPids = defaults.pids ?? DEFAULT_PIDS;
  if (!Number.isInteger(defaultPids) || defaultPids < 1)
    fail('defaultResources.pids', 'a positive integer', defaults.pids);
  const portRange = opts.portRange ?? { min: 20000, max: 32767 };
  if (
    !Number.isInteger(portRange.min) ||
    !Number.isInteger(portRange.max) ||
    portRange.min < 1 ||
    portRange.max > 65535 ||
    portRange.min > portRange.max
  ) {
    fail('portRange', '{min, max} within 1..65535 with min <= max', portRange);
  }
  const address = opts.address ?? '127.0.0.1';
  if (typeof address !== 'string' || isIP(address) === 0) fail('address', 'an IPv4 or IPv6 address', address);
  const workloadRoot = opts.workloadRoot;
  if (workloadRoot !== undefined && (typeof workloadRoot !== 'string' || !path.isAbsolute(workloadRoot)))
    fail('workloadRoot', "an absolute path (the node's filesystem, e.g. /host)", workloadRoot);
  const workers = opts.workers ?? 8;
  if (!Number.isInteger(workers) || workers < 1 || workers > 256)
    fail('workers', 'an integer in 1..256', workers);
  return {
    kubeconfig: opts.kubeconfig,
    hostName,
    stateDir: path.resolve(stateDir),
    runDir: path.resolve(runDir),
    logDir: path.resolve(logDir),
    logMaxBytes,
    logMaxFiles,
    cgroupParent,
    listenHost,
    listenPort,
    token: opts.token,
    apiLimits,
    leaseDurationSeconds,
    leaseRenewIntervalMs,
    labels,
    registerUnschedulable: opts.registerUnschedulable === true,
    capacity,
    defaultResources: { memoryBytes: defaultMemory, pids: defaultPids },
    portRange,
    address,
    workers,
    kernelFastPath: opts.kernelFastPath === true,
    tls: opts.tls ?? !isLoopback(listenHost),
    workloadRoot,
  };
}

/** 127.0.0.0/8, ::1 and `localhost`: addresses no other machine reaches. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}
