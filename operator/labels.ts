// Labels, annotations and finalizers that tie Orrery's objects together.

/** On every Replica: the name of the Instance that owns it. */
export const INSTANCE_LABEL = 'orrery.dev/instance';
/** On every Replica: hash of the template it runs (changes trigger a rolling update). */
export const TEMPLATE_HASH_LABEL = 'orrery.dev/template-hash';
/** On every Replica: its ordinal, for label selection. */
export const ORDINAL_LABEL = 'orrery.dev/ordinal';
/** On a bound Replica: the Host it runs on (mirrors spec.host, for label selectors). */
export const HOST_LABEL = 'orrery.dev/host';
/** On Replicas: held by the runtime of spec.host until it has stopped the processes. */
export const RUNTIME_FINALIZER = 'orrery.dev/runtime';
/** On Instances: held by the operator until every Replica is gone (no kube-controller-manager GC needed). */
export const INSTANCE_FINALIZER = 'orrery.dev/replicas';
/** Namespace of the operator's and runtimes' Leases. */
export const SYSTEM_NAMESPACE = 'orrery-system';
