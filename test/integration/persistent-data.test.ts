// Per-replica persistent data (issue 19, part 4), end to end: the real API server, operator and
// two host runtimes, real processes. `db-0` appends a line to a file of its persistent volume at
// every start; the file's lines count the starts that found the same directory.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { HOSTS } from '../../crds/resources.ts';
import type { Host, Instance, Replica } from '../../crds/types.ts';
import { resourceClient, typed } from '../../kube/index.ts';
import { type E2e, e2e } from '../helpers/e2e.ts';
import { eventually } from '../helpers/wait.ts';

const SLOW = { timeoutMs: 90_000 };

function db(base: string, replicas: number): Instance {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name: 'db' },
    spec: {
      replicas,
      template: {
        isolation: { namespaces: [] },
        terminationGracePeriodSeconds: 1,
        processes: [
          {
            name: 'main',
            command: ['sh', '-c', `echo "start on $ORRERY_HOST" >> ${base}/data/starts; exec sleep infinity`],
            volumeMounts: [{ name: 'data', mountPath: `${base}/data` }],
          },
        ],
        volumes: [{ name: 'data', persistent: {} }],
      },
    },
  } as unknown as Instance;
}

/** db-0 Running (a new object when `not` names the uid of the one before), with its host and pid. */
async function db0(env: E2e, not?: string): Promise<{ replica: Replica; host: string; pid: number }> {
  const replica = await eventually(
    `db-0 Running${not ? ' (a new one)' : ''}`,
    async () => {
      const r = (await env.replicasOf('db')).find((x) => x.spec.ordinal === 0);
      if (!r || r.metadata.uid === not || r.status?.phase !== 'Running' || !r.status.processes?.[0]?.pid)
        throw new Error(`phase ${r?.status?.phase} ${r?.status?.reason ?? ''} ${r?.status?.message ?? ''}`);
      return r;
    },
    SLOW,
  );
  return { replica, host: replica.spec.host as string, pid: replica.status?.processes?.[0]?.pid as number };
}

test('db-0 finds its data after a kill, a re-creation and a runtime restart, on its host; retention on scale and delete', async (t) => {
  const env = await e2e(t, { hosts: 2 });
  const base = `/tmp/orrery-pd-${env.ns}`;
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const hosts = resourceClient(env.api, typed<Host>(HOSTS), 'orrery-test');
  const dataDir = (host: string) =>
    join(env.hosts.find((h) => h.name === host)?.stateDir as string, 'persistent', env.ns, 'db', '0', 'data');
  const starts = (host: string) => {
    const file = join(dataDir(host), 'starts');
    return existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').length : 0;
  };
  const waitStarts = (host: string, n: number) =>
    eventually(`${n} start(s) recorded on ${host}`, () => starts(host) === n || undefined, SLOW);

  await env.instances.create(db(base, 1), { namespace: env.ns });
  const first = await db0(env);
  const home = first.host;
  const away = env.hosts.find((h) => h.name !== home)?.name as string;
  await waitStarts(home, 1);
  t.is(readFileSync(`/proc/${first.pid}/root${base}/data/starts`, 'utf8'), `start on ${home}\n`);
  const listed = (await hosts.get(home)).status?.persistentData ?? [];
  t.deepEqual(
    listed.filter((d) => d.namespace === env.ns),
    [{ namespace: env.ns, instance: 'db', ordinal: 0, volumes: ['data'] }],
    'the host lists the data it holds',
  );

  // 1. The process killed: the supervisor starts it again, on the same data.
  process.kill(first.pid, 'SIGKILL');
  await waitStarts(home, 2);

  // 2. The Replica deleted and made again by the operator, with the other host the better fit
  //    by every other score: two more replicas on `home` (a label only it carries) leave it less room.
  await hosts.mergePatch(home, { metadata: { labels: { 'orrery.dev/test-slot': 'home' } } });
  const filler = db(base, 2);
  filler.metadata.name = 'filler';
  filler.spec.template.volumes = [];
  filler.spec.template.processes = [{ name: 'main', command: ['sleep', 'infinity'] }] as never;
  filler.spec.template.hostSelector = { matchLabels: { 'orrery.dev/test-slot': 'home' } };
  await env.instances.create(filler, { namespace: env.ns });
  await eventually(
    'filler running on home',
    async () => {
      const rs = await env.replicasOf('filler');
      return rs.length === 2 && rs.every((r) => r.status?.phase === 'Running') ? rs : undefined;
    },
    SLOW,
  );
  const before = (await db0(env)).replica;
  await env.replicas.delete('db-0', { namespace: env.ns });
  const recreated = await db0(env, before.metadata.uid);
  t.is(recreated.host, home, 'placed back on the host of its data');
  await waitStarts(home, 3);

  // 3. The runtime restarted: the replica is re-adopted as it runs, its data where it was.
  const runtime = env.hosts.find((h) => h.name === home) as E2e['hosts'][number];
  runtime.child.kill('SIGKILL');
  await runtime.exited;
  await runtime.restart();
  await eventually(
    'db-0 re-adopted',
    async () => {
      const r = await env.replicas.get('db-0', { namespace: env.ns });
      return r.status?.phase === 'Running' && r.status.processes?.[0]?.pid === recreated.pid ? r : undefined;
    },
    SLOW,
  );
  t.is(starts(home), 3, 'not restarted by the runtime restart');
  t.is(readFileSync(`/proc/${recreated.pid}/root${base}/data/starts`, 'utf8').split('\n').length, 4);

  // 4. Its host cordoned: db-0 made again waits, saying where its data is and that it dies with it.
  await hosts.mergePatch(home, { spec: { unschedulable: true } });
  await env.replicas.delete('db-0', { namespace: env.ns });
  const waiting = await eventually(
    'db-0 waiting for its host',
    async () => {
      const r = await env.replicas.get('db-0', { namespace: env.ns }).catch(() => undefined);
      const c = r?.status?.conditions?.find((x) => x.type === 'Scheduled');
      return r && r.metadata.uid !== recreated.replica.metadata.uid && c?.status === 'False'
        ? { r, c }
        : undefined;
    },
    SLOW,
  );
  t.is(waiting.c.reason, 'PersistentDataHostUnavailable');
  t.regex(waiting.c.message ?? '', new RegExp(`persistent data of db-0 is on host ${home}`));
  t.regex(waiting.c.message ?? '', /if the host is lost, the data is lost with it/);
  t.is(waiting.r.spec.host, undefined, `not placed on ${away}`);
  await hosts.mergePatch(home, { spec: { unschedulable: false } });
  t.is((await db0(env, recreated.replica.metadata.uid)).host, home);
  await waitStarts(home, 4);

  // 5. Scaled to 0 with whenScaled Retain: the data stays; scaled up, db-0 uses it again.
  await env.instances.mergePatch('db', { spec: { replicas: 0 } }, { namespace: env.ns });
  await eventually(
    'db-0 gone',
    async () => ((await env.replicasOf('db')).length === 0 ? true : undefined),
    SLOW,
  );
  t.is(starts(home), 4, 'kept after the scale-down');
  await env.instances.mergePatch('db', { spec: { replicas: 1 } }, { namespace: env.ns });
  t.is((await db0(env)).host, home);
  await waitStarts(home, 5);

  // 6. whenScaled Delete: scaled to 0, the data is removed and the host no longer lists it.
  await env.instances.mergePatch(
    'db',
    { spec: { persistentRetentionPolicy: { whenScaled: 'Delete', whenDeleted: 'Delete' } } },
    { namespace: env.ns },
  );
  await env.instances.mergePatch('db', { spec: { replicas: 0 } }, { namespace: env.ns });
  await eventually('the data removed', () => !existsSync(dataDir(home)) || undefined, SLOW);
  await eventually(
    'the host no longer lists it',
    async () =>
      !(await hosts.get(home)).status?.persistentData?.some((d) => d.namespace === env.ns) || undefined,
    SLOW,
  );
  // Back up: a fresh, empty directory; then the Instance deleted with whenDeleted Delete removes it.
  await env.instances.mergePatch('db', { spec: { replicas: 1 } }, { namespace: env.ns });
  const fresh = await db0(env);
  await waitStarts(fresh.host, 1);
  await env.instances.delete('db', { namespace: env.ns });
  await eventually(
    'the data removed with the Instance',
    () => !existsSync(dataDir(fresh.host)) || undefined,
    SLOW,
  );
});
