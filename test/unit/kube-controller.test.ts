import test from 'ava';
import { ownerKeyMapper, runController } from '../../kube/controller.ts';
import { ItemExponentialRateLimiter } from '../../kube/ratelimit.ts';
import type { KubeObject } from '../../kube/types.ts';
import { WorkQueue } from '../../kube/workqueue.ts';
import { eventually } from '../helpers/wait.ts';

test('a failing reconcile is retried with growing backoff, and success forgets the failures', async (t) => {
  const queue = new WorkQueue<string>({ rateLimiter: new ItemExponentialRateLimiter<string>(5, 1000) });
  const attempts: number[] = [];
  let finished!: () => void;
  const allDone = new Promise<void>((r) => {
    finished = r;
  });
  const ctrl = runController({
    name: 'flaky',
    queue,
    reconcile: async () => {
      attempts.push(performance.now());
      if (attempts.length < 4) throw new Error('not yet');
      finished();
    },
  });
  t.teardown(() => ctrl.stop());
  queue.add('ns/a');
  await allDone;
  t.is(attempts.length, 4);
  await new Promise((r) => setImmediate(r));
  t.is(queue.numRequeues('ns/a'), 0, 'forgotten after success');
  const gaps = attempts.slice(1).map((a, i) => a - (attempts[i] as number));
  // 5, 10, 20 ms requested; timers only fire late, never early.
  t.true(
    (gaps[0] as number) >= 4 && (gaps[2] as number) >= 19,
    `gaps ${gaps.map((g) => g.toFixed(1)).join(', ')}`,
  );
});

test('requeueAfterMs brings the key back after that delay, and nothing else brings it back', async (t) => {
  const queue = new WorkQueue<string>();
  const requeueAfterMs = 100;
  const started: number[] = [];
  const returned: number[] = [];
  // The queue as each reconcile leaves it: onReconciled runs after the requeue, before done(key).
  const queueAfter: { ready: number; waiting: number }[] = [];
  const ctrl = runController({
    name: 'periodic',
    queue,
    reconcile: async () => {
      started.push(performance.now());
      const result = started.length === 1 ? { requeueAfterMs } : undefined;
      returned.push(performance.now());
      return result;
    },
    onReconciled: () => queueAfter.push({ ready: queue.len(), waiting: queue.waitingLen() }),
  });
  t.teardown(() => ctrl.stop());
  // The only add: a second reconcile can come from the controller's own requeue alone.
  queue.add('k');
  await eventually('the first reconcile', () => queueAfter.length >= 1);
  t.deepEqual(queueAfter[0], { ready: 0, waiting: 1 }, 'the key is held for requeueAfterMs, not queued now');
  await eventually('the second reconcile', () => queueAfter.length >= 2, { timeoutMs: 5000 });
  const gap = (started[1] as number) - (returned[0] as number);
  // Timers fire late, never early (the queue allows 1 ms of clock slack); no upper bound.
  t.true(gap >= requeueAfterMs - 1, `reconciled again after ${gap.toFixed(1)} ms`);
  t.deepEqual(queueAfter[1], { ready: 0, waiting: 0 }, 'no requeueAfterMs: the key is not scheduled again');
  t.is(started.length, 2);
});

test('a key added while it is reconciled waits for that reconcile: never two at once', async (t) => {
  const queue = new WorkQueue<string>();
  let running = 0;
  let maxRunning = 0;
  let calls = 0;
  const ctrl = runController({
    name: 'busy',
    queue,
    workers: 4,
    reconcile: async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      calls++;
      // An event for the same key arrives while reconciling, with three idle workers to take it.
      if (calls < 3) queue.add('k');
      await new Promise((r) => setTimeout(r, 5));
      running--;
    },
  });
  t.teardown(() => ctrl.stop());
  queue.add('k');
  await eventually('the reconciles the adds asked for', () => calls >= 3 && running === 0);
  await ctrl.stop();
  t.is(maxRunning, 1, 'a key is never reconciled by two workers at once');
  t.is(calls, 3, 'each add during a reconcile brought the key back once, after it');
});

test('stop() lets the in-flight reconcile finish and ends the workers', async (t) => {
  const queue = new WorkQueue<string>();
  let completed = false;
  let started!: () => void;
  const isStarted = new Promise<void>((r) => {
    started = r;
  });
  const ctrl = runController({
    name: 'slow',
    queue,
    reconcile: async () => {
      started();
      await new Promise((r) => setTimeout(r, 30));
      completed = true;
    },
  });
  queue.add('x');
  await isStarted;
  await ctrl.stop();
  t.true(completed);
});

test('stop() before the caches synced returns, and no reconcile runs', async (t) => {
  // An informer stopped before its first list completed never syncs (the host agent SIGTERMed
  // while it lists its replicas after a restart).
  const neverSyncs = {
    waitForSync: (opts: { signal?: AbortSignal } = {}) =>
      new Promise<void>((_, reject) =>
        opts.signal?.addEventListener('abort', () => reject(new Error('aborted'))),
      ),
  };
  const queue = new WorkQueue<string>();
  let reconciled = 0;
  const ctrl = runController({
    name: 'unsynced',
    queue,
    waitFor: [neverSyncs],
    reconcile: async () => {
      reconciled++;
    },
  });
  queue.add('x');
  await ctrl.stop();
  t.is(reconciled, 0);
});

test('owner mapping returns the controlling owner of the right kind and group', (t) => {
  const map = ownerKeyMapper<KubeObject>('Instance', 'orrery.dev');
  const replica: KubeObject = {
    metadata: {
      name: 'web-0',
      namespace: 'shop',
      ownerReferences: [
        { apiVersion: 'v1', kind: 'Instance', name: 'wrong-group', uid: '1', controller: true },
        { apiVersion: 'orrery.dev/v1alpha1', kind: 'Instance', name: 'not-controller', uid: '2' },
        { apiVersion: 'orrery.dev/v1alpha1', kind: 'Instance', name: 'web', uid: '3', controller: true },
      ],
    },
  };
  t.is(map(replica), 'shop/web');
  t.is(map({ metadata: { name: 'orphan', namespace: 'shop' } }), undefined);
});
