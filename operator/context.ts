// What every controller of the operator shares: one API transport, typed clients with the
// operator's field manager, the informers (the only way controllers see the cluster), the event
// recorder and the logger. Built once per leadership term.

import { SYSTEM_NAMESPACE } from '../crds/labels.ts';
import { HOSTS, INSTANCES, REPLICAS, SERVICES } from '../crds/resources.ts';
import type { Host, Instance, Replica, Service } from '../crds/types.ts';
import {
  EventRecorder,
  Informer,
  type KubeApi,
  LEASES,
  type Lease,
  type Logger,
  type ResourceClient,
  resourceClient,
  typed,
} from '../kube/index.ts';

export const FIELD_MANAGER = 'orrery-operator';

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
  };
  informers: {
    instances: Informer<Instance>;
    replicas: Informer<Replica>;
    services: Informer<Service>;
    hosts: Informer<Host>;
    /** Host heartbeat Leases in orrery-system. */
    leases: Informer<Lease>;
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
  };
  const informerOptions = { log, resyncPeriodMs: opts.resyncPeriodMs ?? 60_000 };
  const scoped = { ...informerOptions, namespace: opts.namespace };
  return {
    api,
    log,
    recorder: new EventRecorder(api, { reportingController: FIELD_MANAGER, log }),
    clients,
    informers: {
      instances: new Informer(clients.instances, scoped),
      replicas: new Informer(clients.replicas, scoped),
      services: new Informer(clients.services, scoped),
      hosts: new Informer(clients.hosts, { ...informerOptions, labelSelector: opts.hostSelector }),
      leases: new Informer(clients.leases, { ...informerOptions, namespace: SYSTEM_NAMESPACE }),
    },
  };
}

export function allInformers(ctx: OperatorContext): Informer<never>[] {
  return Object.values(ctx.informers) as unknown as Informer<never>[];
}
