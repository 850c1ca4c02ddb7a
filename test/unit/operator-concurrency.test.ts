import test from 'ava';
import { forEachLimited } from '../../platform/concurrency.ts';

test('forEachLimited runs every item with at most the limit in flight', async (t) => {
  let inFlight = 0;
  let most = 0;
  const done: number[] = [];
  await forEachLimited([...Array(50).keys()], 4, async (i) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((resolve) => setTimeout(resolve, i % 3));
    done.push(i);
    inFlight--;
  });
  t.is(most, 4);
  t.deepEqual(
    done.sort((a, b) => a - b),
    [...Array(50).keys()],
  );
});

test('forEachLimited rejects with the first error and starts nothing after it', async (t) => {
  const started: number[] = [];
  const error = await t.throwsAsync(
    forEachLimited([1, 2, 3, 4, 5, 6], 2, async (i) => {
      started.push(i);
      if (i === 2) throw new Error('boom at 2');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }),
  );
  t.is(error?.message, 'boom at 2');
  t.true(started.length < 6, `started ${started.join(',')}`);
});
