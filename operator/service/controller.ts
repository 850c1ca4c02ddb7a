// The Service controller: reconcile(namespace/name) gives the Service a stable virtual IP from
// the loopback range, keeps its EndpointSlices (the endpoints the host proxies balance over,
// endpoints.ts), and its endpoint counts and conditions current.

import { type ConditionInput, sameConditions, setConditions } from '../../crds/conditions.ts';
import {
  ENDPOINT_SLICE_MANAGER,
  isProxyLease,
  MANAGED_BY_LABEL,
  PROXY_EJECTED_ANNOTATION,
  PROXY_NAMESPACE_ANNOTATION,
  PROXY_SERVES_ANNOTATION,
  SERVICE_NAME_LABEL,
} from '../../crds/labels.ts';
import { decodeEjected } from '../../crds/proxy-ejected.ts';
import type { EndpointSlice, Replica, Service, ServiceEndpoint, ServiceStatus } from '../../crds/types.ts';
import {
  enqueueFromInformer,
  isAlreadyExists,
  isNotFound,
  type Lease,
  leaseExpired,
  leaseExpiresAt,
  objectKey,
  type ReconcileResult,
} from '../../kube/index.ts';
import {
  type Controller,
  type OperatorContext,
  proxyLeases,
  replicasInNamespace,
  servicesInNamespace,
  servicesWithVirtualIP,
  slicesOfService,
} from '../context.ts';
import { isReady } from '../instance/plan.ts';
import { ejectedMessage, ejectedOf } from './ejected.ts';
import { endpointsOf, planSlices, selects } from './endpoints.ts';
import { allocateVip, type Cidr, inRange } from './vip.ts';

/** Keys of the Services that select a replica (for mapping Replica events). */
export function servicesSelecting(ctx: OperatorContext, replica: Replica): string[] {
  return servicesInNamespace(ctx, replica.metadata.namespace as string)
    .filter((s) => selects(s, replica))
    .map(objectKey);
}

/** Services, and the Replicas they select. */
export function serviceController(ctx: OperatorContext, opts: { range: Cidr }): Controller {
  return {
    name: 'services',
    workers: 1,
    watch(queue) {
      enqueueFromInformer(ctx.informers.services, queue);
      enqueueFromInformer(ctx.informers.replicas, queue, (r) => servicesSelecting(ctx, r));
      // A slice changed or deleted by someone else is put back.
      enqueueFromInformer(ctx.informers.endpointSlices, queue, (e) => `${e.metadata.namespace}/${e.service}`);
      // A proxy that comes or goes (or changes what it serves) changes every Service's Proxied;
      // a change of what it has ejected, only the Services it named before or names now.
      const everyService = (l: Lease) => {
        if (isProxyLease(l)) for (const key of ctx.informers.services.keys()) queue.add(key);
      };
      const annotation = (l: Lease, name: string) => l.metadata?.annotations?.[name];
      ctx.informers.leases.addHandlers({
        add: everyService,
        delete: everyService,
        update: (old, l) => {
          if (!isProxyLease(l)) return;
          const scope = [PROXY_SERVES_ANNOTATION, PROXY_NAMESPACE_ANNOTATION];
          if (scope.some((a) => annotation(old, a) !== annotation(l, a))) return everyService(l);
          // Renewed again after it had expired: it serves again.
          if (leaseExpired(old) && !leaseExpired(l)) return everyService(l);
          const before = annotation(old, PROXY_EJECTED_ANNOTATION);
          const now = annotation(l, PROXY_EJECTED_ANNOTATION);
          if (before === now) return;
          for (const value of [before, now])
            for (const p of decodeEjected(value).ports) queue.add(`${p.namespace}/${p.service}`);
        },
      });
    },
    reconcile: (key) => reconcileService(ctx, opts.range, key),
  };
}

export async function reconcileService(
  ctx: OperatorContext,
  range: Cidr,
  key: string,
): Promise<ReconcileResult> {
  const service = ctx.informers.services.get(key);
  if (!service) return undefined;
  let virtualIP = service.status?.virtualIP;
  if (!virtualIP || !inRange(range, virtualIP)) {
    const inUse = { has: (ip: string) => servicesWithVirtualIP(ctx, ip).some((s) => objectKey(s) !== key) };
    virtualIP = allocateVip(range, key, inUse);
    if (!virtualIP) {
      void ctx.recorder.warning(
        service,
        'VirtualIPExhausted',
        'No free virtual IP left in the service range',
      );
      return { requeueAfterMs: 10_000 };
    }
  }
  const now = Date.now();
  const proxies = proxyLeases(ctx);
  const proxied = proxiedCondition(service, proxies, now);
  const inNamespace = replicasInNamespace(ctx, service.metadata.namespace as string);
  const resolved = endpointsOf(service, inNamespace);
  await writeSlices(ctx, service, resolved.endpoints);
  const endpoints = inNamespace.filter((r) => selects(service, r) && !r.metadata.deletionTimestamp);
  const ready = endpoints.filter(isReady).length;
  const ejected = ejectedOf(
    service,
    liveProxies(service, proxies, now),
    new Set(endpoints.map((r) => r.metadata.name as string)),
  );
  const ejectedNote = ejectedMessage(ejected);
  const portsCondition: ConditionInput =
    resolved.unresolved.length === 0
      ? { type: 'PortsResolved', status: 'True', reason: 'PortsResolved', message: '' }
      : {
          type: 'PortsResolved',
          status: 'False',
          reason: 'UnknownTargetPort',
          message: resolved.unresolved
            .map((name) => {
              const p = service.spec.ports.find((q) => q.name === name);
              return `port ${name}: targetPort ${JSON.stringify(p?.targetPort)} is declared by no process of the ${endpoints.length} selected replicas`;
            })
            .join('; '),
        };
  const generation = service.metadata.generation;
  const next: ServiceStatus = {
    virtualIP,
    readyEndpoints: ready,
    totalEndpoints: endpoints.length,
    ejectedEndpoints: ejected.endpoints.length,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    conditions: setConditions(
      service.status?.conditions,
      [
        ready > 0
          ? {
              type: 'Ready',
              status: 'True',
              reason: 'EndpointsReady',
              message: `${ready} of ${endpoints.length} endpoints ready${ejectedNote ? `; ${ejectedNote}` : ''}`,
            }
          : {
              type: 'Ready',
              status: 'False',
              reason: endpoints.length > 0 ? 'NoReadyEndpoints' : 'NoEndpoints',
              message:
                endpoints.length > 0
                  ? `none of ${endpoints.length} endpoints is ready`
                  : 'the selector matches no replica',
            },
        portsCondition,
        proxied.condition,
      ],
      generation,
    ),
  };
  const previous = service.status;
  // Come back when the first live proxy's Lease would expire: a proxy that died says nothing.
  const result: ReconcileResult =
    proxied.expiresAt === undefined
      ? undefined
      : { requeueAfterMs: Math.max(100, proxied.expiresAt - Date.now() + 50) };
  if (
    previous &&
    previous.virtualIP === next.virtualIP &&
    previous.readyEndpoints === next.readyEndpoints &&
    previous.totalEndpoints === next.totalEndpoints &&
    previous.ejectedEndpoints === next.ejectedEndpoints &&
    previous.observedGeneration === next.observedGeneration &&
    sameConditions(previous.conditions, next.conditions)
  ) {
    return result;
  }
  if (!previous?.virtualIP)
    void ctx.recorder.normal(service, 'VirtualIPAllocated', `Allocated virtual IP ${virtualIP}`);
  try {
    await ctx.clients.services.patchStatus(service.metadata.name as string, next, {
      namespace: service.metadata.namespace,
    });
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  return result;
}

/**
 * Whether the mesh serves the Service (condition Proxied), from the proxies' heartbeat Leases
 * (`proxy-<name>` in orrery-system, annotated with the protocols and the namespace they serve):
 * True when at least one live proxy serves its namespace and every one of its ports' protocols;
 * False naming what is missing otherwise. `expiresAt`: when the first of those Leases expires.
 */
export function proxiedCondition(
  service: Service,
  proxies: readonly Lease[],
  now = Date.now(),
): { condition: ConditionInput; expiresAt: number | undefined } {
  const live = liveProxies(service, proxies, now);
  const expiries = live.map((l) => leaseExpiresAt(l)).filter((t): t is number => t !== undefined);
  const expiresAt = expiries.length > 0 ? Math.min(...expiries) : undefined;
  if (live.length === 0) {
    return {
      condition: {
        type: 'Proxied',
        status: 'False',
        reason: 'NoMeshProxy',
        message:
          'no orrery proxy serving this namespace renews its Lease: connections to this virtual IP fail (orrery up runs one, and deploy/ one per node)',
      },
      expiresAt,
    };
  }
  const serves = (l: Lease) => (l.metadata?.annotations?.[PROXY_SERVES_ANNOTATION] ?? '').split(',');
  const names = live.map((l) => l.metadata?.name).join(', ');
  const unserved = service.spec.ports.filter((p) => !live.some((l) => serves(l).includes(p.protocol)));
  if (unserved.length > 0) {
    return {
      condition: {
        type: 'Proxied',
        status: 'False',
        reason: 'ProtocolNotProxied',
        message: `ports ${unserved.map((p) => `${p.name} (${p.protocol})`).join(', ')} are not served: the running proxies (${names}) serve ${[...new Set(live.flatMap(serves))].join(', ')} only`,
      },
      expiresAt,
    };
  }
  return {
    condition: { type: 'Proxied', status: 'True', reason: 'Proxied', message: `served by ${names}` },
    expiresAt,
  };
}

/** The proxies' Leases that are live now and whose proxy serves the Service's namespace. */
export function liveProxies(service: Service, proxies: readonly Lease[], now = Date.now()): Lease[] {
  const namespace = service.metadata.namespace;
  return proxies.filter((l) => {
    const scope = l.metadata?.annotations?.[PROXY_NAMESPACE_ANNOTATION];
    return !leaseExpired(l, now) && (scope === undefined || scope === namespace);
  });
}

/**
 * Makes the Service's EndpointSlices hold `endpoints` (planSlices keeps each endpoint in its
 * slice), writing only the slices that changed. New slices are named `<service>-<n>`, the smallest
 * n free, so a cache that lags makes a create fail (and the queue retry) rather than duplicate.
 */
async function writeSlices(
  ctx: OperatorContext,
  service: Service,
  endpoints: ServiceEndpoint[],
): Promise<void> {
  const namespace = service.metadata.namespace as string;
  const name = service.metadata.name as string;
  const existing = slicesOfService(ctx, `${namespace}/${name}`);
  const plan = planSlices(endpoints, existing);
  const byName = new Map(existing.map((e) => [e.metadata.name as string, e]));
  const taken = new Set(byName.keys());
  const client = ctx.clients.endpointSlices;
  for (const slice of plan.keep) {
    const body = {
      count: slice.endpoints.length,
      ready: slice.endpoints.filter((e) => e.ready).length,
      endpoints: slice.endpoints,
    };
    const current = slice.name ? byName.get(slice.name) : undefined;
    if (current) {
      const same =
        current.count === body.count &&
        current.ready === body.ready &&
        JSON.stringify(current.endpoints) === JSON.stringify(body.endpoints);
      if (!same) await client.replace({ ...current, ...body }).catch(ignoreGone);
      continue;
    }
    let n = 0;
    while (taken.has(`${name}-${n}`)) n++;
    taken.add(`${name}-${n}`);
    const fresh: EndpointSlice = {
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'EndpointSlice',
      metadata: {
        name: `${name}-${n}`,
        namespace,
        labels: { [SERVICE_NAME_LABEL]: name, [MANAGED_BY_LABEL]: ENDPOINT_SLICE_MANAGER },
        ownerReferences: [
          {
            apiVersion: 'orrery.dev/v1alpha1',
            kind: 'Service',
            name,
            uid: service.metadata.uid as string,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      service: name,
      ...body,
    };
    // Already there: the cache had not seen it yet; its watch event brings the Service back.
    await client.create(fresh, { namespace }).catch((error: unknown) => {
      if (!isAlreadyExists(error)) throw error;
    });
  }
  for (const gone of plan.remove) await client.delete(gone, { namespace }).catch(ignoreGone);
}

function ignoreGone(error: unknown): void {
  if (!isNotFound(error)) throw error;
}
