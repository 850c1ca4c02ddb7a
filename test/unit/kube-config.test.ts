import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { Backoff, linkedAbort } from '../../kube/backoff.ts';
import { loadKubeConfig } from '../../kube/config.ts';
import { isConflict, isGone, isNotFound, isRetryable, KubeApiError } from '../../kube/errors.ts';
import { objectKey, splitKey } from '../../kube/types.ts';

const kubeconfigFor = (server: string) => `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: ${server}, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}, {name: y, context: {cluster: c, user: u}}]
current-context: x
`;

test('an explicit kubeconfig wins over KUBECONFIG; the context can be chosen', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kube-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const explicit = join(dir, 'explicit');
  const fromEnv = join(dir, 'env');
  writeFileSync(explicit, kubeconfigFor('https://127.0.0.1:1111'));
  writeFileSync(fromEnv, kubeconfigFor('https://127.0.0.1:2222'));
  const env = { KUBECONFIG: `${join(dir, 'missing')}:${fromEnv}` };
  t.is(loadKubeConfig({ kubeconfig: explicit, env }).getCurrentCluster()?.server, 'https://127.0.0.1:1111');
  t.is(
    loadKubeConfig({ env }).getCurrentCluster()?.server,
    'https://127.0.0.1:2222',
    'first existing KUBECONFIG file',
  );
  t.is(loadKubeConfig({ kubeconfig: explicit, context: 'y', env }).getCurrentContext(), 'y');
});

test('a KUBECONFIG list is merged the way kubectl merges it: first definition wins', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kube-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const first = join(dir, 'first');
  const second = join(dir, 'second');
  writeFileSync(first, kubeconfigFor('https://127.0.0.1:1111'));
  writeFileSync(
    second,
    `${kubeconfigFor('https://127.0.0.1:2222')}`
      .replace('contexts: [', 'contexts: [{name: z, context: {cluster: c, user: u}}, ')
      .replace('current-context: x', 'current-context: z'),
  );
  const kc = loadKubeConfig({ env: { KUBECONFIG: `${first}:${second}` } });
  t.is(kc.getCurrentContext(), 'x', 'current-context of the first file that sets one');
  t.is(kc.getCurrentCluster()?.server, 'https://127.0.0.1:1111', 'cluster c from the first file');
  t.deepEqual(
    kc
      .getContexts()
      .map((c) => c.name)
      .sort(),
    ['x', 'y', 'z'],
  );
});

test('kubeconfig errors name what was expected', (t) => {
  t.throws(() => loadKubeConfig({ kubeconfig: '/nonexistent/kubeconfig' }), {
    message: 'kubeconfig file /nonexistent/kubeconfig does not exist',
  });
  t.throws(() => loadKubeConfig({ kubeconfig: '' }), {
    instanceOf: TypeError,
    message: /non-empty file path, got ""/,
  });
  t.throws(() => loadKubeConfig({ env: { KUBECONFIG: '/nope/a:/nope/b' } }), {
    message: /names no existing file/,
  });
});

test('API errors are classified by status and reason', (t) => {
  const err = (status: number, reason?: string) =>
    new KubeApiError({ status, method: 'GET', path: '/x', body: { kind: 'Status', reason, message: 'm' } });
  t.true(isNotFound(err(404, 'NotFound')));
  t.true(isConflict(err(409, 'Conflict')));
  t.false(isConflict(err(409, 'AlreadyExists')));
  t.true(isGone(err(410, 'Gone')));
  t.true(isGone(err(500, 'Expired')), 'a watch ERROR event may carry reason Expired');
  t.true(isRetryable(err(429)));
  t.true(isRetryable(new Error('ECONNREFUSED')));
  t.false(isRetryable(err(422, 'Invalid')));
  t.is(err(404, 'NotFound').message, 'GET /x failed with HTTP 404 (NotFound): m');
});

test('object keys follow client-go: namespace/name, or name for cluster-scoped objects', (t) => {
  t.is(objectKey({ metadata: { namespace: 'a', name: 'b' } }), 'a/b');
  t.is(objectKey({ metadata: { name: 'host-1' } }), 'host-1');
  t.deepEqual(splitKey('a/b'), { namespace: 'a', name: 'b' });
  t.deepEqual(splitKey('host-1'), { namespace: undefined, name: 'host-1' });
  t.throws(() => objectKey({ metadata: {} }), { message: /no metadata.name/ });
});

test('reconnect backoff grows with jitter up to its cap and resets', (t) => {
  const b = new Backoff(100, 800);
  const caps = [100, 200, 400, 800, 800];
  for (const cap of caps) {
    const d = b.next();
    t.true(d >= cap / 2 && d <= cap, `${d} within [${cap / 2}, ${cap}]`);
  }
  b.reset();
  t.true(b.next() <= 100);
  t.throws(() => new Backoff(0, 10), { instanceOf: TypeError });
});

test('a linked abort follows any of its sources and detaches on dispose', (t) => {
  const a = new AbortController();
  const b = new AbortController();
  const link = linkedAbort(a.signal, undefined, b.signal);
  b.abort('why');
  t.true(link.controller.signal.aborted);
  t.is(link.controller.signal.reason, 'why');
  const c = new AbortController();
  const link2 = linkedAbort(c.signal);
  link2.dispose();
  c.abort();
  t.false(link2.controller.signal.aborted);
});
