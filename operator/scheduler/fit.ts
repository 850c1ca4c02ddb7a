// Choosing a Host for a Replica, as a pure function (kube-scheduler's filter + score, reduced to
// what Orrery needs). Filters: Ready, not cordoned, labels match hostSelector, allocatable fits.
// Score: fewest replicas of the same Instance (spread), then the most free room, then the name
// (deterministic). When nothing fits, the reasons are counted the way kube-scheduler reports
// "0/3 hosts are available: 2 Insufficient memory, 1 host(s) were unschedulable".

import { cpuMillis, memoryBytes } from '../../crds/quantity.ts';
import type { Host, Replica } from '../../crds/types.ts';

/** What a replica asks for, in numbers. */
export interface Requests {
  cpuMillis: number;
  memoryBytes: number;
  pids: number;
}

/** What is already bound to a host. */
export interface HostUsage extends Requests {
  replicas: number;
  /** replicas per Instance key (namespace/name), for spreading */
  byInstance: Map<string, number>;
}

export function emptyUsage(): HostUsage {
  return { cpuMillis: 0, memoryBytes: 0, pids: 0, replicas: 0, byInstance: new Map() };
}

/** The usage of `host` in a table, added empty when the table has none yet. */
export function usageIn(table: Map<string, HostUsage>, host: string): HostUsage {
  let usage = table.get(host);
  if (!usage) {
    usage = emptyUsage();
    table.set(host, usage);
  }
  return usage;
}

/**
 * What a replica asks for: its template's resources. A template that sets no memory or no pids
 * asks for none of it, as a Kubernetes pod without requests (BestEffort): its host's runtime
 * gives it that host's default limits (--default-memory, --default-pids, published in
 * Host.status.defaultResources), which cap it, and the host's cgroup parent is capped at the
 * host's allocatable, which caps all of them together; counting a 1 GiB default limit as a
 * request would leave a 24 GiB host at 23 sleeping replicas. The Replica's template is an opaque
 * copy of its Instance's validated one (crds/src/replica.yaml); in one written by hand, a value
 * that does not parse counts as no request, and the host's runtime reports the replica Failed
 * with the reason.
 */
function requestsOf(replica: Replica): Requests {
  const resources = replica.spec.template.resources ?? {};
  const parsed = (parse: (q: string) => number, q: string | undefined) => {
    if (q === undefined) return 0;
    try {
      return parse(q);
    } catch {
      return 0;
    }
  };
  return {
    cpuMillis: parsed(cpuMillis, resources.cpu),
    memoryBytes: parsed(memoryBytes, resources.memory),
    pids: typeof resources.pids === 'number' ? resources.pids : 0,
  };
}

function instanceKey(replica: Replica): string {
  return `${replica.metadata.namespace}/${replica.spec.instance}`;
}

/** Adds a bound replica to its host's usage (the scheduler's cache, also used after binding). */
export function addUsage(usage: HostUsage, replica: Replica): void {
  const requests = requestsOf(replica);
  usage.cpuMillis += requests.cpuMillis;
  usage.memoryBytes += requests.memoryBytes;
  usage.pids += requests.pids;
  usage.replicas += 1;
  const key = instanceKey(replica);
  usage.byInstance.set(key, (usage.byInstance.get(key) ?? 0) + 1);
}

function isHostReady(host: Host): boolean {
  return host.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

interface Allocatable {
  cpuMillis: number;
  memoryBytes: number;
  pids: number;
  replicas: number;
}

function allocatableOf(host: Host): Allocatable {
  const a = host.status?.allocatable ?? {};
  return {
    cpuMillis: a.cpu ? cpuMillis(a.cpu) : Number.POSITIVE_INFINITY,
    memoryBytes: a.memory ? memoryBytes(a.memory) : Number.POSITIVE_INFINITY,
    pids: a.pids ?? Number.POSITIVE_INFINITY,
    replicas: a.replicas ?? Number.POSITIVE_INFINITY,
  };
}

export type ScheduleResult =
  | { host: string }
  | {
      host?: undefined;
      message: string;
      /** Condition reason: Unschedulable, or PersistentDataHostUnavailable. */
      reason: 'Unschedulable' | 'PersistentDataHostUnavailable';
    };

/**
 * The hosts that hold this replica's ordinal's persistent data (Host.status.persistentData,
 * written by their runtimes), for a template with persistent volumes: the volume node affinity of
 * a StatefulSet pod's local PersistentVolume. Empty when none does (a first start, or the host
 * holding it was deleted: the data went with it).
 */
export function dataHostsOf(replica: Replica, hosts: readonly Host[]): string[] {
  if (!(replica.spec.template.volumes ?? []).some((v) => v.persistent)) return [];
  const ns = replica.metadata.namespace;
  const { instance, ordinal } = replica.spec;
  return hosts
    .filter((h) =>
      (h.status?.persistentData ?? []).some(
        (d) => d.namespace === ns && d.instance === instance && d.ordinal === ordinal,
      ),
    )
    .map((h) => h.metadata.name as string);
}

const NOT_DATA_HOST = "host(s) didn't hold the replica's persistent data";

/** Why a host was filtered out, or undefined when it fits. */
function unfitReason(
  host: Host,
  replica: Replica,
  requests: Requests,
  usage: HostUsage,
  isLive: (host: string) => boolean,
): string | undefined {
  if (!isHostReady(host) || !isLive(host.metadata.name as string)) return 'host(s) were not ready';
  if (host.spec?.unschedulable) return 'host(s) were unschedulable';
  const selector = replica.spec.template.hostSelector?.matchLabels ?? {};
  const labels = host.metadata.labels ?? {};
  if (Object.entries(selector).some(([k, v]) => labels[k] !== v))
    return "host(s) didn't match the hostSelector";
  const free = allocatableOf(host);
  if (usage.replicas + 1 > free.replicas) return 'Too many replicas';
  if (usage.cpuMillis + requests.cpuMillis > free.cpuMillis) return 'Insufficient cpu';
  if (usage.memoryBytes + requests.memoryBytes > free.memoryBytes) return 'Insufficient memory';
  if (usage.pids + requests.pids > free.pids) return 'Insufficient pids';
  return undefined;
}

/**
 * `isLive` can veto a host whose Ready condition is stale: the host-lifecycle controller knows
 * from the Lease that a host died before the Host object says so, and a replica moved off a dead
 * host must not be bound straight back to it.
 */
export function pickHost(
  replica: Replica,
  hosts: readonly Host[],
  usageOf: (host: string) => HostUsage,
  isLive: (host: string) => boolean = () => true,
): ScheduleResult {
  const key = instanceKey(replica);
  const reasons = new Map<string, number>();
  const dataHosts = dataHostsOf(replica, hosts);
  const dataHostReasons: string[] = [];
  let best: { name: string; score: number[] } | undefined;
  for (const host of hosts) {
    const name = host.metadata.name as string;
    const usage = usageOf(name);
    const requests = requestsOf(replica);
    const reason =
      dataHosts.length > 0 && !dataHosts.includes(name)
        ? NOT_DATA_HOST
        : unfitReason(host, replica, requests, usage, isLive);
    if (reason && dataHosts.includes(name)) dataHostReasons.push(`${name}: ${reason}`);
    if (reason) {
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
      continue;
    }
    const free = allocatableOf(host);
    const room = (used: number, total: number) =>
      Number.isFinite(total) && total > 0 ? 1 - used / total : 1;
    // Lower is better, compared element by element.
    const score = [
      usage.byInstance.get(key) ?? 0,
      -Math.min(
        room(usage.cpuMillis + requests.cpuMillis, free.cpuMillis),
        room(usage.memoryBytes + requests.memoryBytes, free.memoryBytes),
      ),
      usage.replicas,
    ];
    if (!best || lexicographicLess(score, best.score) || (equal(score, best.score) && name < best.name))
      best = { name, score };
  }
  if (best) return { host: best.name };
  const detail = [...reasons.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([reason, count]) => `${count} ${reason}`)
    .join(', ');
  const message = `0/${hosts.length} hosts are available${detail ? `: ${detail}` : ''}`;
  if (dataHosts.length === 0) return { message, reason: 'Unschedulable' };
  const name = `${replica.spec.instance}-${replica.spec.ordinal}`;
  const where = dataHosts.join(', ');
  return {
    reason: 'PersistentDataHostUnavailable',
    message:
      `${message}. The persistent data of ${name} is on host ${where} (${dataHostReasons.join('; ')}): ` +
      `${name} waits for it there. The data exists on that host only: if the host is lost, the data ` +
      `is lost with it; deleting Host ${where} lets ${name} start on another host with empty data.`,
  };
}

function lexicographicLess(a: number[], b: number[]): boolean {
  for (let i = 0; i < a.length; i++) {
    if ((a[i] as number) !== (b[i] as number)) return (a[i] as number) < (b[i] as number);
  }
  return false;
}

function equal(a: number[], b: number[]): boolean {
  return a.every((v, i) => v === b[i]);
}

/**
 * Chooses a host for a Replica about to be created (the scheduler's decision, made at creation so
 * the Replica is written once, already bound: half the writes and watch events of create-then-bind
 * in a burst, one round trip less per start). Returns the host and how to take the choice back
 * when the create fails; undefined leaves the Replica unbound for the scheduler controller, which
 * then says why nothing fits.
 */
export type Placer = (key: string, replica: Replica) => { host: string; undo(): void } | undefined;
