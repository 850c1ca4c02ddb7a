// hostPath volumes (issue 19, part 5), end to end: the API server refuses them under the shipped
// policy (deploy/policy-workloads.yaml, installed as `orrery up` installs it) until a cluster admin
// annotates the namespace; then the real runtime bind-mounts the host's path read-only (EROFS on
// a write) or, with readOnly: false under a writable prefix, writable; a path that is missing or
// goes through a symbolic link keeps the replica Pending with reason HostPathUnavailable.
import { chmodSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import test from 'ava';
import type { Instance, Replica } from '../../crds/types.ts';
import { kubectl } from '../helpers/cluster.ts';
import { type E2e, e2e } from '../helpers/e2e.ts';
import { eventually } from '../helpers/wait.ts';

function instance(name: string, template: Record<string, unknown>): Instance {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name },
    spec: { replicas: 1, template: { terminationGracePeriodSeconds: 1, ...template } },
  } as unknown as Instance;
}

async function phaseOf(env: E2e, name: string, phase: string): Promise<Replica> {
  return eventually(
    `${name}-0 ${phase}`,
    async () => {
      const [r] = await env.replicasOf(name);
      if (r?.status?.phase !== phase || (phase === 'Running' && !r.status.processes?.[0]?.pid))
        throw new Error(`phase ${r?.status?.phase} ${r?.status?.reason ?? ''} ${r?.status?.message ?? ''}`);
      return r;
    },
    { timeoutMs: 60_000 },
  );
}

/** The mount at `point` in the process's mount namespace: its per-mount options. */
function mountOptions(pid: number, point: string): string | undefined {
  for (const line of readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields[4] === point) return fields[5];
  }
  return undefined;
}

test('a host path: refused by default, read-only once the namespace allows it, writable only where allowed', async (t) => {
  const env = await e2e(t, { hosts: 1 });
  const base = `/tmp/orrery-hostpath-${env.ns}`;
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  mkdirSync(`${base}/ro`, { recursive: true });
  writeFileSync(`${base}/ro/greeting`, 'hello from the host\n');
  mkdirSync(`${base}/rw`, { recursive: true });
  chmodSync(`${base}/rw`, 0o777); // the replica's root is an unprivileged host uid
  const mnt = `${base}/mnt`; // mount points, made by the runtime on the host
  const reader = instance('reader', {
    processes: [
      {
        name: 'main',
        command: ['sh', '-c'],
        args: [
          // Root of its user namespace first tries to make the read-only mount writable: the
          // mount is locked (attached before that namespace was made), so EPERM.
          `mount -o remount,bind,rw ${mnt}/ro > ${mnt}/rw/remount 2>&1; echo "rc=$?" >> ${mnt}/rw/remount; ` +
            `cat ${mnt}/ro/greeting > ${mnt}/rw/seen; echo changed 2> ${mnt}/rw/err > ${mnt}/ro/greeting; exec sleep infinity`,
        ],
        volumeMounts: [
          { name: 'ro', mountPath: `${mnt}/ro` },
          { name: 'rw', mountPath: `${mnt}/rw`, readOnly: false },
          { name: 'file', mountPath: `${mnt}/file` },
        ],
      },
    ],
    volumes: [
      { name: 'ro', hostPath: { path: `${base}/ro` } },
      { name: 'rw', hostPath: { path: `${base}/rw`, type: 'Directory' } },
      { name: 'file', hostPath: { path: `${base}/ro/greeting`, type: 'File' } },
    ],
  });

  // Refused by the API server by default, naming the policy and the path.
  const denied = await eventually('the policy to refuse the host path', async () => {
    try {
      await env.instances.create(reader, { namespace: env.ns });
    } catch (err) {
      return (err as Error).message;
    }
    await env.instances.delete('reader', { namespace: env.ns });
    return false;
  });
  t.regex(denied, /orrery-host-paths/);
  t.regex(denied, new RegExp(`does not allow host path\\(s\\) ${base}/ro`));

  // The admin's opt-in: read-only under base/ro, writable under base/rw.
  const annotated = await kubectl(env.kubeconfig, [
    'annotate',
    'namespace',
    env.ns,
    `orrery.dev/host-paths=${base}/ro`,
    `orrery.dev/writable-host-paths=${base}/rw`,
  ]);
  t.is(annotated.code, 0, annotated.stderr);
  await eventually('the opt-in to be seen', async () => {
    await env.instances.create(reader, { namespace: env.ns });
    return true;
  });
  const pid = (await phaseOf(env, 'reader', 'Running')).status?.processes?.[0]?.pid as number;

  // It read the host's file; its write was refused (EROFS); the host file is unchanged.
  const seen = await eventually('the replica to record what it read', async () =>
    readFileSync(`${base}/rw/seen`, 'utf8'),
  );
  t.is(seen, 'hello from the host\n');
  t.regex(readFileSync(`${base}/rw/err`, 'utf8'), /Read-only file system/);
  t.regex(readFileSync(`${base}/rw/remount`, 'utf8'), /permission denied[\s\S]*rc=32/);
  t.is(readFileSync(`${base}/ro/greeting`, 'utf8'), 'hello from the host\n');
  t.throws(() => writeFileSync(`/proc/${pid}/root${mnt}/ro/greeting`, 'x'), { code: 'EROFS' });
  t.regex(mountOptions(pid, `${mnt}/ro`) ?? '', /^ro,nosuid,nodev/);
  t.regex(mountOptions(pid, `${mnt}/rw`) ?? '', /^rw,nosuid,nodev/);
  // A file type: the mount point is a file, read-only.
  t.true(statSync(`/proc/${pid}/root${mnt}/file`).isFile());
  t.is(readFileSync(`/proc/${pid}/root${mnt}/file`, 'utf8'), 'hello from the host\n');
  t.regex(mountOptions(pid, `${mnt}/file`) ?? '', /^ro,nosuid,nodev/);
  // The writable mount wrote on the host, as the replica's (unprivileged) host uid.
  t.true(statSync(`${base}/rw/seen`).uid >= 2 ** 30);
  // Not mounted in the host's own namespace.
  t.is(mountOptions(process.pid, `${mnt}/ro`), undefined);

  // readOnly: false outside the writable prefix: refused by the API server.
  const write = instance('writer', {
    processes: [
      {
        name: 'main',
        command: ['sleep', 'infinity'],
        volumeMounts: [{ name: 'ro', mountPath: `${mnt}/w`, readOnly: false }],
      },
    ],
    volumes: [{ name: 'ro', hostPath: { path: `${base}/ro` } }],
  });
  const refused = await env.instances.create(write, { namespace: env.ns }).then(
    () => '',
    (err: Error) => err.message,
  );
  t.regex(refused, /readOnly: false mounts host path\(s\) \S+\/ro writable/);
});

test('a host path that is missing or goes through a symbolic link keeps the replica Pending, named', async (t) => {
  const env = await e2e(t, { hosts: 1 });
  const base = `/tmp/orrery-hostpath-${env.ns}`;
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  mkdirSync(base, { recursive: true });
  symlinkSync('/etc', `${base}/link`);
  const annotated = await kubectl(env.kubeconfig, [
    'annotate',
    'namespace',
    env.ns,
    `orrery.dev/host-paths=${base}`,
  ]);
  t.is(annotated.code, 0, annotated.stderr);
  const one = (name: string, path: string, type = '') =>
    instance(name, {
      processes: [
        {
          name: 'main',
          command: ['sleep', 'infinity'],
          volumeMounts: [{ name: 'h', mountPath: `${base}-mnt/${name}` }],
        },
      ],
      volumes: [{ name: 'h', hostPath: { path, type } }],
    });
  t.teardown(() => rmSync(`${base}-mnt`, { recursive: true, force: true }));
  await eventually('the opt-in to be seen', async () => {
    await env.instances.create(one('missing', `${base}/later`), { namespace: env.ns });
    return true;
  });
  await env.instances.create(one('linked', `${base}/link/ssl`), { namespace: env.ns });
  await env.instances.create(one('made', `${base}/made/deeper`, 'DirectoryOrCreate'), { namespace: env.ns });

  const missing = await phaseOf(env, 'missing', 'Pending').then(() =>
    eventually('HostPathUnavailable on missing-0', async () => {
      const [r] = await env.replicasOf('missing');
      return r?.status?.reason === 'HostPathUnavailable' && r;
    }),
  );
  t.regex(missing.status?.message ?? '', new RegExp(`volume h: hostPath ${base}/later does not exist`));
  const linked = await eventually('HostPathUnavailable on linked-0', async () => {
    const [r] = await env.replicasOf('linked');
    return r?.status?.reason === 'HostPathUnavailable' && r;
  });
  t.regex(linked.status?.message ?? '', /goes through \S+\/link, a symbolic link \(to \/etc\)/);
  t.is(linked.status?.phase, 'Pending');

  // DirectoryOrCreate made it; the missing one starts once the path exists (checked every 2 s).
  await phaseOf(env, 'made', 'Running');
  t.true(statSync(`${base}/made/deeper`).isDirectory());
  mkdirSync(`${base}/later`);
  await phaseOf(env, 'missing', 'Running');
});
