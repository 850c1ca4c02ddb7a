// `orrery.dev/restartedAt` on a Replica (`r` in `orrery tui`, or kubectl annotate): the real
// runtime (`orrery runtime` as a child process) against the real API server restarts the
// replica's processes in place, once per value, also across its own restart.
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { RESTARTED_AT_ANNOTATION } from '../../crds/labels.ts';
import type { Replica } from '../../crds/types.ts';
import { type CoreEvent, EVENTS, resourceClient, typed } from '../../kube/index.ts';
import {
  agentDirs,
  childAgent,
  inProcessAgent,
  kubeForTests,
  pidAlive,
  removeCgroupTree,
  replicaObject,
  testNamespace,
  waitFor,
} from '../helpers/agent-harness.ts';

const run = promisify(execFile);

test.before(async () => {
  await kubeForTests();
});

/** The sum of orrery_runtime_reconciles_total on an agent's /metrics. */
async function reconciles(apiEndpoint: string, token: string): Promise<number> {
  const res = await fetch(`${apiEndpoint}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  let n = 0;
  for (const m of text.matchAll(/^orrery_runtime_reconciles_total\{[^}]*\} (\d+)/gm)) n += Number(m[1]);
  return n;
}

test('a new orrery.dev/restartedAt restarts the processes in place once, gracefully, and not again after the runtime restarts; one set while it was down is acted on at its start', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  t.teardown(() => removeCgroupTree(dirs.cgroupParent));
  const args = ['--lease-duration', '30', '--run-dir', path.join(dirs.root, 'run')];
  let agent = await childAgent(t, dirs, args);
  // `main` says goodbye on SIGTERM (a graceful stop), `side` runs beside it.
  const main = ['sh', '-c', 'trap "echo bye; exit 0" TERM; echo "up $$"; while :; do sleep 0.1; done'];
  await k.replicas.create(
    replicaObject(ns, 'web-0', dirs.hostName, [
      { name: 'main', command: main },
      { name: 'side', command: ['sleep', '600'] },
    ]),
  );
  // Created with the annotation: it simply starts, and the value counts as handled.
  const fresh = replicaObject(ns, 'fresh-0', dirs.hostName, [{ name: 'main', command: ['sleep', '600'] }]);
  fresh.metadata.annotations = { [RESTARTED_AT_ANNOTATION]: '2026-01-01T00:00:00Z' };
  await k.replicas.create(fresh);

  const running = (name: string, check: (r: Replica) => boolean = () => true) =>
    waitFor(`${name} Running`, async () => {
      const r = await k.replicas.get(name, { namespace: ns });
      return r.status?.phase === 'Running' && r.status.ready && check(r) ? r : undefined;
    });
  const pids = (r: Replica) => (r.status?.processes ?? []).map((p) => p.pid as number);
  const before = await running('web-0');
  const freshBefore = await running('fresh-0');
  t.is(freshBefore.status?.restarts, 0);
  t.is(before.status?.restarts, 0);

  // As a user would: kubectl annotate ... --overwrite.
  const value1 = new Date().toISOString();
  await run('kubectl', [
    '--kubeconfig',
    k.kubeconfig,
    'annotate',
    'replica',
    'web-0',
    '-n',
    ns,
    `${RESTARTED_AT_ANNOTATION}=${value1}`,
    '--overwrite',
  ]);
  const t0 = Date.now();
  const after = await running('web-0', (r) => r.status?.restarts === 2);
  t.log(`annotated -> Running again with new pids, as the API says: ${Date.now() - t0} ms`);
  const [oldMain, oldSide] = pids(before);
  const [newMain, newSide] = pids(after);
  t.not(newMain, oldMain);
  t.not(newSide, oldSide);
  t.false(pidAlive(oldMain as number));
  t.false(pidAlive(oldSide as number));
  t.deepEqual(
    after.status?.processes?.map((p) => p.restarts),
    [1, 1],
    'each process restarted once',
  );
  // Stopped as a stop stops: its stop signal first, which it answered by exiting 0.
  const lastExit = after.status?.processes?.[0]?.lastExit;
  t.is(lastExit?.code, 0, JSON.stringify(lastExit));
  t.falsy(lastExit?.signal, 'not killed');
  const log = readFileSync(path.join(dirs.logDir, `${ns}.web-0`, 'main.previous.log'), 'utf8');
  t.regex(log, /bye/, 'the previous run got its stop signal and said goodbye');
  // Same object, same host: the uid has not changed.
  t.is(after.metadata.uid, before.metadata.uid);
  t.is(after.spec.host, dirs.hostName);

  const events = resourceClient(k.api, typed<CoreEvent>(EVENTS), 'orrery-test');
  const restarted = await waitFor('a Restarted Event', async () => {
    const list = await events.list({ namespace: ns });
    return list.items.find((e) => e.reason === 'Restarted' && e.involvedObject?.name === 'web-0');
  });
  t.is(restarted.type, 'Normal');
  t.true(restarted.message?.includes(value1), restarted.message);
  t.true(restarted.message?.includes(`main ${oldMain} → ${newMain}`), restarted.message);

  // The runtime killed and started again: the value it handled is not acted on a second time.
  agent.child.kill('SIGKILL');
  await agent.exited;
  agent = await childAgent(t, dirs, args);
  await waitFor('both replicas reconciled by the new runtime', async () =>
    (await reconciles(agent.apiEndpoint, agent.token)) >= 2 ? true : undefined,
  );
  // Its status writes and any restart would come within this.
  await new Promise((r) => setTimeout(r, 1000));
  const kept = await running('web-0');
  t.deepEqual(pids(kept), [newMain, newSide], 'no second restart');
  t.is(kept.status?.restarts, 2);
  const freshKept = await running('fresh-0');
  t.deepEqual(pids(freshKept), pids(freshBefore), 'a Replica created with the annotation is not restarted');
  t.is(freshKept.status?.restarts, 0);

  // A new value set while the runtime is down is acted on when it starts.
  agent.child.kill('SIGKILL');
  await agent.exited;
  const value2 = new Date(Date.now() + 1000).toISOString();
  await k.replicas.mergePatch(
    'web-0',
    { metadata: { annotations: { [RESTARTED_AT_ANNOTATION]: value2 } } },
    { namespace: ns },
  );
  agent = await childAgent(t, dirs, args);
  const again = await running('web-0', (r) => r.status?.restarts === 4);
  t.notDeepEqual(pids(again), [newMain, newSide]);
  t.false(pidAlive(newMain as number));
  t.deepEqual(pids(await running('fresh-0')), pids(freshBefore));

  agent.child.kill('SIGTERM');
  t.is(await agent.exited, 0);
});

test('a restart on request cuts a crash-loop back-off short and starts a finished process again', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  t.teardown(() => removeCgroupTree(dirs.cgroupParent));
  await inProcessAgent(t, dirs);
  // `main` fails until the flag file exists; `once` runs once and is done (temporary).
  const flagDir = mkdtempSync(path.join(os.tmpdir(), 'orrery-restart-flag-'));
  t.teardown(() => rmSync(flagDir, { recursive: true, force: true }));
  chmodSync(flagDir, 0o755);
  const flag = path.join(flagDir, 'ready');
  await k.replicas.create(
    replicaObject(
      ns,
      'loop-0',
      dirs.hostName,
      [
        { name: 'main', command: ['sh', '-c', `test -f ${flag} && exec sleep 600; echo not yet; exit 1`] },
        { name: 'once', command: ['true'], restart: 'temporary' },
      ],
      // The first crash backs off for a minute: far longer than this test waits.
      { supervision: { maxRestarts: 0, periodSeconds: 10, backoff: { initialSeconds: 60, maxSeconds: 60 } } },
    ),
  );
  const looping = await waitFor('loop-0 in CrashLoopBackOff', async () => {
    const r = await k.replicas.get('loop-0', { namespace: ns });
    return r.status?.phase === 'CrashLoopBackOff' ? r : undefined;
  });
  const onceBefore = looping.status?.processes?.find((p) => p.name === 'once');
  writeFileSync(flag, '');
  chmodSync(flag, 0o644);
  const t0 = Date.now();
  await k.replicas.mergePatch(
    'loop-0',
    { metadata: { annotations: { [RESTARTED_AT_ANNOTATION]: new Date().toISOString() } } },
    { namespace: ns },
  );
  const running = await waitFor(
    'loop-0 Running after the restart',
    async () => {
      const r = await k.replicas.get('loop-0', { namespace: ns });
      const main = r.status?.processes?.find((p) => p.name === 'main');
      const once = r.status?.processes?.find((p) => p.name === 'once');
      const ranAgain = (once?.restarts ?? 0) > (onceBefore?.restarts ?? 0) && once?.state === 'Exited';
      return r.status?.phase === 'Running' && main?.state === 'Running' && ranAgain ? r : undefined;
    },
    20_000,
  );
  const ms = Date.now() - t0;
  t.log(`CrashLoopBackOff (60 s back-off) -> Running after the restart request: ${ms} ms`);
  t.true(ms < 30_000, 'the back-off was cut short');
  const once = running.status?.processes?.find((p) => p.name === 'once');
  t.is(once?.restarts, (onceBefore?.restarts ?? 0) + 1, 'the finished process ran again');
  t.is(once?.lastExit?.reason, 'Completed');
});
