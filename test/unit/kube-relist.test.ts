import test from 'ava';
import { diffRelist } from '../../kube/relist.ts';
import type { KubeObject } from '../../kube/types.ts';

const obj = (ns: string, name: string, rv: string, uid = `uid-${name}`): KubeObject => ({
  metadata: { namespace: ns, name, resourceVersion: rv, uid },
});

test('a relist reports objects added, changed and vanished since the cache was filled', (t) => {
  const cache = new Map<string, KubeObject>([
    ['a/kept', obj('a', 'kept', '1')],
    ['a/changed', obj('a', 'changed', '2')],
    ['a/gone', obj('a', 'gone', '3')],
  ]);
  const items = [obj('a', 'kept', '1'), obj('a', 'changed', '7'), obj('a', 'new', '8')];
  const d = diffRelist(cache, items);
  t.deepEqual(
    d.added.map((o) => o.metadata?.name),
    ['new'],
  );
  t.deepEqual(
    d.updated.map((u) => [u.old.metadata?.resourceVersion, u.new.metadata?.resourceVersion]),
    [['2', '7']],
  );
  t.deepEqual(
    d.deleted.map((o) => o.metadata?.name),
    ['gone'],
  );
  t.deepEqual([...d.next.keys()].sort(), ['a/changed', 'a/kept', 'a/new']);
  t.is(cache.size, 3, 'the input cache is not modified');
});

test('a name recreated with a new uid is reported as delete then add, not update', (t) => {
  const cache = new Map<string, KubeObject>([['ns/x', obj('ns', 'x', '1', 'old-uid')]]);
  const d = diffRelist(cache, [obj('ns', 'x', '5', 'new-uid')]);
  t.deepEqual(
    d.deleted.map((o) => o.metadata?.uid),
    ['old-uid'],
  );
  t.deepEqual(
    d.added.map((o) => o.metadata?.uid),
    ['new-uid'],
  );
  t.is(d.updated.length, 0);
});

test('cluster-scoped objects are keyed by name alone', (t) => {
  const d = diffRelist(new Map(), [{ metadata: { name: 'host-a', resourceVersion: '1' } }]);
  t.deepEqual([...d.next.keys()], ['host-a']);
});

test('an empty list against a full cache deletes everything; identical lists change nothing', (t) => {
  const cache = new Map<string, KubeObject>([['n/a', obj('n', 'a', '1')]]);
  t.is(diffRelist(cache, []).deleted.length, 1);
  const same = diffRelist(cache, [obj('n', 'a', '1')]);
  t.is(same.added.length + same.updated.length + same.deleted.length, 0);
});
