// The Service controller: reconcile(namespace/name) gives the Service a stable virtual IP from
// the loopback range and keeps its endpoint counts and conditions current. The mesh proxies
// watch Services and Replicas themselves; this status is for people and tools.

import { sameConditions, setConditions } from '../../crds/conditions.ts';
import type { Replica, Service, ServiceStatus } from '../../crds/types.ts';
import { enqueueFromInformer, isNotFound, objectKey, type ReconcileResult } from '../../kube/index.ts';
import {
  type Controller,
  type OperatorContext,
  replicasInNamespace,
  servicesInNamespace,
  servicesWithVirtualIP,
} from '../context.ts';
import { isReady } from '../instance/plan.ts';
import { allocateVip, type Cidr, inRange } from './vip.ts';

export function selects(service: Service, replica: Replica): boolean {
  if (replica.metadata.namespace !== service.metadata.namespace) return false;
  const labels = replica.metadata.labels ?? {};
  return Object.entries(service.spec.selector).every(([k, v]) => labels[k] === v);
}

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
  const endpoints = replicasInNamespace(ctx, service.metadata.namespace as string).filter(
    (r) => selects(service, r) && !r.metadata.deletionTimestamp,
  );
  const ready = endpoints.filter(isReady).length;
  const generation = service.metadata.generation;
  const next: ServiceStatus = {
    virtualIP,
    readyEndpoints: ready,
    totalEndpoints: endpoints.length,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    conditions: setConditions(
      service.status?.conditions,
      [
        ready > 0
          ? {
              type: 'Ready',
              status: 'True',
              reason: 'EndpointsReady',
              message: `${ready} of ${endpoints.length} endpoints ready`,
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
        // Until a mesh proxy serves virtual IPs, say so rather than let the traffic fields look
        // as if they worked (docs/DESIGN.md §6).
        {
          type: 'Proxied',
          status: 'False',
          reason: 'NoMeshProxy',
          message:
            'no mesh proxy serves this virtual IP yet: connections to it fail, and loadBalancer, circuitBreaker, outlierDetection, retries and timeoutMs have no effect',
        },
      ],
      generation,
    ),
  };
  const previous = service.status;
  if (
    previous &&
    previous.virtualIP === next.virtualIP &&
    previous.readyEndpoints === next.readyEndpoints &&
    previous.totalEndpoints === next.totalEndpoints &&
    previous.observedGeneration === next.observedGeneration &&
    sameConditions(previous.conditions, next.conditions)
  ) {
    return undefined;
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
  return undefined;
}
