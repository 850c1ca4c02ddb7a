// tui/heap.ts: the young generation grows under a load whose objects survive a while, as V8
// grows it, until the cap; from there on it stays, however long the load goes on. (Its own
// process: ava runs each test file in one, and the V8 flag is for the whole process.)
import { setImmediate as tick } from 'node:timers/promises';
import test from 'ava';
import { capYoungGeneration, youngGenerationBytes } from '../../tui/heap.ts';

/** Frames' worth of garbage, a part of it kept for a while (as rows are, until the next frame). */
async function churn(rounds: number): Promise<void> {
  const kept: unknown[][] = [];
  for (let i = 0; i < rounds; i++) {
    const objects: unknown[] = [];
    for (let j = 0; j < 5000; j++) objects.push({ j, text: `row ${j}` });
    if (i % 10 === 0) kept.push(objects);
    if (kept.length > 50) kept.shift();
    // The observer hears of collections between tasks, as between frames.
    if (i % 20 === 0) await tick();
  }
}

test('the young generation grows up to the cap, then stays there', async (t) => {
  const start = youngGenerationBytes();
  await churn(200);
  const grown = youngGenerationBytes();
  t.true(grown > start, `V8 grows it under this load (${start} → ${grown})`);
  const cap = grown * 2;
  capYoungGeneration(cap);
  for (let i = 0; i < 100 && youngGenerationBytes() < cap; i++) await churn(50);
  const capped = youngGenerationBytes();
  t.true(capped >= cap, `reached the cap (${capped})`);
  await churn(3000);
  t.is(youngGenerationBytes(), capped, 'no further');
});
