// The names that tie Orrery's objects together: labels, finalizers, the system namespace and
// the Leases in it. The operator, the host runtimes and the CLI all take them from here.

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
/** On Instances: held by the operator until every Replica is gone, so deleting one waits for its processes. */
export const INSTANCE_FINALIZER = 'orrery.dev/replicas';
/** On every EndpointSlice: the Service it belongs to (Kubernetes: kubernetes.io/service-name). */
export const SERVICE_NAME_LABEL = 'orrery.dev/service';
/** On every EndpointSlice: who manages it (Kubernetes: endpointslice.kubernetes.io/managed-by). */
export const MANAGED_BY_LABEL = 'orrery.dev/managed-by';
export const ENDPOINT_SLICE_MANAGER = 'orrery-operator';
/** Namespace of the operator's and runtimes' Leases. */
export const SYSTEM_NAMESPACE = 'orrery-system';

const HOST_LEASE_PREFIX = 'host-';

/**
 * The ServiceAccount (in SYSTEM_NAMESPACE) of one host's reads of ConfigMaps and Secrets, and the
 * name of the Role and RoleBinding that grant it those its Replicas reference, in each namespace
 * (docs/DESIGN.md §10). deploy/rbac.yaml's admission policies spell the same prefix.
 */
export function hostAccountName(host: string): string {
  return `orrery-host-${host}`;
}

/** The heartbeat Lease of a host runtime, in SYSTEM_NAMESPACE. */
export function hostLeaseName(host: string): string {
  return `${HOST_LEASE_PREFIX}${host}`;
}

/** The host a heartbeat Lease belongs to (`host-<name>`), or undefined for any other Lease. */
export function hostOfLease(lease: { metadata?: { name?: string } }): string | undefined {
  const name = lease.metadata?.name ?? '';
  return name.startsWith(HOST_LEASE_PREFIX) ? name.slice(HOST_LEASE_PREFIX.length) : undefined;
}

/** The operator's leader-election Lease, in SYSTEM_NAMESPACE (the default of --leader-lease-name). */
export const OPERATOR_LEASE_NAME = 'orrery-operator';

const PROXY_LEASE_PREFIX = 'proxy-';

/** The heartbeat Lease of a mesh proxy (`orrery proxy --name`), in SYSTEM_NAMESPACE. */
export function proxyLeaseName(name: string): string {
  return `${PROXY_LEASE_PREFIX}${name}`;
}

/** Whether a Lease in SYSTEM_NAMESPACE is a mesh proxy's heartbeat. */
export function isProxyLease(lease: { metadata?: { name?: string } }): boolean {
  return (lease.metadata?.name ?? '').startsWith(PROXY_LEASE_PREFIX);
}

/** On a proxy's Lease: the protocols of Service ports it serves, comma-separated (`tcp`). */
export const PROXY_SERVES_ANNOTATION = 'orrery.dev/proxy-serves';
/** On a proxy's Lease: the one namespace it serves, absent when it serves all. */
export const PROXY_NAMESPACE_ANNOTATION = 'orrery.dev/proxy-namespace';
/**
 * On a proxy's Lease: the endpoints its outlier detection has ejected now, refreshed at each
 * renewal (crds/proxy-ejected.ts has the format); empty when none. The Service controller counts
 * them into each Service's status.ejectedEndpoints.
 */
export const PROXY_EJECTED_ANNOTATION = 'orrery.dev/proxy-ejected';
/**
 * On a proxy's Lease: the URL of its /metrics (per-endpoint request counters), absent when it
 * listens on a wildcard address (no one address to give). The autoscaler reads requests per
 * second per replica there.
 */
export const PROXY_METRICS_ANNOTATION = 'orrery.dev/proxy-metrics';

/**
 * On a Replica being deleted: `Delete` asks its host's runtime to remove the replica's persistent
 * volume data once its processes stopped (the Instance's persistentRetentionPolicy said so for
 * this deletion). Set only by the operator; the template may not carry it (a CEL rule).
 */
export const PERSISTENT_DATA_ANNOTATION = 'orrery.dev/persistent-data';

/**
 * On a Replica: a request to its host's runtime to restart its processes in place (`r` in
 * `orrery tui`, or `kubectl annotate replica web-0 orrery.dev/restartedAt=$(date -Is)
 * --overwrite`), as `kubectl rollout restart` sets `kubectl.kubernetes.io/restartedAt`. Any new
 * value (an RFC 3339 time by convention) is acted on once; the runtime records the last one it
 * handled in its state record of the replica. A Replica created with it simply starts.
 */
export const RESTARTED_AT_ANNOTATION = 'orrery.dev/restartedAt';
