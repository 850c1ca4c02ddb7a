import test from 'ava';
import { ownerKeyMapper, runController } from '../../kube/controller.ts';
import { ItemExponentialRateLimiter } from '../../kube/ratelimit.ts';
import type { KubeObject } from '../../kube/types.ts';
import { WorkQueue } from '../../kube/workqueue.ts';

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

test('requeueAfterMs brings the key back later; a key is never reconciled concurrently', async (t) => {
  const queue = new WorkQueue<string>({ rateLimiter: new ItemExponentialRateLimiter<string>(5, 1000) });
  let running = 0;
  let maxRunning = 0;
  let calls = 0;
  let finished!: () => void;
  const allDone = new Promise<void>((r) => {
    finished = r;
  });
  const ctrl = runController({
    name: 'periodic',
    queue,
    workers: 4,
    reconcile: async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      calls++;
      await new Promise((r) => setTimeout(r, 5));
      queue.add('k'); // an event arrives while reconciling
      running--;
      if (calls === 3) finished();
      return calls < 3 ? { requeueAfterMs: 10 } : undefined;
    },
  });
  queue.add('k');
  await allDone;
  await ctrl.stop();
  t.is(maxRunning, 1);
  t.true(calls >= 3);
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
