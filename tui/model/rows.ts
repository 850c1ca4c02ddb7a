// One row per object, for each kind: its columns, and a pure function of the object and the
// time that gives the row's cells, sort values and tone. The views (views.ts) put them together.
import type {
  Condition,
  Host,
  Instance,
  ProcessStatus,
  Replica,
  Service,
  ServiceEndpoint,
} from '../../crds/types.ts';
import type { CoreEvent, KubeObject } from '../../kube/index.ts';
import { age, since } from './format.ts';
import type { ServiceTraffic } from './mesh.ts';
import { sparkline } from './sparkline.ts';
import type { Column, Tone } from './table.ts';
import type { ReplicaSeries } from './usage.ts';

export const NAMESPACE: Column = { header: 'NAMESPACE', sortKey: 'P', dropOrder: 5 };
const NAME: Column = { header: 'NAME', sortKey: 'N', minWidth: 12, maxWidth: 48 };
const AGE: Column = { header: 'AGE', sortKey: 'A', align: 'right', minWidth: 4 };

function condition(conditions: readonly Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/** A row of an object: its key, labels, cells and sort values in column order (NAMESPACE added by rowsOf). */
export interface ObjectRow {
  readonly cells: readonly string[];
  readonly sortValues: readonly (string | number)[];
  readonly tone?: Tone;
}

function ageCell(obj: KubeObject, now: number): [string, number] {
  const ts = obj.metadata?.creationTimestamp;
  return [age(ts, now), since(ts, now) ?? Number.POSITIVE_INFINITY];
}

export const INSTANCE_COLUMNS: readonly Column[] = [
  NAME,
  { header: 'READY', sortKey: 'R', align: 'right' },
  { header: 'UP-TO-DATE', sortKey: 'U', align: 'right', dropOrder: 2 },
  { header: 'AVAILABLE', sortKey: 'V', align: 'right', dropOrder: 1 },
  { header: 'STATUS', sortKey: 'S', flex: true, minWidth: 8 },
  AGE,
];

export function instanceRow(inst: Instance, now: number): ObjectRow {
  const desired = inst.spec?.replicas ?? 0;
  const status = inst.status ?? {};
  const ready = status.readyReplicas ?? 0;
  const degraded = condition(status.conditions, 'Degraded');
  const available = condition(status.conditions, 'Available');
  let state: string;
  let tone: Tone;
  if (inst.metadata?.deletionTimestamp) {
    state = 'Terminating';
    tone = 'muted';
  } else if (degraded?.status === 'True') {
    state = degraded.reason ?? 'Degraded';
    tone = 'error';
  } else {
    state = available?.reason ?? (available?.status === 'True' ? 'Available' : '');
    tone = ready < desired ? 'warn' : undefined;
  }
  const [ageText, ageMs] = ageCell(inst, now);
  return {
    cells: [
      inst.metadata?.name ?? '',
      `${ready}/${desired}`,
      String(status.updatedReplicas ?? 0),
      String(status.availableReplicas ?? 0),
      state,
      ageText,
    ],
    sortValues: [
      inst.metadata?.name ?? '',
      ready,
      status.updatedReplicas ?? 0,
      status.availableReplicas ?? 0,
      state,
      ageMs,
    ],
    tone,
  };
}

export const REPLICA_COLUMNS: readonly Column[] = [
  NAME,
  { header: 'READY', sortKey: 'R', align: 'right' },
  { header: 'PHASE', sortKey: 'S', minWidth: 7 },
  { header: 'RESTARTS', sortKey: 'T', align: 'right' },
  { header: 'HOST', sortKey: 'H', minWidth: 6, maxWidth: 32, dropOrder: 2 },
  { header: 'ADDRESS', sortKey: 'I', dropOrder: 3 },
  { header: 'REASON', sortKey: 'E', flex: true, minWidth: 6, dropOrder: 1 },
  AGE,
];

function replicaTone(phase: string | undefined, ready: boolean, terminating: boolean): Tone {
  if (terminating || phase === 'Succeeded') return 'muted';
  if (phase === 'Failed' || phase === 'CrashLoopBackOff') return 'error';
  if (!ready) return 'warn';
  return undefined;
}

export function replicaRow(rep: Replica, now: number): ObjectRow {
  const status = rep.status ?? {};
  const processes = status.processes ?? [];
  const total = processes.length || rep.spec?.template?.processes?.length || 0;
  const readyProcs = processes.filter((p) => p.ready).length;
  const terminating = Boolean(rep.metadata?.deletionTimestamp);
  const phase = terminating ? 'Terminating' : (status.phase ?? 'Pending');
  const reason = status.reason
    ? status.message
      ? `${status.reason}: ${status.message}`
      : status.reason
    : '';
  const [ageText, ageMs] = ageCell(rep, now);
  return {
    cells: [
      rep.metadata?.name ?? '',
      `${readyProcs}/${total}`,
      phase,
      String(status.restarts ?? 0),
      rep.spec?.host ?? '',
      status.address ?? '',
      reason,
      ageText,
    ],
    sortValues: [
      rep.metadata?.name ?? '',
      readyProcs,
      phase,
      status.restarts ?? 0,
      rep.spec?.host ?? '',
      status.address ?? '',
      reason,
      ageMs,
    ],
    tone: replicaTone(status.phase, Boolean(status.ready), terminating),
  };
}

/** Samples a CPU or MEMORY cell draws (the model keeps 60). */
export const SPARK_WIDTH = 20;

/** CPU and MEMORY after a Replica's columns, from its host's runtime; dropped first when narrow. */
export const USAGE_COLUMNS: readonly Column[] = [
  { header: 'CPU', sortKey: 'C', maxWidth: SPARK_WIDTH + 7, dropOrder: 4 },
  { header: 'MEMORY', sortKey: 'M', maxWidth: SPARK_WIDTH + 8, dropOrder: 4 },
];

function memoryText(bytes: number): string {
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)}Ki`;
  return `${Math.round(bytes / (1024 * 1024))}Mi`;
}

/**
 * A Replica's CPU and MEMORY cells: the sparkline of the last SPARK_WIDTH samples (a space where
 * one is missing) and the last value; `runtime unreachable` while its host's runtime cannot be
 * read.
 */
export function usageCells(
  series: ReplicaSeries | undefined,
  hostError: string | undefined,
): { cells: [string, string]; sortValues: [number, number]; unreachable: boolean } {
  const cpu = series?.cpu.at(-1);
  const memory = series?.memory.at(-1);
  const sortValues: [number, number] = [cpu ?? -1, memory ?? -1];
  if (hostError !== undefined) {
    const spark = series ? sparkline(series.cpu, SPARK_WIDTH) : '';
    return { cells: [`${spark} unreachable`.trimStart(), ''], sortValues, unreachable: true };
  }
  if (!series) return { cells: ['', ''], sortValues, unreachable: false };
  return {
    cells: [
      `${sparkline(series.cpu, SPARK_WIDTH)} ${(cpu === undefined ? '-' : `${Math.round(cpu)}m`).padStart(5)}`,
      `${sparkline(series.memory, SPARK_WIDTH)} ${(memory === undefined ? '-' : memoryText(memory)).padStart(6)}`,
    ],
    sortValues,
    unreachable: false,
  };
}

export const PROCESS_COLUMNS: readonly Column[] = [
  NAME,
  { header: 'STATE', sortKey: 'S', minWidth: 7 },
  { header: 'READY', sortKey: 'R' },
  { header: 'PID', sortKey: 'I', align: 'right' },
  { header: 'RESTARTS', sortKey: 'T', align: 'right' },
  { header: 'LAST EXIT', sortKey: 'X', flex: true, minWidth: 9, dropOrder: 1 },
  AGE,
];

/** How a process last ended: `Error (code 1) 2m ago`, `Killed (SIGKILL) 5s ago`. */
export function lastExitText(exit: ProcessStatus['lastExit'], now: number): string {
  if (!exit) return '';
  const how = exit.signal ? exit.signal : exit.code !== undefined ? `code ${exit.code}` : '';
  const when = since(exit.at, now);
  return [exit.reason ?? 'Exited', how && `(${how})`, when !== undefined ? `${age(exit.at, now)} ago` : '']
    .filter(Boolean)
    .join(' ');
}

export function processRow(proc: ProcessStatus, now: number): ObjectRow {
  const startedMs = since(proc.startedAt, now);
  const state = proc.state ?? 'Waiting';
  let tone: Tone;
  if (state === 'Exited') tone = proc.lastExit?.reason === 'Completed' ? 'muted' : 'error';
  else if (!proc.ready) tone = 'warn';
  const exit = lastExitText(proc.lastExit, now);
  return {
    cells: [
      proc.name,
      state,
      proc.ready ? 'true' : 'false',
      proc.pid !== undefined ? String(proc.pid) : '',
      String(proc.restarts ?? 0),
      exit,
      startedMs === undefined ? '' : age(proc.startedAt, now),
    ],
    sortValues: [
      proc.name,
      state,
      proc.ready ? 1 : 0,
      proc.pid ?? '',
      proc.restarts ?? 0,
      exit,
      startedMs ?? Number.POSITIVE_INFINITY,
    ],
    tone,
  };
}

export const SERVICE_COLUMNS: readonly Column[] = [
  NAME,
  { header: 'VIRTUAL-IP', sortKey: 'I' },
  { header: 'PORTS', sortKey: 'O', maxWidth: 32, dropOrder: 2 },
  { header: 'ENDPOINTS', sortKey: 'E', align: 'right' },
  { header: 'EJECTED', sortKey: 'J', align: 'right', dropOrder: 2 },
  // From the mesh proxies' metrics (model/mesh.ts): blank until two reads of a proxy saw it.
  { header: 'RPS', sortKey: 'R', align: 'right', dropOrder: 3 },
  { header: 'P99', sortKey: 'T', align: 'right', dropOrder: 3 },
  { header: 'POLICY', sortKey: 'L', dropOrder: 4 },
  { header: 'PROXIED', sortKey: 'X', flex: true, minWidth: 7, dropOrder: 1 },
  AGE,
];

function rateText(rps: number): string {
  return rps >= 100 ? rps.toFixed(0) : rps.toFixed(1);
}

function latencyText(ms: number): string {
  return ms >= 100 ? `${ms.toFixed(0)}ms` : `${ms.toFixed(1)}ms`;
}

export function serviceRow(svc: Service, now: number, traffic?: ServiceTraffic): ObjectRow {
  const status = svc.status ?? {};
  const ports = (svc.spec?.ports ?? []).map((p) => `${p.port}/${p.protocol}`).join(',');
  const ready = status.readyEndpoints ?? 0;
  const total = status.totalEndpoints ?? 0;
  // Summed by the operator from the proxies' heartbeats (docs/DESIGN.md §3.4): outlier detection's ejections.
  const ejected = status.ejectedEndpoints ?? 0;
  const proxied = condition(status.conditions, 'Proxied');
  const proxiedText = proxied ? (proxied.status === 'True' ? 'yes' : (proxied.reason ?? 'no')) : '';
  const [ageText, ageMs] = ageCell(svc, now);
  let tone: Tone;
  if (svc.metadata?.deletionTimestamp) tone = 'muted';
  else if (total > 0 && ready === 0) tone = 'error';
  else if (ready < total || ejected > 0) tone = 'warn';
  return {
    cells: [
      svc.metadata?.name ?? '',
      status.virtualIP ?? '',
      ports,
      `${ready}/${total}`,
      String(ejected),
      traffic ? rateText(traffic.rps) : '',
      traffic?.p99Ms === undefined ? '' : latencyText(traffic.p99Ms),
      svc.spec?.loadBalancer?.policy ?? '',
      proxiedText,
      ageText,
    ],
    sortValues: [
      svc.metadata?.name ?? '',
      status.virtualIP ?? '',
      ports,
      ready,
      ejected,
      traffic?.rps ?? -1,
      traffic?.p99Ms ?? -1,
      svc.spec?.loadBalancer?.policy ?? '',
      proxiedText,
      ageMs,
    ],
    tone,
  };
}

/** One endpoint of a Service, from the operator's EndpointSlices. */
export const ENDPOINT_COLUMNS: readonly Column[] = [
  { header: 'SERVICE', sortKey: 'V', minWidth: 8, maxWidth: 40 },
  { header: 'REPLICA', sortKey: 'N', minWidth: 8, maxWidth: 48 },
  { header: 'STATE', sortKey: 'S', minWidth: 5 },
  { header: 'ADDRESS', sortKey: 'I' },
  { header: 'PORTS', sortKey: 'O', flex: true, minWidth: 8, dropOrder: 1 },
  { header: 'HOST', sortKey: 'H', minWidth: 6, maxWidth: 32, dropOrder: 2 },
];

/**
 * Ready (takes new requests), ejected (ready, but a mesh proxy's outlier detection keeps it out),
 * terminating (draining), or not ready.
 */
export function endpointRow(service: string, e: ServiceEndpoint, ejected = false): ObjectRow {
  const state = e.terminating ? 'terminating' : !e.ready ? 'not ready' : ejected ? 'ejected' : 'ready';
  const ports = (e.ports ?? []).map((p) => `${p.name}:${p.port}`).join(',');
  return {
    cells: [service, e.replica, state, e.address, ports, e.host ?? ''],
    sortValues: [service, e.replica, state, e.address, ports, e.host ?? ''],
    tone: e.terminating ? 'muted' : state === 'ready' ? undefined : 'warn',
  };
}

export const HOST_COLUMNS: readonly Column[] = [
  NAME,
  { header: 'STATUS', sortKey: 'S', minWidth: 8 },
  { header: 'ADDRESS', sortKey: 'I', dropOrder: 3 },
  { header: 'REPLICAS', sortKey: 'R', align: 'right' },
  { header: 'CPU', sortKey: 'C', align: 'right', dropOrder: 2 },
  { header: 'MEMORY', sortKey: 'M', align: 'right', dropOrder: 2 },
  { header: 'CGROUP', sortKey: 'U', dropOrder: 4 },
  { header: 'KERNEL', sortKey: 'K', flex: true, minWidth: 6, dropOrder: 1 },
  AGE,
];

export function hostRow(host: Host, now: number): ObjectRow {
  const status = host.status ?? {};
  const ready = condition(status.conditions, 'Ready')?.status;
  let state = ready === 'True' ? 'Ready' : ready === 'Unknown' ? 'Unknown' : 'NotReady';
  if (host.spec?.unschedulable) state += ',SchedulingDisabled';
  const tone: Tone = ready === 'True' ? (host.spec?.unschedulable ? 'muted' : undefined) : 'error';
  const allocatable = status.allocatable ?? {};
  const [ageText, ageMs] = ageCell(host, now);
  return {
    cells: [
      host.metadata?.name ?? '',
      state,
      status.address ?? '',
      String(status.replicas ?? 0),
      allocatable.cpu ?? '',
      allocatable.memory ?? '',
      status.cgroup?.mode ?? '',
      status.kernel?.release ?? '',
      ageText,
    ],
    sortValues: [
      host.metadata?.name ?? '',
      state,
      status.address ?? '',
      status.replicas ?? 0,
      allocatable.cpu ?? '',
      allocatable.memory ?? '',
      status.cgroup?.mode ?? '',
      status.kernel?.release ?? '',
      ageMs,
    ],
    tone,
  };
}

export const EVENT_COLUMNS: readonly Column[] = [
  { header: 'LAST SEEN', sortKey: 'L', align: 'right', minWidth: 5 },
  { header: 'TYPE', sortKey: 'T', dropOrder: 2 },
  { header: 'REASON', sortKey: 'R', maxWidth: 24 },
  { header: 'OBJECT', sortKey: 'O', maxWidth: 40, minWidth: 10 },
  { header: 'COUNT', sortKey: 'C', align: 'right', dropOrder: 1 },
  { header: 'MESSAGE', sortKey: 'M', flex: true, minWidth: 10, maxWidth: 400 },
];

/** When an Event was last seen: lastTimestamp, else the newer API's eventTime, else its creation. */
export function eventTime(ev: CoreEvent & { eventTime?: string }): string | undefined {
  return ev.lastTimestamp ?? ev.eventTime ?? ev.firstTimestamp ?? ev.metadata?.creationTimestamp;
}

export function eventRow(ev: CoreEvent, now: number): ObjectRow {
  const seen = eventTime(ev);
  const seenMs = since(seen, now);
  const object = `${(ev.involvedObject?.kind ?? '').toLowerCase()}/${ev.involvedObject?.name ?? ''}`;
  return {
    cells: [
      seen ? age(seen, now) : '',
      ev.type ?? '',
      ev.reason ?? '',
      object,
      String(ev.count ?? 1),
      ev.message ?? '',
    ],
    sortValues: [
      seenMs ?? Number.POSITIVE_INFINITY,
      ev.type ?? '',
      ev.reason ?? '',
      object,
      ev.count ?? 1,
      ev.message ?? '',
    ],
    tone: ev.type === 'Warning' ? 'warn' : undefined,
  };
}
