// Which Replica events cost the operator a reconcile: the Instance controller spaces the ones that
// change only a Replica's status, host access ignores Replicas that reference no ConfigMap or
// Secret, and host lifecycle ignores those of a live host. Real work queues; the informers are stand-ins that only collect handlers.
import test from 'ava';
import type { Replica } from '../../crds/types.ts';
import { type InformerHandlers, onlyStatusChanged, WorkQueue } from '../../kube/index.ts';
import type { OperatorContext } from '../../operator/context.ts';
import { hostAccessController } from '../../operator/hostaccess/controller.ts';
import { hostController, LeaseObserver } from '../../operator/hosts/controller.ts';
import { instanceController } from '../../operator/instance/controller.ts';

class Handlers<T> {
  readonly all: InformerHandlers<T>[] = [];
  addHandlers(h: InformerHandlers<T>): () => void {
    this.all.push(h);
    return () => {};
  }
  add(o: T): void {
    for (const h of this.all) h.add?.(o);
  }
  update(old: T, o: T): void {
    for (const h of this.all) h.update?.(old, o);
  }
  delete(o: T): void {
    for (const h of this.all) h.delete?.(o, { finalStateUnknown: false });
  }
}

function replica(name: string, over: { template?: Replica['spec']['template'] } = {}): Replica {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Replica',
    metadata: {
      name,
      namespace: 'ns',
      uid: `uid-${name}`,
      generation: 1,
      resourceVersion: '1',
      labels: { 'orrery.dev/instance': 'web' },
      ownerReferences: [
        { apiVersion: 'orrery.dev/v1alpha1', kind: 'Instance', name: 'web', uid: 'i1', controller: true },
      ],
      finalizers: ['orrery.dev/runtime'],
    },
    spec: {
      instance: 'web',
      ordinal: 0,
      templateHash: 'h',
      host: 'a',
      template: over.template ?? { processes: [{ name: 'main', command: ['/bin/sleep', '1'] }] },
    },
  } as Replica;
}

/** The same Replica after a status write of the runtime's. */
function withStatus(r: Replica, phase: 'Pending' | 'Running', rv: string): Replica {
  return {
    ...r,
    metadata: { ...r.metadata, resourceVersion: rv },
    status: { phase, ready: phase === 'Running' },
  };
}

function fakeContext(hosts: Record<string, { renewedMsAgo: number }> = {}) {
  const replicas = new Handlers<Replica>();
  const other = () => new Handlers<never>();
  const leases = new Map(
    Object.entries(hosts).map(([host, h]) => [
      `orrery-system/host-${host}`,
      {
        metadata: { name: `host-${host}` },
        spec: { renewTime: new Date(Date.now() - h.renewedMsAgo).toISOString(), leaseDurationSeconds: 1 },
      },
    ]),
  );
  const lease = (key: string) => leases.get(key);
  const ctx = {
    informers: {
      instances: Object.assign(other(), { get: () => ({ metadata: { name: 'web' } }) }),
      replicas,
      hosts: Object.assign(other(), {
        get: (name: string) => (hosts[name] ? { metadata: { name } } : undefined),
      }),
      leases: Object.assign(other(), { get: lease }),
      roles: other(),
      roleBindings: other(),
      serviceAccounts: other(),
    },
    log: { error() {}, info() {} },
  } as unknown as OperatorContext;
  return { ctx, replicas };
}

test('onlyStatusChanged: a status write is one; a label, an annotation, a deletion or a new spec is not', (t) => {
  const r = replica('web-0');
  t.true(onlyStatusChanged(r, withStatus(r, 'Running', '2')));
  const labelled = { ...r, metadata: { ...r.metadata, labels: { ...r.metadata.labels, x: 'y' } } };
  t.false(onlyStatusChanged(r, labelled));
  const annotated = { ...r, metadata: { ...r.metadata, annotations: { 'orrery.dev/restartedAt': 'now' } } };
  t.false(onlyStatusChanged(r, annotated));
  const deleting = { ...r, metadata: { ...r.metadata, deletionTimestamp: '2026-01-01T00:00:00Z' } };
  t.false(onlyStatusChanged(r, deleting));
  const respecced = { ...r, metadata: { ...r.metadata, generation: 2 } };
  t.false(onlyStatusChanged(r, respecced));
  const unfinalized = { ...r, metadata: { ...r.metadata, finalizers: [] } };
  t.false(onlyStatusChanged(r, unfinalized));
  const replaced = { ...r, metadata: { ...r.metadata, uid: 'other' } };
  t.false(onlyStatusChanged(r, replaced));
});

test('Instance controller: status writes right after a reconcile are spaced into one; other changes reconcile at once', async (t) => {
  const { ctx, replicas } = fakeContext();
  const queue = new WorkQueue<string>();
  const controller = instanceController(ctx, { statusReconcileSpacingMs: 200 });
  controller.watch(queue);
  // A reconcile just started (its outcome does not matter here: the instance is a stand-in).
  const reconciledAt = performance.now();
  await Promise.resolve(controller.reconcile('ns/web')).catch(() => {});

  const rs = Array.from({ length: 50 }, (_, i) => replica(`web-${i}`));
  for (const r of rs) replicas.update(r, withStatus(r, 'Running', '2'));
  t.is(queue.len(), 0, 'no reconcile right away for status writes');
  t.is(queue.waitingLen(), 1, 'one reconcile waits for the spacing, for all 50');

  // Anything else about a Replica is not delayed.
  const r = rs[0] as Replica;
  replicas.update(r, { ...r, metadata: { ...r.metadata, deletionTimestamp: '2026-01-01T00:00:00Z' } });
  t.is(queue.len(), 1, 'a deletion reconciles at once');
  t.is(await queue.get(), 'ns/web');
  queue.done('ns/web');
  replicas.add(replica('web-60'));
  t.is(queue.len(), 1, 'a created Replica reconciles at once');
  t.is(await queue.get(), 'ns/web');
  queue.done('ns/web');

  // The spaced reconcile comes when the spacing is over.
  t.is(await queue.get(), 'ns/web');
  t.true(performance.now() - reconciledAt >= 190, 'it came once the spacing was over');
  queue.done('ns/web');
  queue.shutdown();
});

test('Instance controller: a status write long after the last reconcile reconciles at once', async (t) => {
  const { ctx, replicas } = fakeContext();
  const queue = new WorkQueue<string>();
  const controller = instanceController(ctx, { statusReconcileSpacingMs: 20 });
  controller.watch(queue);
  await Promise.resolve(controller.reconcile('ns/web')).catch(() => {});
  await new Promise((resolve) => setTimeout(resolve, 40));
  const r = replica('web-0');
  replicas.update(r, withStatus(r, 'Running', '2'));
  t.is(queue.len(), 1);
  queue.shutdown();
});

test('host access: Replicas that reference no ConfigMap or Secret cost no reconcile; those that do, one', (t) => {
  const { ctx, replicas } = fakeContext();
  const queue = new WorkQueue<string>();
  hostAccessController(ctx).watch(queue);

  const plain = replica('web-0');
  replicas.add(plain);
  replicas.update(plain, withStatus(plain, 'Running', '2'));
  replicas.delete(plain);
  t.is(queue.len(), 0, 'a Replica without references changes no grant');

  const reading = replica('web-1', {
    template: {
      processes: [
        {
          name: 'main',
          command: ['/bin/sleep', '1'],
          env: [{ name: 'A', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }],
        },
      ],
    } as unknown as Replica['spec']['template'],
  });
  replicas.add(reading);
  t.is(queue.len(), 1, 'a Replica that reads a Secret: its host reconciled');
  queue.shutdown();

  const q2 = new WorkQueue<string>();
  const second = fakeContext();
  hostAccessController(second.ctx).watch(q2);
  second.replicas.update(reading, withStatus(reading, 'Running', '2'));
  t.is(q2.len(), 0, 'its status writes change no grant');
  second.replicas.update(reading, {
    ...reading,
    metadata: { ...reading.metadata, deletionTimestamp: '2026-01-01T00:00:00Z' },
  });
  t.is(q2.len(), 1, 'its deletion does');
  second.replicas.delete(reading);
  q2.shutdown();
});

test('host lifecycle: events of Replicas on a live host cost no reconcile; on a gone or silent host they do', (t) => {
  const observer = new LeaseObserver();
  // Host a renews; host b's renewal was first seen 2 s ago (a 1 s Lease): silent.
  const { ctx, replicas } = fakeContext({ a: { renewedMsAgo: 0 }, b: { renewedMsAgo: 2000 } });
  observer.observe(ctx.informers.leases.get('orrery-system/host-b') as never, Date.now() - 2000);
  const queue = new WorkQueue<string>();
  hostController(ctx, { graceMs: 1000, leases: observer }).watch(queue);

  const onA = replica('web-0');
  replicas.add(onA);
  replicas.update(onA, withStatus(onA, 'Running', '2'));
  t.is(queue.len(), 0, 'a live host: nothing to do for its replicas');

  const onB = { ...replica('web-1'), spec: { ...replica('web-1').spec, host: 'b' } };
  replicas.add(onB);
  t.is(queue.len(), 1, 'a silent host: its replica brings it to the queue');
  const onGone = { ...replica('web-2'), spec: { ...replica('web-2').spec, host: 'c' } };
  replicas.add(onGone);
  t.is(queue.len(), 2, 'a host that is gone: likewise');
  queue.shutdown();
});
