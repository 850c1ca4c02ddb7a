// The views: for each, where its rows come from (a kind's cache, narrowed by a scope when it was
// opened with `enter`), its columns, what `enter` opens and whether `s` scales. The rows
// themselves are built in rows.ts; views read caches only (ClusterReader), never the API.
import { INSTANCE_LABEL } from '../../crds/labels.ts';
import type { EndpointSlice, Host, Instance, Replica, Service } from '../../crds/types.ts';
import type { CoreEvent, KubeObject } from '../../kube/index.ts';
import type { MeshReader } from './mesh.ts';
import {
  ENDPOINT_COLUMNS,
  EVENT_COLUMNS,
  endpointRow,
  eventRow,
  HOST_COLUMNS,
  hostRow,
  INSTANCE_COLUMNS,
  instanceRow,
  NAMESPACE,
  type ObjectRow,
  PROCESS_COLUMNS,
  processRow,
  REPLICA_COLUMNS,
  replicaRow,
  SERVICE_COLUMNS,
  serviceRow,
  USAGE_COLUMNS,
  usageCells,
} from './rows.ts';
import type { Column, Row, SortOrder } from './table.ts';
import type { UsageReader } from './usage.ts';

/** The kinds the TUI watches, each through one informer. */
export type KindId = 'instances' | 'replicas' | 'services' | 'hosts' | 'events' | 'endpointslices';

export interface KindObjects {
  instances: Instance;
  replicas: Replica;
  services: Service;
  hosts: Host;
  events: CoreEvent;
  endpointslices: EndpointSlice;
}

/** What the views read: the informers' caches, never the API. */
export interface ClusterReader {
  list<K extends KindId>(kind: K): readonly KindObjects[K][];
  get<K extends KindId>(kind: K, key: string): KindObjects[K] | undefined;
  /** Core Events about this object, by its uid. */
  eventsFor(obj: KubeObject): readonly CoreEvent[];
  /** CPU and memory from the runtimes, when they are read. */
  readonly usage?: UsageReader | undefined;
  /** Requests per second and p99 per Service, from the mesh proxies, when they are read. */
  readonly mesh?: MeshReader | undefined;
}

export type ViewId = 'inst' | 'rep' | 'proc' | 'svc' | 'ep' | 'host' | 'ev';

/** What a drilled-down view shows of its kind: the Replicas of one Instance, Service or Host, or one Replica's processes. */
export type Scope =
  | { readonly by: 'instance'; readonly namespace: string; readonly name: string }
  | {
      readonly by: 'service';
      readonly namespace: string;
      readonly name: string;
      readonly selector: Readonly<Record<string, string>>;
    }
  | { readonly by: 'host'; readonly name: string }
  | { readonly by: 'replica'; readonly namespace: string; readonly name: string };

export interface RowContext {
  readonly now: number;
  /** All namespaces: a NAMESPACE column comes first. */
  readonly allNamespaces: boolean;
}

export interface ViewDef {
  readonly id: ViewId;
  /** Plural, as the title bar shows it. */
  readonly title: string;
  /** Singular, for messages ("delete instance default/web?"). */
  readonly noun: string;
  /** What `:` takes for this view; the first is the canonical one. Empty for views reached only by `enter`. */
  readonly aliases: readonly string[];
  /** The kind of the rows' objects (describe, delete); undefined for processes, which are not objects. */
  readonly kind: KindId | undefined;
  readonly namespaced: boolean;
  columns(allNamespaces: boolean): readonly Column[];
  rows(cluster: ClusterReader, scope: Scope | undefined, ctx: RowContext): Row[];
  defaultSort(allNamespaces: boolean): SortOrder;
  /** Where `enter` on a row goes, and the word the key bar shows for it. */
  readonly drill?: { readonly label: string; to(cluster: ClusterReader, key: string): Drill | undefined };
  /** `s` asks for a number of replicas. */
  readonly scalable: boolean;
}

export interface Drill {
  readonly view: ViewId;
  readonly scope: Scope;
}

/** `namespace/name`, or `name` for cluster-scoped objects: the informers' cache key. */
export function keyOf(obj: KubeObject): string {
  const { namespace, name = '' } = obj.metadata ?? {};
  return namespace ? `${namespace}/${name}` : name;
}

function withNamespace(columns: readonly Column[], allNamespaces: boolean): readonly Column[] {
  return allNamespaces ? [NAMESPACE, ...columns] : columns;
}

/** The rows of objects: NAMESPACE first when all namespaces are shown, and the objects' labels for `-l`. */
function objectRows<T extends KubeObject>(
  objects: readonly T[],
  build: (obj: T, now: number) => ObjectRow,
  ctx: RowContext,
  namespaced: boolean,
): Row[] {
  return objects.map((obj) => {
    const r = build(obj, ctx.now);
    const ns = obj.metadata?.namespace ?? '';
    const prefix = ctx.allNamespaces && namespaced;
    return {
      key: keyOf(obj),
      cells: prefix ? [ns, ...r.cells] : r.cells,
      sortValues: prefix ? [ns, ...r.sortValues] : r.sortValues,
      tone: r.tone,
      labels: obj.metadata?.labels,
    };
  });
}

function labelsMatch(
  labels: Readonly<Record<string, string>> | undefined,
  selector: Readonly<Record<string, string>>,
) {
  const entries = Object.entries(selector);
  return entries.length > 0 && entries.every(([k, v]) => labels?.[k] === v);
}

/** The Replicas a scope narrows the view to. */
export function replicasInScope(replicas: readonly Replica[], scope: Scope | undefined): readonly Replica[] {
  if (!scope) return replicas;
  switch (scope.by) {
    case 'instance':
      return replicas.filter(
        (r) =>
          r.metadata?.namespace === scope.namespace &&
          (r.spec?.instance === scope.name || r.metadata?.labels?.[INSTANCE_LABEL] === scope.name),
      );
    case 'service':
      return replicas.filter(
        (r) => r.metadata?.namespace === scope.namespace && labelsMatch(r.metadata?.labels, scope.selector),
      );
    case 'host':
      return replicas.filter((r) => r.spec?.host === scope.name);
    case 'replica':
      return replicas.filter(
        (r) => r.metadata?.namespace === scope.namespace && r.metadata?.name === scope.name,
      );
  }
}

const byName = (allNamespaces: boolean): SortOrder => ({
  column: allNamespaces ? 'NAMESPACE' : 'NAME',
  descending: false,
});

export const VIEWS: Readonly<Record<ViewId, ViewDef>> = {
  inst: {
    id: 'inst',
    title: 'Instances',
    noun: 'instance',
    aliases: ['inst', 'instance', 'instances'],
    kind: 'instances',
    namespaced: true,
    columns: (all) => withNamespace(INSTANCE_COLUMNS, all),
    rows: (cluster, _scope, ctx) => objectRows(cluster.list('instances'), instanceRow, ctx, true),
    defaultSort: byName,
    drill: {
      label: 'replicas',
      to: (cluster, key) => {
        const inst = cluster.get('instances', key);
        if (!inst?.metadata?.name || !inst.metadata.namespace) return undefined;
        return {
          view: 'rep',
          scope: { by: 'instance', namespace: inst.metadata.namespace, name: inst.metadata.name },
        };
      },
    },
    scalable: true,
  },
  rep: {
    id: 'rep',
    title: 'Replicas',
    noun: 'replica',
    aliases: ['rep', 'replica', 'replicas'],
    kind: 'replicas',
    namespaced: true,
    columns: (all) => withNamespace([...REPLICA_COLUMNS, ...USAGE_COLUMNS], all),
    rows: (cluster, scope, ctx) =>
      objectRows(
        replicasInScope(cluster.list('replicas'), scope),
        (rep, now) => {
          const row = replicaRow(rep, now);
          const host = rep.spec?.host;
          const usage = usageCells(
            cluster.usage?.series(keyOf(rep)),
            host ? cluster.usage?.hostError(host) : undefined,
          );
          return {
            cells: [...row.cells, ...usage.cells],
            sortValues: [...row.sortValues, ...usage.sortValues],
            tone: usage.unreachable && row.tone !== 'error' ? 'warn' : row.tone,
          };
        },
        ctx,
        true,
      ),
    defaultSort: byName,
    drill: {
      label: 'processes',
      to: (cluster, key) => {
        const rep = cluster.get('replicas', key);
        if (!rep?.metadata?.name || !rep.metadata.namespace) return undefined;
        return {
          view: 'proc',
          scope: { by: 'replica', namespace: rep.metadata.namespace, name: rep.metadata.name },
        };
      },
    },
    scalable: false,
  },
  proc: {
    id: 'proc',
    title: 'Processes',
    noun: 'process',
    aliases: [],
    kind: undefined,
    namespaced: false,
    columns: () => PROCESS_COLUMNS,
    rows: (cluster, scope, ctx) => {
      if (scope?.by !== 'replica') return [];
      const rep = cluster.get('replicas', `${scope.namespace}/${scope.name}`);
      return (rep?.status?.processes ?? []).map((p) => {
        const r = processRow(p, ctx.now);
        return { key: p.name, cells: r.cells, sortValues: r.sortValues, tone: r.tone };
      });
    },
    defaultSort: () => ({ column: '', descending: false }),
    scalable: false,
  },
  svc: {
    id: 'svc',
    title: 'Services',
    noun: 'service',
    aliases: ['svc', 'osvc', 'service', 'services'],
    kind: 'services',
    namespaced: true,
    columns: (all) => withNamespace(SERVICE_COLUMNS, all),
    rows: (cluster, _scope, ctx) =>
      objectRows(
        cluster.list('services'),
        (svc, now) => serviceRow(svc, now, cluster.mesh?.service(keyOf(svc))),
        ctx,
        true,
      ),
    defaultSort: byName,
    drill: {
      label: 'replicas',
      to: (cluster, key) => {
        const svc = cluster.get('services', key);
        if (!svc?.metadata?.name || !svc.metadata.namespace) return undefined;
        return {
          view: 'rep',
          scope: {
            by: 'service',
            namespace: svc.metadata.namespace,
            name: svc.metadata.name,
            selector: svc.spec?.selector ?? {},
          },
        };
      },
    },
    scalable: false,
  },
  ep: {
    id: 'ep',
    title: 'Endpoints',
    noun: 'endpoint',
    aliases: ['ep', 'endpoint', 'endpoints'],
    // Endpoints are entries of the operator's EndpointSlices, not objects of their own.
    kind: undefined,
    namespaced: true,
    columns: (all) => withNamespace(ENDPOINT_COLUMNS, all),
    rows: (cluster, _scope, ctx) => {
      const rows: Row[] = [];
      const seen = new Set<string>();
      for (const slice of cluster.list('endpointslices')) {
        const ns = slice.metadata?.namespace ?? '';
        for (const e of slice.endpoints ?? []) {
          // A replica being moved between slices can briefly be in two: shown once.
          const key = `${ns}/${slice.service}/${e.replica}@${e.address}`;
          if (seen.has(key)) continue;
          seen.add(key);
          const r = endpointRow(slice.service, e, cluster.mesh?.ejected(ns, slice.service, e.replica));
          rows.push({
            key,
            cells: ctx.allNamespaces ? [ns, ...r.cells] : r.cells,
            sortValues: ctx.allNamespaces ? [ns, ...r.sortValues] : r.sortValues,
            tone: r.tone,
          });
        }
      }
      return rows;
    },
    defaultSort: (all) => ({ column: all ? 'NAMESPACE' : 'SERVICE', descending: false }),
    scalable: false,
  },
  host: {
    id: 'host',
    title: 'Hosts',
    noun: 'host',
    aliases: ['host', 'hosts'],
    kind: 'hosts',
    namespaced: false,
    columns: () => HOST_COLUMNS,
    rows: (cluster, _scope, ctx) => objectRows(cluster.list('hosts'), hostRow, ctx, false),
    defaultSort: () => ({ column: 'NAME', descending: false }),
    drill: {
      label: 'replicas',
      to: (cluster, key) => {
        const host = cluster.get('hosts', key);
        if (!host?.metadata?.name) return undefined;
        return { view: 'rep', scope: { by: 'host', name: host.metadata.name } };
      },
    },
    scalable: false,
  },
  ev: {
    id: 'ev',
    title: 'Events',
    noun: 'event',
    aliases: ['ev', 'event', 'events'],
    kind: 'events',
    namespaced: true,
    columns: (all) => withNamespace(EVENT_COLUMNS, all),
    rows: (cluster, _scope, ctx) => objectRows(cluster.list('events'), eventRow, ctx, true),
    defaultSort: () => ({ column: 'LAST SEEN', descending: false }),
    scalable: false,
  },
};

/** The view `:name` opens, by any of its aliases. */
export function viewByAlias(name: string): ViewDef | undefined {
  const n = name.toLowerCase();
  return Object.values(VIEWS).find((v) => v.aliases.includes(n));
}

/** The title bar's words for a scope: `web` (instance), `svc/web`, `host/a`, `web-0`. */
export function scopeTitle(scope: Scope | undefined): string {
  if (!scope) return '';
  switch (scope.by) {
    case 'instance':
      return `inst/${scope.name}`;
    case 'service':
      return `svc/${scope.name}`;
    case 'host':
      return `host/${scope.name}`;
    case 'replica':
      return `rep/${scope.name}`;
  }
}
