import test from 'ava';
import { CreateExpectations } from '../../operator/instance/controller.ts';

test('a created Replica is pending until the informer reports it, or until the TTL passes', (t) => {
  const e = new CreateExpectations(1000);
  t.false(e.isPending('ns/web-0'));
  e.expect('ns/web-0', 0);
  t.true(e.isPending('ns/web-0', 500), 'created, not yet in the cache: not created again');
  e.observed('ns/web-0');
  t.false(e.isPending('ns/web-0', 500), 'seen: the cache decides from now on');
  e.expect('ns/web-1', 0);
  t.false(e.isPending('ns/web-1', 1001), 'a watch event that never came does not block it forever');
});
