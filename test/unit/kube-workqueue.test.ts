import test from 'ava';
import { BucketRateLimiter, ItemExponentialRateLimiter, MaxOfRateLimiter } from '../../kube/ratelimit.ts';
import { WorkQueue } from '../../kube/workqueue.ts';

const noLimit = () => new ItemExponentialRateLimiter<string>(5, 1_000_000);
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a key added many times while queued is handed out once', async (t) => {
  const q = new WorkQueue<string>({ rateLimiter: noLimit() });
  q.add('a');
  q.add('b');
  q.add('a');
  q.add('a');
  t.is(q.len(), 2);
  t.is(await q.get(), 'a');
  t.is(await q.get(), 'b');
  t.is(q.len(), 0);
  q.shutdown();
});

test('a key added while being processed is queued again only after done()', async (t) => {
  const q = new WorkQueue<string>({ rateLimiter: noLimit() });
  q.add('a');
  const key = await q.get();
  t.is(key, 'a');
  q.add('a'); // dirty while processing: must not be handed to a second worker
  q.add('a');
  t.is(q.len(), 0);
  let second: string | undefined;
  const pending = q.get().then((k) => {
    second = k;
  });
  await wait(10);
  t.is(second, undefined, 'no second worker may get a key that is still processing');
  q.done('a');
  await pending;
  t.is(second, 'a');
  q.done('a');
  t.is(q.len(), 0, 'done without a new add does not requeue');
  q.shutdown();
});

test('keys are processed FIFO and getters waiting are served in order', async (t) => {
  const q = new WorkQueue<string>({ rateLimiter: noLimit() });
  const got = [q.get(), q.get()];
  q.add('x');
  q.add('y');
  t.deepEqual(await Promise.all(got), ['x', 'y']);
  q.shutdown();
});

test('the per-key rate limit doubles from 5 ms and caps at 1000 s; forget resets it', (t) => {
  const rl = new ItemExponentialRateLimiter<string>(5, 1_000_000);
  const delays = Array.from({ length: 6 }, () => rl.when('k'));
  t.deepEqual(delays, [5, 10, 20, 40, 80, 160]);
  t.is(rl.when('other'), 5, 'keys back off independently');
  for (let i = 0; i < 100; i++) rl.when('k');
  t.is(rl.when('k'), 1_000_000);
  t.is(rl.numRequeues('k'), 107);
  rl.forget('k');
  t.is(rl.when('k'), 5);
});

test('the token bucket allows a burst and then spaces requests at 1/qps', (t) => {
  let now = 0;
  const rl = new BucketRateLimiter<string>(10, 3, () => now);
  t.deepEqual([rl.when('a'), rl.when('b'), rl.when('c')], [0, 0, 0]);
  t.is(Math.round(rl.when('d')), 100);
  t.is(Math.round(rl.when('e')), 200);
  now = 1000; // 10 tokens refilled, but debt of 2 first; capped at burst 3
  t.is(rl.when('f'), 0);
});

test('MaxOf takes the longest delay of its limiters', (t) => {
  const now = 0;
  const rl = new MaxOfRateLimiter<string>(
    new ItemExponentialRateLimiter<string>(5, 1000),
    new BucketRateLimiter<string>(1, 1, () => now),
  );
  t.is(rl.when('a'), 5);
  t.is(Math.round(rl.when('a')), 1000, 'bucket exhausted: 1 s until the next token');
  t.is(rl.numRequeues('a'), 2);
});

test('addRateLimited delays by the backoff and forget clears the history', async (t) => {
  const q = new WorkQueue<string>({ rateLimiter: new ItemExponentialRateLimiter<string>(20, 10_000) });
  q.addRateLimited('k');
  t.is(q.len(), 0);
  t.is(q.waitingLen(), 1);
  t.is(q.numRequeues('k'), 1);
  t.is(await q.get(), 'k');
  q.done('k');
  q.addRateLimited('k');
  t.is(q.numRequeues('k'), 2);
  q.forget('k');
  t.is(q.numRequeues('k'), 0);
  q.shutdown();
});

test('addAfter releases keys in deadline order, and an earlier deadline wins for a waiting key', async (t) => {
  const q = new WorkQueue<string>({ rateLimiter: noLimit() });
  q.addAfter('late', 60);
  q.addAfter('early', 10);
  q.addAfter('middle', 30);
  q.addAfter('late', 200); // later deadline for a waiting key: ignored
  q.addAfter('moved', 300);
  q.addAfter('moved', 40); // earlier deadline: wins
  t.is(q.len(), 0);
  const order: string[] = [];
  for (let i = 0; i < 4; i++) {
    const k = (await q.get()) as string;
    order.push(k);
    q.done(k);
  }
  t.deepEqual(order, ['early', 'middle', 'moved', 'late']);
  await wait(320);
  t.is(q.len(), 0, 'superseded deadlines do not add the key a second time');
  q.shutdown();
});

test('addAfter with a non-positive delay adds immediately', (t) => {
  const q = new WorkQueue<string>({ rateLimiter: noLimit() });
  q.addAfter('now', 0);
  t.is(q.len(), 1);
  q.shutdown();
});

test('shutdown drains queued keys, then releases waiting getters with undefined and ignores adds', async (t) => {
  const q = new WorkQueue<string>({ rateLimiter: noLimit() });
  q.add('a');
  q.addAfter('delayed', 50);
  q.shutdown();
  t.true(q.isShuttingDown());
  t.is(await q.get(), 'a', 'keys queued before shutdown are still handed out');
  t.is(await q.get(), undefined);
  q.add('b');
  t.is(q.len(), 0);
  await wait(80);
  t.is(q.len(), 0, 'delayed keys are dropped at shutdown');

  const q2 = new WorkQueue<string>({ rateLimiter: noLimit() });
  const waiting = [q2.get(), q2.get()];
  q2.shutdown();
  t.deepEqual(await Promise.all(waiting), [undefined, undefined]);
});

test('onDequeue reports how long a key waited while ready', async (t) => {
  const waited: [string, number][] = [];
  let now = 0;
  const q = new WorkQueue<string>({
    rateLimiter: noLimit(),
    now: () => now,
    onDequeue: (k, ms) => waited.push([k, ms]),
  });
  q.add('a');
  now = 7;
  q.add('b');
  now = 10;
  t.is(await q.get(), 'a');
  t.is(await q.get(), 'b');
  const pending = q.get();
  q.add('c'); // a worker was already waiting: no queueing at all
  t.is(await pending, 'c');
  t.deepEqual(waited, [
    ['a', 10],
    ['b', 3],
    ['c', 0],
  ]);
  q.shutdown();
});
