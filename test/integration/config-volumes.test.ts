// Files from ConfigMaps and Secrets, and scratch directories (issue 19, parts 2 and 3), end to end:
// the real operator and host runtime, real processes in their own mount namespaces, read back
// through /proc/<pid>/root and /proc/<pid>/mountinfo.
import { existsSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import type { Instance, Replica } from '../../crds/types.ts';
import { CONFIGMAPS, resourceClient } from '../../kube/index.ts';
import { type E2e, e2e, firstRunning, putConfigObject } from '../helpers/e2e.ts';
import { eventually } from '../helpers/wait.ts';

function instance(name: string, template: Record<string, unknown>): Instance {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name },
    spec: {
      replicas: 1,
      template: { isolation: { namespaces: [] }, terminationGracePeriodSeconds: 1, ...template },
    },
  } as unknown as Instance;
}

async function running(env: E2e, name: string): Promise<{ replica: Replica; pid: number }> {
  const replica = await firstRunning(env, name);
  return { replica, pid: replica.status?.processes?.[0]?.pid as number };
}

/** The mount at `point` in the process's mount namespace: [options, fstype]. */
function mountOf(pid: number, point: string): { options: string; fstype: string } | undefined {
  for (const line of readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    const fields = left?.split(' ') ?? [];
    if (fields[4] === point) return { options: fields[5] as string, fstype: right?.split(' ')[0] as string };
  }
  return undefined;
}

/** Mount points under /tmp made for the test (the runtime makes missing ones and leaves them). */
function mountPoints(t: { teardown(fn: () => void): void }, env: E2e) {
  const base = `/tmp/orrery-vol-${env.ns}`;
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  return base;
}

test('a mounted ConfigMap changes in place without a restart; Secret files sit on tmpfs, closed to other replicas', async (t) => {
  const env = await e2e(t, { hosts: 1 });
  const base = mountPoints(t, env);
  await putConfigObject(env, 'ConfigMap', 'app-config', { 'app.conf': 'version=1\n', other: 'x' });
  await putConfigObject(env, 'Secret', 'creds', { password: 's3cret' });
  await env.instances.create(
    instance('vol', {
      processes: [
        {
          name: 'main',
          // Root of its user namespace tries to make each read-only volume writable: locked
          // (bound from the runtime's read-only view, which its namespace copied locked), EPERM.
          command: [
            'sh',
            '-c',
            ['config', 'creds']
              .map(
                (v) =>
                  `mount -o remount,bind,rw ${base}/${v} >> ${base}/out/${v} 2>&1; echo "remount rc=$?" >> ${base}/out/${v}; ` +
                  `touch ${base}/${v}/new >> ${base}/out/${v} 2>&1; echo "write rc=$?" >> ${base}/out/${v}; `,
              )
              .join('') + 'exec sleep infinity',
          ],
          volumeMounts: [
            { name: 'config', mountPath: `${base}/config` },
            { name: 'creds', mountPath: `${base}/creds` },
            { name: 'out', mountPath: `${base}/out` },
          ],
        },
      ],
      volumes: [
        { name: 'out', emptyDir: {} },
        {
          name: 'config',
          configMap: { name: 'app-config', items: [{ key: 'app.conf', path: 'conf/app.conf' }] },
        },
        { name: 'creds', secret: { secretName: 'creds', defaultMode: 0o400 } },
      ],
    }),
    { namespace: env.ns },
  );
  const { pid } = await running(env, 'vol');
  const root = `/proc/${pid}/root`;
  t.is(readFileSync(`${root}${base}/config/conf/app.conf`, 'utf8'), 'version=1\n');
  t.false(existsSync(`${root}${base}/config/other`), 'items: only the listed key');
  t.regex(readlinkSync(`${root}${base}/config/..data`), /^\.\.\d{4}_/);
  t.is(readlinkSync(`${root}${base}/config/conf`), '..data/conf');
  t.is(readFileSync(`${root}${base}/creds/password`, 'utf8'), 's3cret');
  t.is(statSync(`${root}${base}/creds/..data/password`).mode & 0o777, 0o400);

  // Both on tmpfs, read-only, in the replica's own mount namespace; not in the host's.
  for (const point of [`${base}/config`, `${base}/creds`]) {
    const m = mountOf(pid, point);
    t.is(m?.fstype, 'tmpfs', `${point} is a tmpfs`);
    t.regex(m?.options ?? '', /^ro,nosuid,nodev/, `${point} is read-only`);
    t.is(mountOf(process.pid, point), undefined, `${point} is not mounted on the host`);
  }
  // Locked: no remount read-write (EPERM), no write (EROFS).
  for (const v of ['config', 'creds']) {
    const attempts = await eventually(`the attempts on ${v}`, async () => {
      const out = readFileSync(`${root}${base}/out/${v}`, 'utf8');
      if (!out.includes('write rc=')) throw new Error('not yet');
      return out;
    });
    t.regex(attempts, /permission denied\.[\s\S]*remount rc=32/, `${v}: remount refused`);
    t.regex(attempts, /Read-only file system[\s\S]*write rc=1/, `${v}: not written`);
  }

  // The tmpfs root is 0700 and belongs to the replica's host uid (its user namespace's root).
  const hostUid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  const tmpfsRoot = join(env.hosts[0]?.stateDir as string, 'volumes', `${env.ns}.vol-0`, 'files');
  const st = statSync(tmpfsRoot);
  t.is(st.mode & 0o777, 0o700);
  t.is(st.uid, hostUid);
  t.true(hostUid >= 2 ** 30, 'an unprivileged host uid');

  // Another replica (its own user namespace, so another host uid) cannot read them, neither
  // through the first one's /proc/<pid>/root nor at the runtime's path.
  await env.instances.create(
    instance('other', {
      processes: [
        {
          name: 'main',
          command: [
            'sh',
            '-c',
            `cat ${root}${base}/creds/password > ${base}/out/via-proc 2>&1; echo "rc=$?" >> ${base}/out/via-proc; ` +
              `cat ${tmpfsRoot}/creds/password > ${base}/out/via-host 2>&1; echo "rc=$?" >> ${base}/out/via-host; exec sleep infinity`,
          ],
          volumeMounts: [{ name: 'out', mountPath: `${base}/out` }],
        },
      ],
      volumes: [{ name: 'out', emptyDir: {} }],
    }),
    { namespace: env.ns },
  );
  const other = await running(env, 'other');
  const results = await eventually(
    "the other replica's attempts",
    async () => {
      const out = `/proc/${other.pid}/root${base}/out`;
      const viaProc = readFileSync(`${out}/via-proc`, 'utf8');
      const viaHost = readFileSync(`${out}/via-host`, 'utf8');
      if (!viaProc.includes('rc=') || !viaHost.includes('rc=')) throw new Error('not yet');
      return { viaProc, viaHost };
    },
    { timeoutMs: 15_000 },
  );
  t.log(results);
  for (const r of [results.viaProc, results.viaHost]) {
    t.false(r.includes('s3cret'), `the secret leaked: ${r}`);
    t.regex(r, /rc=[1-9]/);
  }
  t.regex(results.viaProc, /Permission denied/);

  // An update reaches the file in place: same pid, new content, within the sync period and a read.
  const configMaps = resourceClient(env.api, CONFIGMAPS, 'orrery-test');
  const t0 = performance.now();
  await configMaps.mergePatch('app-config', { data: { 'app.conf': 'version=2\n' } }, { namespace: env.ns });
  await eventually(
    'the new content in the replica',
    async () => {
      const now = readFileSync(`${root}${base}/config/conf/app.conf`, 'utf8');
      if (now !== 'version=2\n') throw new Error(`still ${JSON.stringify(now)}`);
      return true;
    },
    { timeoutMs: 15_000 },
  );
  const ms = performance.now() - t0;
  t.log(`ConfigMap update visible in the replica after ${Math.round(ms)} ms`);
  t.true(ms < 15_000);
  const [after] = await env.replicasOf('vol');
  t.is(after?.status?.processes?.[0]?.pid, pid, 'same process');
  t.is(after?.status?.processes?.[0]?.restarts ?? 0, 0);
});

test('emptyDir sizeLimit: a Memory one refuses to grow past it (ENOSPC), a disk one gets the replica evicted', async (t) => {
  const env = await e2e(t, { hosts: 1 });
  const base = mountPoints(t, env);
  await env.instances.create(
    instance('scratch', {
      processes: [
        {
          name: 'main',
          command: [
            'sh',
            '-c',
            // The result goes to another volume: the full one takes nothing more.
            `dd if=/dev/zero of=${base}/mem/f bs=64k count=64 > ${base}/out/result 2>&1; echo "rc=$?" >> ${base}/out/result; exec sleep infinity`,
          ],
          volumeMounts: [
            { name: 'mem', mountPath: `${base}/mem` },
            { name: 'out', mountPath: `${base}/out` },
          ],
        },
      ],
      volumes: [
        { name: 'mem', emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
        { name: 'out', emptyDir: {} },
      ],
    }),
    { namespace: env.ns },
  );
  const { pid } = await running(env, 'scratch');
  const result = await eventually(
    'dd to finish',
    () => {
      const r = readFileSync(`/proc/${pid}/root${base}/out/result`, 'utf8');
      return r.includes('rc=') ? r : undefined;
    },
    { timeoutMs: 15_000 },
  );
  t.regex(result, /No space left on device/);
  t.regex(result, /rc=1/);
  t.is(statSync(`/proc/${pid}/root${base}/mem/f`).size, 1024 * 1024, 'exactly the sizeLimit was written');
  t.is(mountOf(pid, `${base}/mem`)?.fstype, 'tmpfs');

  // Disk: written past its limit, the replica is stopped and reported, as the kubelet evicts.
  await env.instances.create(
    instance('disk', {
      processes: [
        {
          name: 'main',
          command: [
            'sh',
            '-c',
            `dd if=/dev/zero of=${base}/disk/f bs=64k count=64 2>/dev/null; exec sleep infinity`,
          ],
          volumeMounts: [{ name: 'disk', mountPath: `${base}/disk` }],
        },
      ],
      volumes: [{ name: 'disk', emptyDir: { sizeLimit: '512Ki' } }],
    }),
    { namespace: env.ns },
  );
  const evicted = await eventually(
    'disk-0 evicted',
    async () => {
      const [r] = await env.replicasOf('disk');
      return r?.status?.phase === 'Failed' && r.status.reason === 'EmptyDirSizeLimitExceeded' ? r : undefined;
    },
    { timeoutMs: 30_000 },
  );
  t.regex(evicted.status?.message ?? '', /EmptyDir volume "disk" exceeds the limit 524288 bytes/);
  const volumeDir = join(env.hosts[0]?.stateDir as string, 'volumes', `${env.ns}.disk-0`);
  t.false(existsSync(volumeDir), 'its volume removed with it');

  // Deleting the Instance removes the Memory one too: unmounted and gone.
  const memDir = join(env.hosts[0]?.stateDir as string, 'volumes', `${env.ns}.scratch-0`);
  t.true(existsSync(memDir));
  await env.instances.delete('scratch', { namespace: env.ns });
  await eventually('scratch volumes removed', () => !existsSync(memDir), { timeoutMs: 30_000 });
  t.false(readFileSync('/proc/self/mountinfo', 'utf8').includes(memDir), 'no mount left');
});

test('a replica with volumes survives a runtime restart: same pid, mounts kept, updates still reach the files', async (t) => {
  const env = await e2e(t, { hosts: 1 });
  const base = mountPoints(t, env);
  await putConfigObject(env, 'ConfigMap', 'restart-config', { 'app.conf': 'version=1\n' });
  await env.instances.create(
    instance('keep', {
      processes: [
        {
          name: 'main',
          command: ['sh', '-c', `echo kept > ${base}/scratch/note; exec sleep infinity`],
          volumeMounts: [
            { name: 'config', mountPath: `${base}/config` },
            { name: 'scratch', mountPath: `${base}/scratch` },
          ],
        },
      ],
      volumes: [
        { name: 'config', configMap: { name: 'restart-config' } },
        { name: 'scratch', emptyDir: {} },
      ],
    }),
    { namespace: env.ns },
  );
  const { pid } = await running(env, 'keep');
  const root = `/proc/${pid}/root`;
  await eventually('the note in the emptyDir', async () =>
    readFileSync(`${root}${base}/scratch/note`, 'utf8'),
  );

  const host = env.hosts[0] as (typeof env.hosts)[number];
  host.child.kill('SIGKILL');
  await host.exited;
  t.true(existsSync(`/proc/${pid}`), 'the workload outlives its runtime');
  const t0 = performance.now();
  await host.restart();

  // While the runtime was down and after it is back: the same process, its mounts as they were.
  const configMaps = resourceClient(env.api, CONFIGMAPS, 'orrery-test');
  await configMaps.mergePatch(
    'restart-config',
    { data: { 'app.conf': 'version=2\n' } },
    { namespace: env.ns },
  );
  await eventually(
    'the update after the restart in the replica',
    async () => {
      const now = readFileSync(`${root}${base}/config/app.conf`, 'utf8');
      if (now !== 'version=2\n') throw new Error(`still ${JSON.stringify(now)}`);
      return true;
    },
    { timeoutMs: 30_000 },
  );
  t.log(
    `restart -> ConfigMap update visible in the re-adopted replica: ${Math.round(performance.now() - t0)} ms`,
  );
  const [after] = await env.replicasOf('keep');
  t.is(after?.status?.phase, 'Running');
  t.is(after?.status?.processes?.[0]?.pid, pid, 'same process');
  t.is(after?.status?.processes?.[0]?.restarts ?? 0, 0);
  t.is(mountOf(pid, `${base}/config`)?.fstype, 'tmpfs');
  t.regex(mountOf(pid, `${base}/config`)?.options ?? '', /^ro,/);
  t.truthy(mountOf(pid, `${base}/scratch`), 'the emptyDir is still mounted');
  t.is(readFileSync(`${root}${base}/scratch/note`, 'utf8'), 'kept\n', 'the emptyDir kept its contents');
  // The runtime's own copy is the one the process sees: a file written there appears inside.
  const scratch = join(host.stateDir, 'volumes', `${env.ns}.keep-0`, 'empty', 'scratch');
  t.is(readFileSync(join(scratch, 'note'), 'utf8'), 'kept\n');
});
