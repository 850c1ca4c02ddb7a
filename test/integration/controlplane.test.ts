// The local control plane (controlplane, docs/DESIGN.md §8) is the real kube-apiserver: these tests
// talk to it with the real kubectl and @kubernetes/client-node, and start, stop and restart
// private instances of it on their own data dirs.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiException, CoreV1Api, KubeConfig, type V1ConfigMap, Watch } from '@kubernetes/client-node';
import test, { type ExecutionContext } from 'ava';
import { kubernetesVersion } from '../../controlplane/binary.ts';
import {
  type ControlPlane,
  ensureControlPlaneBinary,
  startControlPlane,
} from '../../controlplane/controlplane.ts';
import { freePort } from '../../platform/net.ts';
import { freshNamespace, kubectl, testCluster } from '../helpers/cluster.ts';

function coreApi(kubeconfig: string): CoreV1Api {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  return kc.makeApiClient(CoreV1Api);
}

function tempDir(t: ExecutionContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

test('the apiserver answers kubectl version and api-resources', async (t) => {
  const { kubeconfig, server } = await testCluster();
  t.regex(server, /^https:\/\/127\.0\.0\.1:\d+$/);

  const version = await kubectl(kubeconfig, ['version', '-o', 'json']);
  t.is(version.code, 0, version.stderr);
  const serverVersion = JSON.parse(version.stdout).serverVersion as {
    gitVersion: string;
    major: string;
    minor: string;
  };
  t.log(`server version ${serverVersion.gitVersion}`);
  // The release controlplane/go.mod requires of k8s.io/kubernetes, stamped in at build time.
  const expected = await kubernetesVersion();
  t.is(serverVersion.gitVersion, expected);
  t.deepEqual([serverVersion.major, serverVersion.minor], expected.slice(1).split('.').slice(0, 2));

  const resources = await kubectl(kubeconfig, ['api-resources', '-o', 'name']);
  t.is(resources.code, 0, resources.stderr);
  const names = resources.stdout.split('\n');
  for (const r of [
    'namespaces',
    'configmaps',
    'customresourcedefinitions.apiextensions.k8s.io',
    'leases.coordination.k8s.io',
    'clusterroles.rbac.authorization.k8s.io',
    'apiservices.apiregistration.k8s.io',
  ]) {
    t.true(names.includes(r), `api-resources lists ${r}`);
  }
  // The admin certificate is in system:masters, which RBAC's bootstrap policy binds to cluster-admin.
  const whoami = await kubectl(kubeconfig, ['auth', 'can-i', '*', '*', '--all-namespaces']);
  t.is(whoami.stdout.trim(), 'yes');
});

test('RBAC is enforced for other users', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const denied = await kubectl(kubeconfig, [
    'auth',
    'can-i',
    'create',
    'configmaps',
    '-n',
    ns,
    '--as',
    'nobody',
  ]);
  t.is(denied.stdout.trim(), 'no');
  const role = await kubectl(kubeconfig, [
    'create',
    'role',
    'cm-writer',
    '-n',
    ns,
    '--verb=create',
    '--resource=configmaps',
  ]);
  t.is(role.code, 0, role.stderr);
  const binding = await kubectl(kubeconfig, [
    'create',
    'rolebinding',
    'cm-writer',
    '-n',
    ns,
    '--role=cm-writer',
    '--user=nobody',
  ]);
  t.is(binding.code, 0, binding.stderr);
  const allowed = await kubectl(kubeconfig, [
    'auth',
    'can-i',
    'create',
    'configmaps',
    '-n',
    ns,
    '--as',
    'nobody',
  ]);
  t.is(allowed.stdout.trim(), 'yes');
});

test('server-side apply tracks two field managers and refuses a conflicting apply', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const apply = (manager: string, data: Record<string, string>, force = false) =>
    kubectl(
      kubeconfig,
      [
        'apply',
        '--server-side',
        `--field-manager=${manager}`,
        ...(force ? ['--force-conflicts'] : []),
        '-f',
        '-',
      ],
      {
        input: JSON.stringify({
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { name: 'ssa', namespace: ns },
          data,
        }),
      },
    );

  const first = await apply('alpha', { a: '1', shared: 'from-alpha' });
  t.is(first.code, 0, first.stderr);

  const conflicting = await apply('beta', { b: '2', shared: 'from-beta' });
  t.not(conflicting.code, 0);
  t.regex(conflicting.stderr, /conflict/i);
  t.regex(conflicting.stderr, /alpha/);
  t.regex(conflicting.stderr, /\.data\.shared/);

  const disjoint = await apply('beta', { b: '2' });
  t.is(disjoint.code, 0, disjoint.stderr);

  const got = await kubectl(kubeconfig, [
    'get',
    'configmap',
    'ssa',
    '-n',
    ns,
    '-o',
    'json',
    '--show-managed-fields',
  ]);
  const cm = JSON.parse(got.stdout) as V1ConfigMap;
  t.deepEqual(cm.data, { a: '1', b: '2', shared: 'from-alpha' });
  const managers = new Map((cm.metadata?.managedFields ?? []).map((f) => [f.manager, f]));
  t.deepEqual([...managers.keys()].sort(), ['alpha', 'beta']);
  t.is(managers.get('alpha')?.operation, 'Apply');
  t.true(JSON.stringify(managers.get('alpha')?.fieldsV1).includes('f:shared'));
  t.false(JSON.stringify(managers.get('beta')?.fieldsV1).includes('f:shared'));

  // --force-conflicts moves ownership of the field to the new manager.
  const forced = await apply('beta', { b: '2', shared: 'from-beta' }, true);
  t.is(forced.code, 0, forced.stderr);
  const after = JSON.parse(
    (await kubectl(kubeconfig, ['get', 'configmap', 'ssa', '-n', ns, '-o', 'json', '--show-managed-fields']))
      .stdout,
  ) as V1ConfigMap;
  t.is(after.data?.shared, 'from-beta');
  const alphaAfter = after.metadata?.managedFields?.find((f) => f.manager === 'alpha');
  t.false(JSON.stringify(alphaAfter?.fieldsV1).includes('f:shared'));
});

test('an update with a stale resourceVersion gets 409 Conflict', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const api = coreApi(kubeconfig);
  const created = await api.createNamespacedConfigMap({
    namespace: ns,
    body: { metadata: { name: 'optimistic' }, data: { v: '1' } },
  });
  const stale = structuredClone(created);
  const updated = await api.replaceNamespacedConfigMap({
    name: 'optimistic',
    namespace: ns,
    body: { ...created, data: { v: '2' } },
  });
  t.not(updated.metadata?.resourceVersion, created.metadata?.resourceVersion);

  const error = await t.throwsAsync(
    api.replaceNamespacedConfigMap({
      name: 'optimistic',
      namespace: ns,
      body: { ...stale, data: { v: '3' } },
    }),
  );
  t.true(error instanceof ApiException, String(error));
  t.is((error as ApiException<unknown>).code, 409);
  const current = await api.readNamespacedConfigMap({ name: 'optimistic', namespace: ns });
  t.is(current.data?.v, '2');
});

test('a watch resumed from a resourceVersion delivers the events after it and none before', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const api = coreApi(kubeconfig);
  await api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'before' } } });
  const marker = await api.createNamespacedConfigMap({
    namespace: ns,
    body: { metadata: { name: 'marker' } },
  });
  const from = marker.metadata?.resourceVersion as string;
  // Everything below happens before the watch is opened: the server must replay it.
  await api.createNamespacedConfigMap({
    namespace: ns,
    body: { metadata: { name: 'after' }, data: { n: '1' } },
  });
  // client-node's patch defaults to a JSON patch (RFC 6902).
  await api.patchNamespacedConfigMap({
    name: 'after',
    namespace: ns,
    body: [{ op: 'replace', path: '/data/n', value: '2' }],
  });
  await api.deleteNamespacedConfigMap({ name: 'before', namespace: ns });

  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const events: { type: string; name: string; n?: string }[] = [];
  let abort: AbortController | undefined;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${JSON.stringify(events)} within 20 s`)), 20_000);
    new Watch(kc)
      .watch(
        `/api/v1/namespaces/${ns}/configmaps`,
        { resourceVersion: from },
        (type, obj: V1ConfigMap) => {
          events.push({ type, name: obj.metadata?.name ?? '?', ...(obj.data?.n ? { n: obj.data.n } : {}) });
          if (events.length >= 3) {
            clearTimeout(timer);
            resolve();
          }
        },
        (err) => {
          if (events.length < 3) {
            clearTimeout(timer);
            reject(err ?? new Error('watch closed early'));
          }
        },
      )
      .then((a) => {
        abort = a;
      }, reject);
  });
  t.teardown(() => abort?.abort());
  await done;
  t.deepEqual(events, [
    { type: 'ADDED', name: 'after', n: '1' },
    { type: 'MODIFIED', name: 'after', n: '2' },
    { type: 'DELETED', name: 'before' },
  ]);
});

test('a CRD with CEL validation and status/scale subresources works', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const suffix = randomBytes(3).toString('hex');
  const group = `t${suffix}.test.orrery.dev`;
  const crd = {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `widgets.${group}` },
    spec: {
      group,
      scope: 'Namespaced',
      names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
      versions: [
        {
          name: 'v1',
          served: true,
          storage: true,
          subresources: {
            status: {},
            scale: { specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas' },
          },
          schema: {
            openAPIV3Schema: {
              type: 'object',
              properties: {
                spec: {
                  type: 'object',
                  properties: { replicas: { type: 'integer' }, max: { type: 'integer' } },
                  'x-kubernetes-validations': [
                    { rule: 'self.replicas <= self.max', message: 'replicas exceeds max' },
                  ],
                },
                status: { type: 'object', properties: { replicas: { type: 'integer' } } },
              },
            },
          },
        },
      ],
    },
  };
  const created = await kubectl(kubeconfig, ['apply', '--server-side', '-f', '-'], {
    input: JSON.stringify(crd),
  });
  t.is(created.code, 0, created.stderr);
  t.teardown(async () => {
    await kubectl(kubeconfig, ['delete', 'crd', `widgets.${group}`, '--wait=false']);
  });
  const established = await kubectl(kubeconfig, [
    'wait',
    '--for=condition=Established',
    `crd/widgets.${group}`,
    '--timeout=30s',
  ]);
  t.is(established.code, 0, established.stderr);

  const widget = (replicas: number) =>
    JSON.stringify({
      apiVersion: `${group}/v1`,
      kind: 'Widget',
      metadata: { name: 'w', namespace: ns },
      spec: { replicas, max: 5 },
    });
  const invalid = await kubectl(kubeconfig, ['apply', '--server-side', '-f', '-'], { input: widget(9) });
  t.not(invalid.code, 0);
  t.regex(invalid.stderr, /replicas exceeds max/);
  const valid = await kubectl(kubeconfig, ['apply', '--server-side', '-f', '-'], { input: widget(2) });
  t.is(valid.code, 0, valid.stderr);

  const scaled = await kubectl(kubeconfig, ['scale', `widgets.${group}/w`, '-n', ns, '--replicas=4']);
  t.is(scaled.code, 0, scaled.stderr);
  // CEL runs on the scale subresource's write too.
  const tooMany = await kubectl(kubeconfig, ['scale', `widgets.${group}/w`, '-n', ns, '--replicas=7']);
  t.not(tooMany.code, 0);

  const status = await kubectl(kubeconfig, [
    'patch',
    `widgets.${group}/w`,
    '-n',
    ns,
    '--subresource=status',
    '--type=merge',
    '-p',
    '{"status":{"replicas":3}}',
  ]);
  t.is(status.code, 0, status.stderr);
  // Writes to the main resource do not touch status.
  const mainPatch = await kubectl(kubeconfig, [
    'patch',
    `widgets.${group}/w`,
    '-n',
    ns,
    '--type=merge',
    '-p',
    '{"status":{"replicas":99}}',
  ]);
  t.is(mainPatch.code, 0, mainPatch.stderr);
  const got = JSON.parse(
    (await kubectl(kubeconfig, ['get', `widgets.${group}/w`, '-n', ns, '-o', 'json'])).stdout,
  );
  t.is(got.spec.replicas, 4);
  t.is(got.status.replicas, 3);
});

test('deleting a namespace empties and removes it (in-process namespace controller)', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const cm = await kubectl(kubeconfig, ['create', 'configmap', 'inside', '-n', ns]);
  t.is(cm.code, 0, cm.stderr);
  // kubectl waits until the namespace is gone, which needs the namespace controller to delete
  // its contents and drop the "kubernetes" finalizer.
  const deleted = await kubectl(kubeconfig, ['delete', 'namespace', ns, '--timeout=60s']);
  t.is(deleted.code, 0, deleted.stderr);
  const got = await kubectl(kubeconfig, ['get', 'namespace', ns]);
  t.regex(got.stderr, /NotFound/);
});

test('deleting an owner deletes its dependents (in-process garbage collector)', async (t) => {
  const { kubeconfig } = await testCluster();
  const ns = await freshNamespace(t);
  const api = coreApi(kubeconfig);
  for (const policy of ['Background', 'Foreground'] as const) {
    const owner = await api.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: `owner-${policy.toLowerCase()}` } },
    });
    const ownerRef = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      name: owner.metadata?.name as string,
      uid: owner.metadata?.uid as string,
      blockOwnerDeletion: true,
    };
    await api.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: `dependent-${policy.toLowerCase()}`, ownerReferences: [ownerRef] } },
    });
    await api.deleteNamespacedConfigMap({ name: ownerRef.name, namespace: ns, propagationPolicy: policy });
    await eventually(`${policy} deletion of the dependent`, async () => {
      const list = await api.listNamespacedConfigMap({ namespace: ns });
      return !list.items.some((c) => c.metadata?.name?.endsWith(policy.toLowerCase()));
    });
  }
  t.pass();
});

test.serial(
  'a control plane restarted on the same data dir keeps its objects and certificates',
  async (t) => {
    const dataDir = tempDir(t, 'orrery-cp-restart-');
    const planes: ControlPlane[] = [];
    t.teardown(async () => {
      for (const p of planes) await p.stop();
    });

    const messages: string[] = [];
    const log = (msg: string) => messages.push(msg);
    const first = await startControlPlane({ dataDir, log });
    planes.push(first);
    t.log(
      `bring-up (fresh data dir): ${first.bringUpMs} ms from spawn, ${first.processBringUpMs} ms from main()`,
    );
    const ca = readFileSync(join(dataDir, 'pki', 'ca.crt'), 'utf8');
    const api = coreApi(first.kubeconfig);
    await api.createNamespacedConfigMap({
      namespace: 'default',
      body: { metadata: { name: 'survivor' }, data: { kept: 'yes' } },
    });
    const stopStart = performance.now();
    await first.stop();
    t.log(`graceful stop: ${Math.round(performance.now() - stopStart)} ms`);
    t.false(alive(first.pid), 'the first process is gone after stop()');
    // stop() logs only when the process needed SIGKILL or exited non-zero.
    t.deepEqual(
      messages.filter((m) => /SIGKILL|exited with/.test(m)),
      [],
    );
    t.true(existsSync(join(dataDir, 'etcd', 'member')), 'etcd data stays on disk');

    const port = await freePort();
    const second = await startControlPlane({ dataDir, log, port });
    t.is(second.server, `https://127.0.0.1:${port}`);
    planes.push(second);
    t.log(
      `bring-up (existing data dir): ${second.bringUpMs} ms from spawn, ${second.processBringUpMs} ms from main()`,
    );
    t.is(readFileSync(join(dataDir, 'pki', 'ca.crt'), 'utf8'), ca, 'the CA is reused');
    const kept = await coreApi(second.kubeconfig).readNamespacedConfigMap({
      name: 'survivor',
      namespace: 'default',
    });
    t.is(kept.data?.kept, 'yes');

    // A second process on a data dir in use is refused at once, naming the holder.
    const refused = await t.throwsAsync(startControlPlane({ dataDir }));
    t.regex(
      refused?.message ?? '',
      new RegExp(`in use by another orrery-controlplane \\(pid ${second.pid}\\)`),
    );
    t.true(alive(second.pid));
  },
);

test.serial('the control plane exits when the process that started it is killed', async (t) => {
  await ensureControlPlaneBinary();
  const dataDir = tempDir(t, 'orrery-cp-orphan-');
  // A Node parent that starts a control plane through startControlPlane() and is then SIGKILLed,
  // standing in for a crashed test run: no exit handler of its runs.
  const script = `
    const [moduleUrl, dataDir] = process.argv.slice(1);
    const { startControlPlane } = await import(moduleUrl);
    const plane = await startControlPlane({ dataDir });
    console.log(JSON.stringify({ pid: plane.pid }));
    setInterval(() => {}, 1000);
  `;
  const moduleUrl = new URL('../../controlplane/controlplane.ts', import.meta.url).href;
  const parent = spawn(process.execPath, ['--input-type=module', '-e', script, moduleUrl, dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  parent.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  t.teardown(() => {
    if (parent.exitCode === null) parent.kill('SIGKILL');
  });
  const pid = await new Promise<number>((resolve, reject) => {
    parent.stdout.once('data', (chunk: Buffer) =>
      resolve((JSON.parse(chunk.toString()) as { pid: number }).pid),
    );
    parent.once('exit', (code) => reject(new Error(`the parent exited (${code}) first: ${stderr}`)));
  });
  t.teardown(() => {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  t.true(alive(pid));
  parent.kill('SIGKILL');
  await eventually('the control plane to exit after its parent died', () => !alive(pid), 30_000);
  t.pass();
});

test('bad options are refused with the option named', async (t) => {
  const empty = await t.throwsAsync(startControlPlane({ dataDir: '' }), { instanceOf: TypeError });
  t.regex(empty?.message ?? '', /dataDir must be a non-empty directory path/);
  const port = await t.throwsAsync(startControlPlane({ dataDir: '/tmp/x', port: 70000 }), {
    instanceOf: TypeError,
  });
  t.regex(port?.message ?? '', /port must be an integer 0-65535.*70000/);

  const { path: binary } = await ensureControlPlaneBinary();
  const noDir = spawnSync(binary, [], { encoding: 'utf8' });
  t.is(noDir.status, 2);
  t.regex(noDir.stderr, /--data-dir is required/);
  t.is(noDir.stdout, '');
});

test.serial('the binary is cached: a second ensureControlPlaneBinary() does not build', async (t) => {
  const first = await ensureControlPlaneBinary();
  t.log(`binary ${first.path} (built now: ${first.built}, ${first.buildMs} ms)`);
  const second = await ensureControlPlaneBinary();
  t.is(second.path, first.path);
  t.false(second.built);
  t.is(second.buildMs, 0);
});
