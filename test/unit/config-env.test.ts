// The env resolution of issue 19 as pure logic (node-runtime/agent/config-env.ts) over objects
// held in memory, and what the operator grants a host (operator/hostaccess/objects.ts). The API
// server's part is in test/integration/config-env.test.ts.
import test from 'ava';
import type { Replica, ReplicaTemplate } from '../../crds/types.ts';
import {
  ConfigAccessError,
  type ConfigKind,
  type ConfigObjects,
  resolveEnv,
  UnresolvedConfigError,
} from '../../node-runtime/agent/config-env.ts';
import { wantedAccess } from '../../operator/hostaccess/controller.ts';
import { accessRules } from '../../operator/hostaccess/objects.ts';

function objects(
  store: Record<string, Record<string, string>>,
  forbidden: string[] = [],
): ConfigObjects & {
  reads: string[];
} {
  const reads: string[] = [];
  return {
    reads,
    async data(kind: ConfigKind, _ns: string, name: string) {
      reads.push(`${kind}/${name}`);
      if (forbidden.includes(`${kind}/${name}`)) throw new ConfigAccessError(`${name} is not readable`);
      return store[`${kind}/${name}`];
    },
  };
}

const template = (process: Record<string, unknown>): ReplicaTemplate =>
  ({ processes: [{ name: 'main', command: ['x'], ...process }] }) as unknown as ReplicaTemplate;

test('envFrom in order, later entries overriding, then env overriding them all; each object read once', async (t) => {
  const store = objects({
    'ConfigMap/a': { X: 'from-a', Y: 'from-a' },
    'ConfigMap/b': { Y: 'from-b' },
    'Secret/s': { X: 'secret' },
  });
  const { env } = await resolveEnv(
    template({
      envFrom: [{ configMapRef: { name: 'a' } }, { configMapRef: { name: 'b' } }],
      env: [
        { name: 'X', value: 'v1', valueFrom: undefined },
        { name: 'Z', value: '', valueFrom: { secretKeyRef: { name: 's', key: 'X' } } },
        { name: 'W', value: '', valueFrom: { configMapKeyRef: { name: 'a', key: 'Y' } } },
      ],
    }),
    'ns',
    store,
  );
  t.deepEqual(env.get('main'), [
    { name: 'Y', value: 'from-b' },
    { name: 'X', value: 'v1' },
    { name: 'Z', value: 'secret' },
    { name: 'W', value: 'from-a' },
  ]);
  t.deepEqual(store.reads.sort(), ['ConfigMap/a', 'ConfigMap/b', 'Secret/s']);
});

test('a prefix goes before every key; keys that are no variable names are skipped and reported', async (t) => {
  const { env, skipped } = await resolveEnv(
    template({ envFrom: [{ prefix: 'P_', secretRef: { name: 's' } }, { configMapRef: { name: 'c' } }] }),
    'ns',
    objects({ 'Secret/s': { a: '1', '9': '2' }, 'ConfigMap/c': { '1x': 'no', ok: 'yes' } }),
  );
  t.deepEqual(env.get('main'), [
    { name: 'P_9', value: '2' },
    { name: 'P_a', value: '1' },
    { name: 'ok', value: 'yes' },
  ]);
  t.deepEqual(skipped, [{ kind: 'ConfigMap', name: 'c', keys: ['1x'] }]);
});

test('optional references that do not resolve leave the variable unset (or as envFrom set it)', async (t) => {
  const { env } = await resolveEnv(
    template({
      envFrom: [{ configMapRef: { name: 'gone', optional: true } }, { configMapRef: { name: 'c' } }],
      env: [
        {
          name: 'A',
          value: '',
          valueFrom: { configMapKeyRef: { name: 'c', key: 'missing', optional: true } },
        },
        { name: 'B', value: '', valueFrom: { secretKeyRef: { name: 'gone', key: 'k', optional: true } } },
      ],
    }),
    'ns',
    objects({ 'ConfigMap/c': { A: 'from-envFrom' } }),
  );
  t.deepEqual(env.get('main'), [{ name: 'A', value: 'from-envFrom' }]);
});

test('every reference that is not optional and does not resolve is named, with its field', async (t) => {
  const err = await t.throwsAsync(
    resolveEnv(
      template({
        envFrom: [{ secretRef: { name: 'creds' } }],
        env: [
          { name: 'A', value: '', valueFrom: { configMapKeyRef: { name: 'c', key: 'k' } } },
          { name: 'B', value: '', valueFrom: { secretKeyRef: { name: 'locked', key: 'k' } } },
        ],
      }),
      'ns',
      objects({ 'ConfigMap/c': { other: 'x' } }, ['Secret/locked']),
    ),
    { instanceOf: UnresolvedConfigError },
  );
  t.is(err?.unresolved.length, 3);
  t.regex(err?.message ?? '', /secret "creds" not found \(processes\[0\]\.envFrom\[0\]\)/);
  t.regex(err?.message ?? '', /key "k" not found in configmap ns\/c \(processes\[0\]\.env\[0\] A\)/);
  t.regex(err?.message ?? '', /locked is not readable \(processes\[0\]\.env\[1\] B\)/);
  // A refusal says more than an absence: it is the reason shown.
  t.is(err?.reason, 'ConfigForbidden');
});

test("a host's grants: get on exactly the names referenced per namespace, never an empty resourceNames", (t) => {
  const replica = (ns: string, process: Record<string, unknown>, deleting = false) =>
    ({
      metadata: { namespace: ns, name: 'r', ...(deleting ? { deletionTimestamp: 'now' } : {}) },
      spec: { host: 'h', template: template(process) },
    }) as unknown as Replica;
  const wanted = wantedAccess([
    replica('a', { envFrom: [{ secretRef: { name: 's2' } }, { secretRef: { name: 's1' } }] }),
    replica('a', { env: [{ name: 'X', valueFrom: { configMapKeyRef: { name: 'c', key: 'k' } } }] }),
    replica('b', { env: [{ name: 'X', value: 'literal' }] }),
    replica('c', { envFrom: [{ secretRef: { name: 'old' } }] }, true),
  ]);
  t.deepEqual([...wanted.keys()], ['a']);
  t.deepEqual(wanted.get('a'), [
    { apiGroups: [''], resources: ['configmaps'], verbs: ['get'], resourceNames: ['c'] },
    { apiGroups: [''], resources: ['secrets'], verbs: ['get'], resourceNames: ['s1', 's2'] },
  ]);
  t.deepEqual(accessRules({ configMaps: [], secrets: [] }), []);
});
