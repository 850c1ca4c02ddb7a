// The kernel fast path in the host agent (--kernel-fastpath): the real agent and API server, a
// Service and its EndpointSlice written as the operator would, one endpoint a replica the agent
// runs and one a server of the test's. A client in a cgroup below the agent's parent (where every
// replica lives) connects to the VIP: it reaches both, sees the VIP, and once the replica's
// process is killed, the agent's exit event takes it out of the kernel map. Stopping the agent
// with its workloads detaches and unpins. Needs root, cgroup v2 and the fast path built.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test from 'ava';
import { BPFFS, fastPathUnavailable, SocketLb } from '../../node-runtime/bpf/index.ts';
import { bpfProgQuery } from '../../node-runtime/native/bpf.ts';
import {
  agentDirs,
  inProcessAgent,
  kubeForTests,
  releaseReplicas,
  replicaObject,
  waitFor,
} from '../helpers/agent-harness.ts';
import { cgroupSkipReason, host, runs } from '../helpers/features.ts';
import { endpointAt, meshService } from '../helpers/mesh.ts';

const v2Root = host.cgroups?.v2Root;
const reason = cgroupSkipReason({ v2: true }) ?? fastPathUnavailable(v2Root ?? '/sys/fs/cgroup');

// Connects to VIP:port per `connect N` line; answers {servers, peers, errors} as JSON.
const CLIENT = `
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
const [vip, port] = process.argv.slice(1);
const once = () => new Promise((resolve) => {
  const s = connect(Number(port), vip);
  let name = '', peer = '';
  s.on('connect', () => { peer = s.remoteAddress + ':' + s.remotePort; });
  s.on('data', (d) => { name += d; });
  s.on('error', (e) => resolve({ error: e.code }));
  s.on('close', () => resolve({ name, peer }));
});
for await (const line of createInterface({ input: process.stdin })) {
  const t = { servers: {}, peers: {}, errors: {} };
  for (let i = 0; i < Number(line.split(' ')[1]); i++) {
    const r = await once();
    const [field, key] = r.error ? ['errors', r.error] : ['servers', r.name];
    t[field][key] = (t[field][key] ?? 0) + 1;
    if (!r.error) t.peers[r.peer] = (t.peers[r.peer] ?? 0) + 1;
  }
  console.log(JSON.stringify(t));
}
`;

// The replica: a TCP server on its allocated port that writes "replica" to each connection.
const REPLICA_SERVER = [
  '/usr/bin/python3',
  '-c',
  [
    'import os, socket',
    's = socket.socket()',
    's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
    "s.bind(('127.0.0.1', int(os.environ['ORRERY_PORT_WEB'])))",
    's.listen(128)',
    'while True:',
    '    c, _ = s.accept()',
    "    c.sendall(b'replica')",
    '    c.close()',
  ].join('\n'),
];

interface Tally {
  servers: Record<string, number>;
  peers: Record<string, number>;
  errors: Record<string, number>;
}

test.serial.runIf(runs(reason, 'kernel-fastpath-agent'))(
  'the agent balances a tcp Service in the kernel, takes an exited replica out, and unloads on stop',
  async (t) => {
    const outside = createServer((s) => s.end('outside'));
    await new Promise<void>((resolve) => outside.listen(0, '127.0.0.1', resolve));
    t.teardown(() => outside.close());
    const outsidePort = (outside.address() as { port: number }).port;

    const setup = await meshService(t, {
      name: 'fp',
      portName: 'web',
      protocol: 'tcp',
      endpoints: [endpointAt('outside-0', outsidePort, 'web')],
    });
    const { ns, vip, port } = setup;
    t.teardown(() => releaseReplicas(ns));

    const dirs = await agentDirs(t);
    const agent = await inProcessAgent(t, dirs, { kernelFastPath: true });
    const cgroupDir = join(v2Root as string, dirs.cgroupParent);
    const pinDir = join(BPFFS, 'orrery', dirs.hostName);
    t.true(existsSync(pinDir), 'pinned');
    t.is(bpfProgQuery(cgroupDir, 'connect4').length, 1, 'attached to the agent cgroup parent');
    const lb = new SocketLb(pinDir);
    t.teardown(() => lb.close());

    // A replica run by this agent, then listed in the slice beside the test's server.
    const { replicas } = await kubeForTests();
    await replicas.create(
      replicaObject(ns, 'fp-0', dirs.hostName, [
        {
          name: 'main',
          command: REPLICA_SERVER,
          ports: [{ name: 'web', protocol: 'tcp' }],
          restart: 'temporary',
        },
      ]),
    );
    const running = await waitFor('the replica running with its port', () =>
      agent.engine.list().find((r) => r.phase === 'Running' && r.ports.length > 0),
    ).catch((error: unknown) => {
      t.log(JSON.stringify(agent.engine.list()));
      throw error;
    });
    const replicaPort = running.ports[0]?.port as number;
    await setup.setEndpoints([
      endpointAt('outside-0', outsidePort, 'web'),
      endpointAt('fp-0', replicaPort, 'web'),
    ]);
    await waitFor('both endpoints in the kernel map', () =>
      lb.service(vip, port)?.length === 2 ? true : undefined,
    );

    // The client, in a cgroup below the agent's parent, like a replica.
    const clientDir = join(cgroupDir, 'fp-client');
    mkdirSync(clientDir);
    const client: ChildProcessWithoutNullStreams = spawn('/bin/sh', [
      '-c',
      'echo $$ > "$1/cgroup.procs" && exec "$2" --input-type=module -e "$3" "$4" "$5"',
      'sh',
      clientDir,
      process.execPath,
      CLIENT,
      vip,
      String(port),
    ]);
    const clientExited = new Promise((resolve) => client.once('exit', resolve));
    t.teardown(async () => {
      client.kill('SIGKILL');
      await clientExited;
    });
    const lines = createInterface({ input: client.stdout })[Symbol.asyncIterator]();
    const ask = async (n: number): Promise<Tally> => {
      client.stdin.write(`connect ${n}\n`);
      const next = await lines.next();
      if (next.done) throw new Error('the client exited');
      return JSON.parse(next.value) as Tally;
    };
    const before = await ask(200);
    t.log(`200 connects: ${JSON.stringify(before.servers)}`);
    t.true((before.servers.replica ?? 0) > 0 && (before.servers.outside ?? 0) > 0);
    t.deepEqual(before.peers, { [`${vip}:${port}`]: 200 });

    // The replica's process killed: the agent's exit event takes it out of the map.
    const pid = running.processes[0]?.pid;
    t.truthy(pid, 'the replica has a pid');
    // Listeners run in the order they were added, the fast path's first (at the agent's start):
    // by the time another listener hears the exit, the map no longer has the replica.
    let inMapAtExitEvent: number | undefined;
    const onEvent = (e: { type: string; replica: string }) => {
      if (e.type === 'exited' && e.replica === running.id) inMapAtExitEvent = lb.service(vip, port)?.length;
    };
    agent.engine.on('event', onEvent);
    t.teardown(() => agent.engine.off('event', onEvent));
    const killed = performance.now();
    process.kill(pid as number, 'SIGKILL');
    await waitFor('the replica out of the kernel map', () =>
      lb.service(vip, port)?.length === 1 ? true : undefined,
    );
    t.log(`kill -> out of the kernel map: ${(performance.now() - killed).toFixed(2)} ms (polled)`);
    t.is(inMapAtExitEvent, 1, 'the map held only the other endpoint when the exit event was heard');
    const after = await ask(100);
    t.deepEqual(after.servers, { outside: 100 });

    // Stopping the agent with its workloads detaches and unpins.
    await agent.stop({ stopWorkloads: true });
    t.false(existsSync(pinDir), 'unpinned');
    t.deepEqual(existsSync(cgroupDir) ? bpfProgQuery(cgroupDir, 'connect4') : [], []);
  },
);
