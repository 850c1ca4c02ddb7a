// Orrery's kinds, as the generic client in kube/ addresses them (group, version, plural, kind,
// scope). The CRDs beside this file define them; kube/ itself knows no Orrery kind.
import type { ResourceDescriptor } from '../kube/index.ts';
import type { EndpointSlice, Host, Instance, Replica, Service } from './types.ts';

export const ORRERY_GROUP = 'orrery.dev';
export const ORRERY_VERSION = 'v1alpha1';

export const INSTANCES: ResourceDescriptor<Instance> = {
  group: ORRERY_GROUP,
  version: ORRERY_VERSION,
  plural: 'instances',
  kind: 'Instance',
  namespaced: true,
};
export const REPLICAS: ResourceDescriptor<Replica> = {
  group: ORRERY_GROUP,
  version: ORRERY_VERSION,
  plural: 'replicas',
  kind: 'Replica',
  namespaced: true,
};
export const SERVICES: ResourceDescriptor<Service> = {
  group: ORRERY_GROUP,
  version: ORRERY_VERSION,
  plural: 'services',
  kind: 'Service',
  namespaced: true,
};
export const HOSTS: ResourceDescriptor<Host> = {
  group: ORRERY_GROUP,
  version: ORRERY_VERSION,
  plural: 'hosts',
  kind: 'Host',
  namespaced: false,
};
export const ENDPOINT_SLICES: ResourceDescriptor<EndpointSlice> = {
  group: ORRERY_GROUP,
  version: ORRERY_VERSION,
  plural: 'endpointslices',
  kind: 'EndpointSlice',
  namespaced: true,
};
