// The status writes of a replica's start: events are held back while the runtime starts it, so a
// quick start is one write that already says Running; a slow one shows Starting meanwhile, then
// Running. The reconciler and its status writer are the agent's own; the engine is a stand-in
// whose run() takes as long as the test says.
import test from 'ava';
import { pino } from 'pino';
import type { Replica, ReplicaStatus } from '../../crds/types.ts';
import { ReplicaReconciler } from '../../node-runtime/agent/replicas.ts';

function replica(): Replica {
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Replica',
    metadata: { name: 'web-0', namespace: 'ns', uid: 'u1', generation: 1, resourceVersion: '1' },
    spec: {
      instance: 'web',
      ordinal: 0,
      templateHash: 'h',
      host: 'h1',
      template: { processes: [{ name: 'main', command: ['/bin/sleep', '600'] }] },
    },
  } as unknown as Replica;
}

/** Starts a replica whose run() takes `runMs`; the phases of the status writes, in order. */
async function phasesWritten(runMs: number, slowStartMs: number): Promise<(string | undefined)[]> {
  const obj = replica();
  let phase: 'absent' | 'Starting' | 'Running' = 'absent';
  const status = () => ({
    id: 'ns.web-0',
    phase,
    ready: phase === 'Running',
    ports: [],
    startedAt: '2026-01-01T00:00:00.000Z',
    processes: [
      {
        name: 'main',
        pid: phase === 'Running' ? 42 : null,
        state: phase === 'Running' ? 'Running' : 'Waiting',
        ready: phase === 'Running',
        restarts: 0,
        startedAt: null,
        lastExit: null,
      },
    ],
  });
  const engine = {
    has: () => phase !== 'absent',
    status,
    run: async () => {
      phase = 'Starting';
      await new Promise((resolve) => setTimeout(resolve, runMs));
      phase = 'Running';
      return status();
    },
  };
  const written: ReplicaStatus[] = [];
  const replicas = {
    replaceStatus: async (o: Replica) => {
      written.push(structuredClone(o.status as ReplicaStatus));
      return { ...obj, metadata: { ...obj.metadata, resourceVersion: String(written.length + 1) } };
    },
  };
  const nothing = { inc() {}, observe() {} };
  const reconciler = new ReplicaReconciler({
    hostName: 'h1',
    address: '127.0.0.1',
    engine: engine as never,
    replicas: replicas as never,
    informer: { get: () => obj } as never,
    ports: { allocate: async () => 0, reserve() {}, release() {} } as never,
    fence: { fenced: false, takeFenced: () => false, markFenced() {} } as never,
    recorder: {} as never,
    metrics: { spawnLatency: nothing, statusWrites: nothing } as never,
    log: pino({ level: 'silent' }),
    stopping: () => false,
    servicesIn: () => [],
    configObjects: {} as never,
    configFiles: {} as never,
    persistentDataChanged: async () => {},
    slowStartMs,
  });
  await reconciler.reconcile('ns/web-0');
  await new Promise((resolve) => setTimeout(resolve, 20));
  await reconciler.statusWriter.settled('ns/web-0');
  await reconciler.statusWriter.close();
  return written.map((s) => s.phase);
}

test('a quick start is one status write, and it says Running', async (t) => {
  t.deepEqual(await phasesWritten(20, 300), ['Running']);
});

test('a start slower than the slow-start delay shows Starting meanwhile, then Running', async (t) => {
  t.deepEqual(await phasesWritten(400, 100), ['Starting', 'Running']);
});
