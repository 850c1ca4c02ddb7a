// The agent's own status writes come back through its Replica watch: that echo asks nothing of
// the runtime, so it costs no reconcile (one fewer per write: ~1,000 in a burst of 1,000 starts).
// A change of anything else about the Replica still reconciles it.
import test from 'ava';
import { RESTARTED_AT_ANNOTATION } from '../../crds/labels.ts';
import type { Agent } from '../../node-runtime/agent/index.ts';
import {
  agentDirs,
  inProcessAgent,
  kubeForTests,
  replicaObject,
  testNamespace,
  waitFor,
} from '../helpers/agent-harness.ts';

async function reconciles(agent: Agent): Promise<number> {
  const text = await agent.metrics.reconciles.render({});
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('orrery_runtime_reconciles_total'))
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

test('a status write of the agent costs no reconcile when it comes back; an annotation does', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  await k.replicas.create(
    replicaObject(ns, 'echo-0', dirs.hostName, [{ name: 'main', command: ['sleep', '600'] }]),
  );
  const running = await waitFor('Replica Running', async () => {
    const r = await k.replicas.get('echo-0', { namespace: ns });
    return r.status?.phase === 'Running' ? r : undefined;
  });
  const pid = running.status?.processes?.[0]?.pid as number;
  // Settled: the start's reconcile and its status write's echo are behind us.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const before = await reconciles(agent);

  // The process killed: the runtime restarts it and the agent writes the new status (restarts 1).
  process.kill(pid, 'SIGKILL');
  await waitFor('restart written', async () => {
    const r = await k.replicas.get('echo-0', { namespace: ns });
    return r.status?.restarts === 1 && r.status.phase === 'Running' ? r : undefined;
  });
  await new Promise((resolve) => setTimeout(resolve, 500)); // its echo has come back by now
  t.is(await reconciles(agent), before, 'the echo of the status write reconciled nothing');

  // Anything else about the object still reconciles it: here a restart asked for by annotation.
  await k.replicas.mergePatch(
    'echo-0',
    { metadata: { annotations: { [RESTARTED_AT_ANNOTATION]: new Date().toISOString() } } },
    { namespace: ns },
  );
  await waitFor('restarted on request', async () => {
    const r = await k.replicas.get('echo-0', { namespace: ns });
    return r.status?.restarts === 2 ? r : undefined;
  });
  // Counted when its reconcile returns, which may be a moment after the status it wrote.
  const after = await waitFor('the annotation reconciled', async () => {
    const n = await reconciles(agent);
    return n > before ? n : undefined;
  });
  t.true(after > before, 'the annotation was reconciled');
});

async function statusWrites(agent: Agent): Promise<number> {
  const text = await agent.metrics.statusWrites.render({});
  const line = text
    .split('\n')
    .find((l) => l.startsWith('orrery_runtime_status_writes_total{') && l.includes('outcome="written"'));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

test('a start is one status write, and it already says Running (the events of the start are held back)', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  const before = await statusWrites(agent);
  const names = ['one-0', 'one-1', 'one-2'];
  for (const name of names) {
    await k.replicas.create(
      replicaObject(ns, name, dirs.hostName, [{ name: 'main', command: ['sleep', '600'] }]),
    );
  }
  for (const name of names) {
    await waitFor(`${name} Running`, async () => {
      const r = await k.replicas.get(name, { namespace: ns });
      return r.status?.phase === 'Running' ? r : undefined;
    });
  }
  await new Promise((resolve) => setTimeout(resolve, 500)); // anything that would follow has come
  t.is((await statusWrites(agent)) - before, names.length, 'one status write per replica started');
  for (const name of names) {
    const r = await k.replicas.get(name, { namespace: ns });
    t.is(r.status?.phase, 'Running');
    t.true(r.status?.ready, `${name} ready`);
  }
});
