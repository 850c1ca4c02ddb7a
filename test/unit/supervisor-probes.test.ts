import test from 'ava';
import { initialThreshold, recordResult } from '../../node-runtime/probes/threshold.ts';

const th = { successThreshold: 2, failureThreshold: 3 };

test('a probe verdict flips only after the consecutive thresholds (kubelet counting)', (t) => {
  let s = initialThreshold();
  const steps: [boolean, boolean | undefined, boolean][] = [
    [true, undefined, false],
    [true, true, true],
    [false, true, false],
    [false, true, false],
    [true, true, false],
    [false, true, false],
    [false, true, false],
    [false, false, true],
  ];
  for (const [ok, healthy, changed] of steps) {
    const r = recordResult(s, ok, th);
    t.is(r.state.healthy, healthy);
    t.is(r.changed, changed);
    s = r.state;
  }
});
