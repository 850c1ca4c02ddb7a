// What every controller of the operator shares: one API transport, typed clients with the
// operator's field manager, the informers (the only way controllers see the cluster) with their
// indexes, the event recorder and the logger. Built once per leadership term. And the one shape
// every controller has.

import {
  ENDPOINT_SLICE_MANAGER,
  INSTANCE_LABEL,
  isProxyLease,
  MANAGED_BY_LABEL,
  SYSTEM_NAMESPACE,
} from '../crds/labels.ts';
import { ENDPOINT_SLICES, HOSTS, INSTANCES, REPLICAS, SERVICES } from '../crds/resources.ts';
import type { EndpointSlice, Host, Instance, Replica, Service } from '../crds/types.ts';
import {
  EventRecorder,
  Informer,
  type KubeApi,
  LEASES,
  type Lease,
  type Logger,
  type ReconcileResult,
  type ResourceClient,
  ROLE_BINDINGS,
  ROLES,
  resourceClient,
  SERVICE_ACCOUNTS,
  typed,
  type WorkQueue,
} from '../kube/index.ts';
import {
  HOST_ACCESS_SELECTOR,
  type Role,
  type RoleBinding,
  type ServiceAccount,
} from './hostaccess/objects.ts';

export const FIELD_MANAGER = 'orrery-operator';

/**
 * Every controller of the operator: controller-runtime's Reconciler with its watches. operator.ts
 * gives each its own work queue and workers; nothing reconciles outside a queue.
 */
export interface Controller {
  readonly name: string;
  /** Keys reconciled at once (never the same key twice: the queue guarantees it). */
  readonly workers: number;
  /** Registers the informer handlers that turn events into this controller's keys. */
  watch(queue: WorkQueue<string>): void;
  /** Level-triggered: reads the caches, makes the cluster match, says whether to come back. */
  reconcile(key: string): Promise<ReconcileResult>;
}

export interface OperatorContext {
  api: KubeApi;
  log: Logger;
  recorder: EventRecorder;
  clients: {
    instances: ResourceClient<Instance>;
    replicas: ResourceClient<Replica>;
    services: ResourceClient<Service>;
    hosts: ResourceClient<Host>;
    leases: ResourceClient<Lease>;
    endpointSlices: ResourceClient<EndpointSlice>;
    roles: ResourceClient<Role>;
    roleBindings: ResourceClient<RoleBinding>;
    serviceAccounts: ResourceClient<ServiceAccount>;
  };
  informers: {
    instances: Informer<Instance>;
    replicas: Informer<Replica>;
    services: Informer<Service>;
    hosts: Informer<Host>;
    /** Host heartbeat Leases in orrery-system. */
    leases: Informer<Lease>;
    /** The Services' EndpointSlices, written by the Service controller. */
    endpointSlices: Informer<EndpointSlice>;
    /** The hosts' read grants (operator/hostaccess/): Roles and RoleBindings made here. */
    roles: Informer<Role>;
    roleBindings: Informer<RoleBinding>;
    /** The hosts' accounts, in orrery-system. */
    serviceAccounts: Informer<ServiceAccount>;
  };
}

export interface ContextOptions {
  resyncPeriodMs?: number;
  /** Watch only this namespace's Instances, Replicas and Services (default: all). */
  namespace?: string;
  /** Consider only Hosts with these labels (label selector syntax; default: all). */
  hostSelector?: string;
}

export function createContext(api: KubeApi, log: Logger, opts: ContextOptions = {}): OperatorContext {
  const clients = {
    instances: resourceClient(api, typed<Instance>(INSTANCES), FIELD_MANAGER),
    replicas: resourceClient(api, typed<Replica>(REPLICAS), FIELD_MANAGER),
    services: resourceClient(api, typed<Service>(SERVICES), FIELD_MANAGER),
    hosts: resourceClient(api, typed<Host>(HOSTS), FIELD_MANAGER),
    leases: resourceClient(api, typed<Lease>(LEASES), FIELD_MANAGER),
    endpointSlices: resourceClient(api, typed<EndpointSlice>(ENDPOINT_SLICES), FIELD_MANAGER),
    roles: resourceClient(api, typed<Role>(ROLES), FIELD_MANAGER),
    roleBindings: resourceClient(api, typed<RoleBinding>(ROLE_BINDINGS), FIELD_MANAGER),
    serviceAccounts: resourceClient(api, typed<ServiceAccount>(SERVICE_ACCOUNTS), FIELD_MANAGER),
  };
  const informerOptions = { log, resyncPeriodMs: opts.resyncPeriodMs ?? 60_000 };
  const scoped = { ...informerOptions, namespace: opts.namespace };
  const informers = {
    instances: new Informer(clients.instances, scoped),
    replicas: new Informer(clients.replicas, scoped),
    services: new Informer(clients.services, scoped),
    hosts: new Informer(clients.hosts, { ...informerOptions, labelSelector: opts.hostSelector }),
    leases: new Informer(clients.leases, { ...informerOptions, namespace: SYSTEM_NAMESPACE }),
    endpointSlices: new Informer(clients.endpointSlices, {
      ...scoped,
      labelSelector: `${MANAGED_BY_LABEL}=${ENDPOINT_SLICE_MANAGER}`,
    }),
    roles: new Informer(clients.roles, { ...scoped, labelSelector: HOST_ACCESS_SELECTOR }),
    roleBindings: new Informer(clients.roleBindings, { ...scoped, labelSelector: HOST_ACCESS_SELECTOR }),
    serviceAccounts: new Informer(clients.serviceAccounts, {
      ...informerOptions,
      namespace: SYSTEM_NAMESPACE,
      labelSelector: HOST_ACCESS_SELECTOR,
    }),
  };
  informers.replicas.addIndex(BY_OWNER, (r) => {
    const owner = r.metadata.labels?.[INSTANCE_LABEL];
    return owner === undefined ? undefined : `${r.metadata.namespace}/${owner}`;
  });
  informers.replicas.addIndex(BY_HOST, (r) => r.spec.host || UNBOUND);
  informers.replicas.addIndex(BY_NAMESPACE, (r) => r.metadata.namespace);
  informers.services.addIndex(BY_NAMESPACE, (s) => s.metadata.namespace);
  informers.services.addIndex(BY_VIRTUAL_IP, (s) => s.status?.virtualIP);
  informers.endpointSlices.addIndex(BY_SERVICE, (s) => `${s.metadata.namespace}/${s.service}`);
  informers.leases.addIndex(BY_KIND, (l) => (isProxyLease(l) ? 'proxy' : undefined));
  return {
    api,
    log,
    recorder: new EventRecorder(api, { reportingController: FIELD_MANAGER, log }),
    clients,
    informers,
  };
}

// Lookups through the informers' indexes (client-go Indexers), so that a reconcile costs the same
// with 10 or 10,000 Replicas in the cache (bench/reconcile.bench.ts).
const BY_OWNER = 'owner';
const BY_HOST = 'host';
const BY_NAMESPACE = 'namespace';
const BY_VIRTUAL_IP = 'virtualIP';
const BY_SERVICE = 'service';
const BY_KIND = 'kind';
/** The BY_HOST value of a Replica bound to no host. */
const UNBOUND = '';

/** Replicas labelled as the Instance's (callers confirm the owner reference's uid). */
export function replicasLabelledFor(ctx: OperatorContext, namespace: string, instance: string): Replica[] {
  return ctx.informers.replicas.byIndex(BY_OWNER, `${namespace}/${instance}`);
}

export function replicasOnHost(ctx: OperatorContext, host: string): Replica[] {
  return ctx.informers.replicas.byIndex(BY_HOST, host);
}

export function unboundReplicas(ctx: OperatorContext): Replica[] {
  return ctx.informers.replicas.byIndex(BY_HOST, UNBOUND);
}

export function replicasInNamespace(ctx: OperatorContext, namespace: string): Replica[] {
  return ctx.informers.replicas.byIndex(BY_NAMESPACE, namespace);
}

export function servicesInNamespace(ctx: OperatorContext, namespace: string): Service[] {
  return ctx.informers.services.byIndex(BY_NAMESPACE, namespace);
}

/** The mesh proxies' heartbeat Leases (`proxy-<name>`), live or not. */
export function proxyLeases(ctx: OperatorContext): Lease[] {
  return ctx.informers.leases.byIndex(BY_KIND, 'proxy');
}

/** The EndpointSlices of a Service (namespace/name). */
export function slicesOfService(ctx: OperatorContext, serviceKey: string): EndpointSlice[] {
  return ctx.informers.endpointSlices.byIndex(BY_SERVICE, serviceKey);
}

/** The Services whose status holds this virtual IP. */
export function servicesWithVirtualIP(ctx: OperatorContext, ip: string): Service[] {
  return ctx.informers.services.byIndex(BY_VIRTUAL_IP, ip);
}

export function allInformers(ctx: OperatorContext): Informer<never>[] {
  return Object.values(ctx.informers) as unknown as Informer<never>[];
}
