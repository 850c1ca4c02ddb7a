import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import test from 'ava';
import { type Upstream, upstreamsOf } from '../../crds/slice-endpoints.ts';
import type { EndpointSlice } from '../../crds/types.ts';
import { createBalancer } from '../../mesh/balancer.ts';
import { RING_HASH_KEY } from '../../node-runtime/agent/fastpath.ts';
import { BPFFS, fastPathUnavailable, SocketLb, unpinSocketLb } from '../../node-runtime/bpf/index.ts';
import { bpfProgQuery } from '../../node-runtime/native/bpf.ts';
import {
  agentDirs,
  authed,
  childAgent,
  inProcessAgent,
  kubeForTests,
  releaseReplicas,
  replicaObject,
  waitFor,
} from '../helpers/agent-harness.ts';
import { CgroupClient } from '../helpers/cgroup-client.ts';
import { cgroupSkipReason, host, runs } from '../helpers/features.ts';
import { endpointAt, meshService } from '../helpers/mesh.ts';

const v2Root = host.cgroups?.v2Root;
const reason = cgroupSkipReason({ v2: true }) ?? fastPathUnavailable(v2Root ?? '/sys/fs/cgroup');

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

test.serial.runIf(runs(reason, 'kernel-fastpath-agent'))(
  'the agent balances a tcp Service in the kernel, takes an exited replica out, and unloads on stop',
  async (t) => {
    const outside = createServer((s) => s.on('error', () => {}).end('outside'));
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
    const pinDir = join(BPFFS, dirs.cgroupParent);
    t.true(existsSync(pinDir), 'pinned');
    t.is(bpfProgQuery(cgroupDir, 'connect4').length, 1, 'attached to the agent cgroup parent');
    const lb = new SocketLb(pinDir);
    t.teardown(() => lb.close());
    const { hosts } = await kubeForTests();
    t.deepEqual((await hosts.get(dirs.hostName)).status?.meshDataPath, { kernel: true });

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
    const client = new CgroupClient(clientDir, vip, port);
    t.teardown(() => client.stop());
    const before = await client.connect(200);
    t.log(`200 connects: ${JSON.stringify(before.servers)}`);
    t.true((before.servers.replica ?? 0) > 0 && (before.servers.outside ?? 0) > 0);
    t.deepEqual(before.peers, { [`${vip}:${port}`]: 200 });

    // The replica's process killed: the agent's exit event takes it out of the map.
    const pid = running.processes[0]?.pid;
    t.truthy(pid, 'the replica has a pid');
    // The fast path's listener was added at the agent's start: one prepended here stamps the
    // exit event before it runs, one appended checks the map after it.
    let exitEvent = 0n;
    let afterFastPath = 0n;
    let inMapAtExitEvent: number | undefined;
    const stamp = (e: { type: string; replica: string }) => {
      if (e.type === 'exited' && e.replica === running.id) exitEvent = process.hrtime.bigint();
    };
    const check = (e: { type: string; replica: string }) => {
      if (e.type !== 'exited' || e.replica !== running.id) return;
      afterFastPath = process.hrtime.bigint();
      inMapAtExitEvent = lb.service(vip, port)?.length;
    };
    agent.engine.prependListener('event', stamp);
    agent.engine.on('event', check);
    t.teardown(() => {
      agent.engine.off('event', stamp);
      agent.engine.off('event', check);
    });
    // Killed while the client connects in a tight loop.
    const loop = client.loop(1500);
    await new Promise((r) => setTimeout(r, 500));
    const killed = process.hrtime.bigint();
    process.kill(pid as number, 'SIGKILL');
    const tally = await loop;
    const late = tally.failedAt.filter((at) => BigInt(at) > exitEvent + 1_000_000n);
    t.log(
      `kill -> exit event ${Number(exitEvent - killed) / 1e6} ms, exit event -> map updated ` +
        `${Number(afterFastPath - exitEvent) / 1e3} µs; loop: ${JSON.stringify(tally.servers)}, ` +
        `failed ${JSON.stringify(tally.errors)}, ${late.length} of them started more than 1 ms after the exit event`,
    );
    t.true(exitEvent > 0n, 'the exit event was heard');
    t.deepEqual(late, [], 'no connect that started 1 ms after the exit event failed');
    t.is(inMapAtExitEvent, 1, 'the map held only the other endpoint when the exit event was heard');
    const after = await client.connect(100);
    t.deepEqual(after.servers, { outside: 100 });

    // Stopping the agent with its workloads detaches and unpins.
    await agent.stop({ stopWorkloads: true });
    t.false(existsSync(pinDir), 'unpinned');
    t.deepEqual(existsSync(cgroupDir) ? bpfProgQuery(cgroupDir, 'connect4') : [], []);
  },
);

// A replica that connects to VIP:port for MS milliseconds and writes what it reached to OUT.
const LOOP_CLIENT = `
import { connect } from 'node:net';
import { writeFileSync } from 'node:fs';
const [vip, port, ms, out] = process.argv.slice(1);
const once = () => new Promise((resolve) => {
  const s = connect(Number(port), vip);
  let name = '';
  s.on('data', (d) => { name += d; });
  s.on('error', (e) => resolve({ error: e.code }));
  s.on('close', () => resolve({ name }));
});
const t = { connects: 0, servers: {}, errors: {} };
const until = Date.now() + Number(ms);
while (Date.now() < until) {
  const r = await once();
  t.connects++;
  const [field, key] = r.error ? ['errors', r.error] : ['servers', r.name];
  t[field][key] = (t[field][key] ?? 0) + 1;
}
writeFileSync(out, JSON.stringify(t));
`;

interface LoopTally {
  connects: number;
  servers: Record<string, number>;
  errors: Record<string, number>;
}

// Issue 13's restart acceptance: the agent SIGKILLed and started again while a replica connects
// in a tight loop; the programs and map stay pinned and attached, so balancing never stops, and
// the new agent takes them over (same programs) and deletes what became stale meanwhile.
test.serial.runIf(runs(reason, 'kernel-fastpath-agent'))(
  'the agent SIGKILLed and restarted: balancing never stops, the pins are taken over, stale entries go',
  async (t) => {
    const servers = await Promise.all(
      ['a', 'b'].map(async (name) => {
        const server = createServer((s) => s.on('error', () => {}).end(name));
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        t.teardown(() => server.close());
        return (server.address() as { port: number }).port;
      }),
    );
    const setup = await meshService(t, {
      name: 'fp',
      portName: 'web',
      protocol: 'tcp',
      endpoints: servers.map((p, i) => endpointAt(`s-${i}`, p, 'web')),
    });
    const { vip, port } = setup;
    const dirs = await agentDirs(t);
    const cgroupDir = join(v2Root as string, dirs.cgroupParent);
    const pinDir = join(BPFFS, dirs.cgroupParent);
    // Runs after the agents' own teardowns (SIGKILL leaves programs and pins by design).
    t.teardown(() => {
      if (!existsSync(pinDir)) return;
      let left: SocketLb | undefined;
      try {
        left = new SocketLb(pinDir);
        if (existsSync(cgroupDir)) left.detach(cgroupDir);
      } catch (error) {
        console.error(`kernel-fastpath-agent: detaching ${pinDir} from ${cgroupDir}: ${String(error)}`);
      } finally {
        left?.close();
        unpinSocketLb(pinDir);
        try {
          rmdirSync(dirname(pinDir)); // <bpffs>/orrery, when no other agent pins there
        } catch {}
      }
    });

    const first = await childAgent(t, dirs, ['--kernel-fastpath']);
    const lb = await waitFor('the agent pinning the fast path', () =>
      existsSync(pinDir) ? new SocketLb(pinDir) : undefined,
    );
    t.teardown(() => lb.close());
    await waitFor('both endpoints in the kernel map', () =>
      lb.service(vip, port)?.length === 2 ? true : undefined,
    );
    const programs = lb.programIds;

    // The client is a replica of the agent's (a cgroup of its own below the parent, re-adopted by
    // the next agent; one the engine does not know would be removed as an orphan).
    const { replicas } = await kubeForTests();
    // In /tmp: the replica may run as another user, who cannot enter the test's private dirs.
    const out = join(tmpdir(), `orrery-test-fp-loop-${dirs.hostName}.json`);
    t.teardown(() => rmSync(out, { force: true }));
    t.teardown(() => releaseReplicas(setup.ns));
    await replicas.create(
      replicaObject(setup.ns, 'fp-client-0', dirs.hostName, [
        {
          name: 'main',
          command: [
            process.execPath,
            '--input-type=module',
            '-e',
            LOOP_CLIENT,
            vip,
            String(port),
            '4000',
            out,
          ],
          restart: 'temporary',
        },
      ]),
    );
    await new Promise((r) => setTimeout(r, 800)); // the replica started and connecting
    first.child.kill('SIGKILL');
    await first.exited;
    const second = await childAgent(t, dirs, ['--kernel-fastpath']);
    const tally = await waitFor(
      'the client replica to finish its loop',
      () => (existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as LoopTally) : undefined),
      20_000,
    );
    t.log(
      `across the SIGKILL and restart: ${tally.connects} connects, ${JSON.stringify(tally.servers)}, failed ${JSON.stringify(tally.errors)}`,
    );
    t.deepEqual(tally.errors, {});
    t.true((tally.servers.a ?? 0) > 0 && (tally.servers.b ?? 0) > 0);
    t.deepEqual(new SocketLb(pinDir).programIds, programs, 'the same programs, taken over');

    // Killed again; the Service deleted meanwhile: the next agent deletes its entry once synced.
    second.child.kill('SIGKILL');
    await second.exited;
    await setup.services.delete('fp', { namespace: setup.ns });
    t.is(lb.service(vip, port)?.length, 2, 'still balanced while no agent runs');
    await childAgent(t, dirs, ['--kernel-fastpath']);
    await waitFor('the stale entry deleted', () => (lb.service(vip, port) === undefined ? true : undefined));
    t.deepEqual(lb.servicePorts(), []);
  },
);

test.serial.runIf(runs(reason, 'kernel-fastpath-agent'))(
  'without --kernel-fastpath nothing is loaded and the Host says the proxy serves',
  async (t) => {
    const dirs = await agentDirs(t);
    await inProcessAgent(t, dirs);
    const { hosts } = await kubeForTests();
    t.deepEqual((await hosts.get(dirs.hostName)).status?.meshDataPath, {
      kernel: false,
      reason: 'off (orrery runtime --kernel-fastpath not given)',
    });
    t.false(existsSync(join(BPFFS, dirs.cgroupParent)));
  },
);

test.serial.runIf(runs(reason, 'kernel-fastpath-agent'))(
  "a ring-hash tcp port in the kernel: every connect goes to the proxy's ring choice, the next one when it goes",
  async (t) => {
    const servers = await Promise.all(
      ['a', 'b', 'c'].map(async (name) => {
        const server = createServer((s) => s.on('error', () => {}).end(name));
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        t.teardown(() => server.close());
        return { name, port: (server.address() as { port: number }).port };
      }),
    );
    const endpoints = servers.map((s) => endpointAt(s.name, s.port, 'web'));
    const setup = await meshService(t, {
      name: 'ring',
      portName: 'web',
      protocol: 'tcp',
      spec: { loadBalancer: { policy: 'ring-hash' } },
      endpoints,
    });
    const dirs = await agentDirs(t);
    await inProcessAgent(t, dirs, { kernelFastPath: true });
    const lb = new SocketLb(join(BPFFS, dirs.cgroupParent));
    t.teardown(() => lb.close());
    // What the proxy's ring gives the replicas' address (the same upstreams, the same ring).
    const ring = createBalancer<Upstream>('ring-hash');
    ring.update(
      upstreamsOf([{ metadata: { namespace: setup.ns }, endpoints } as unknown as EndpointSlice], 'web'),
    );
    const choice = ring.pick({ key: RING_HASH_KEY });
    const inMap = await waitFor('the ring-hash port in the kernel map', () =>
      lb.service(setup.vip, setup.port),
    );
    t.deepEqual(
      inMap.map((e) => e.port),
      [choice?.port],
      "one endpoint: the proxy's choice",
    );
    const clientDir = join(v2Root as string, dirs.cgroupParent, 'ring-client');
    mkdirSync(clientDir);
    const client = new CgroupClient(clientDir, setup.vip, setup.port);
    t.teardown(() => client.stop());
    t.deepEqual((await client.connect(100)).servers, { [choice?.replica as string]: 100 });
    // Its endpoint no longer ready: the next on the ring, for every connect.
    await setup.setEndpoints(
      endpoints.map((e) => (e.replica === choice?.replica ? { ...e, ready: false, serving: false } : e)),
    );
    const next = ring.pick({ key: RING_HASH_KEY, exclude: new Set([choice?.id as string]) });
    await waitFor('the next endpoint in the map', () =>
      lb.service(setup.vip, setup.port)?.[0]?.port === next?.port ? true : undefined,
    );
    t.deepEqual((await client.connect(100)).servers, { [next?.replica as string]: 100 });
  },
);

test.serial.runIf(runs(reason, 'kernel-fastpath-agent'))(
  'the flag on but the load refused: the Host says why, nothing is attached, replicas reach the proxy at VIP:port',
  async (t) => {
    // What listens at VIP:port (the proxy's place) and the Service's one endpoint elsewhere.
    const atVip = createServer((s) => s.on('error', () => {}).end('proxy'));
    const endpoint = createServer((s) => s.on('error', () => {}).end('endpoint'));
    await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve));
    t.teardown(() => endpoint.close());
    const setup = await meshService(t, {
      name: 'fallback',
      portName: 'web',
      protocol: 'tcp',
      endpoints: [endpointAt('fallback-0', (endpoint.address() as { port: number }).port, 'web')],
    });
    await new Promise<void>((resolve) => atVip.listen(setup.port, setup.vip, resolve));
    t.teardown(() => atVip.close());
    // A directory where the agent pins a map: the partial pin cannot be cleared and the load is
    // refused, as with a foreign or damaged pin.
    const dirs = await agentDirs(t);
    const pinDir = join(BPFFS, dirs.cgroupParent);
    mkdirSync(join(pinDir, 'orrery_svc'), { recursive: true });
    t.teardown(() => rmSync(pinDir, { recursive: true, force: true }));
    await inProcessAgent(t, dirs, { kernelFastPath: true });
    const { hosts } = await kubeForTests();
    const path = (await hosts.get(dirs.hostName)).status?.meshDataPath;
    t.log(`meshDataPath: ${JSON.stringify(path)}`);
    t.is(path?.kernel, false);
    t.regex(path?.reason ?? '', /holds a partial pin that cannot be cleared: .*orrery_svc/);
    const cgroupDir = join(v2Root as string, dirs.cgroupParent);
    for (const type of ['connect4', 'getpeername4', 'bind4'] as const) {
      t.deepEqual(bpfProgQuery(cgroupDir, type), [], `no ${type} program on the agent's parent`);
    }
    // A replica-like client under the agent's parent is not rewritten: the proxy's place answers.
    const clientDir = join(cgroupDir, 'fallback-client');
    mkdirSync(clientDir);
    const client = new CgroupClient(clientDir, setup.vip, setup.port);
    t.teardown(() => client.stop());
    t.deepEqual((await client.connect(50)).servers, { proxy: 50 });
  },
);

test.serial.runIf(runs(reason, 'kernel-fastpath-agent'))(
  "a replica's port is bound by that replica alone: another replica's bind is refused (EPERM)",
  async (t) => {
    const ns = (await meshService(t, { name: 'bind', portName: 'web', protocol: 'tcp', endpoints: [] })).ns;
    t.teardown(() => releaseReplicas(ns));
    const dirs = await agentDirs(t);
    const agent = await inProcessAgent(t, dirs, { kernelFastPath: true });
    const lb = new SocketLb(join(BPFFS, dirs.cgroupParent));
    t.teardown(() => lb.close());
    // The owner binds its port only once the test says so: until then the port is free, as it is
    // between the runtime's allocation and a slow workload's own bind.
    const gateDir = mkdtempSync(join(tmpdir(), 'orrery-bind-gate-'));
    chmodSync(gateDir, 0o755);
    t.teardown(() => rmSync(gateDir, { recursive: true, force: true }));
    const gate = join(gateDir, 'go');
    const python = (lines: string[]) => ['/usr/bin/python3', '-u', '-c', lines.join('\n')];
    const { replicas } = await kubeForTests();
    await replicas.create(
      replicaObject(ns, 'owner-0', dirs.hostName, [
        {
          name: 'main',
          command: python([
            'import os, socket, time',
            `while not os.path.exists(${JSON.stringify(gate)}): time.sleep(0.05)`,
            's = socket.socket()',
            "s.bind(('127.0.0.1', int(os.environ['ORRERY_PORT_WEB'])))",
            's.listen(1)',
            "print('owner bound', flush=True)",
            'time.sleep(600)',
          ]),
          ports: [{ name: 'web', protocol: 'tcp' }],
        },
      ]),
    );
    const owner = await waitFor('the owner running with its port', () =>
      agent.engine.list().find((r) => r.phase === 'Running' && r.ports.length > 0),
    );
    const port = owner.ports[0]?.port as number;
    t.true(lb.portOwners().has(port), "the owner's port is guarded in the kernel");

    // Another replica tries the owner's port (IPv4, the wildcard, IPv6), then a free one.
    await replicas.create(
      replicaObject(ns, 'thief-0', dirs.hostName, [
        {
          name: 'main',
          command: python([
            'import errno, socket',
            `for family, addr in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):`,
            '    s = socket.socket(family)',
            '    try:',
            `        s.bind((addr, ${port}))`,
            "        print(addr, 'bound', flush=True)",
            '    except OSError as e:',
            '        print(addr, errno.errorcode[e.errno], flush=True)',
            '    s.close()',
            's = socket.socket()',
            "s.bind(('127.0.0.1', 0))",
            "print('ephemeral bound', flush=True)",
          ]),
          restart: 'temporary',
        },
      ]),
    );
    const logsOf = async (name: string) => {
      const res = await fetch(`${agent.apiEndpoint}/v1/replicas/${ns}/${name}/logs`, authed(agent.token));
      return res.ok ? res.text() : '';
    };
    const thief = await waitFor('the other replica tried', async () => {
      const text = await logsOf('thief-0');
      return text.includes('ephemeral bound') ? text : undefined;
    });
    t.log(thief.trim());
    t.regex(thief, /^127\.0\.0\.1 EPERM$/m);
    t.regex(thief, /^0\.0\.0\.0 EPERM$/m);
    t.regex(thief, /^:: EPERM$/m);
    t.true(lb.counters().bindRefused >= 3);

    // The owner's own bind passes.
    writeFileSync(gate, '');
    await waitFor('the owner bound its port', async () =>
      (await logsOf('owner-0')).includes('owner bound') ? true : undefined,
    );

    // Its replica gone, the port is free again.
    await replicas.delete('owner-0', { namespace: ns });
    await waitFor('the guard removed with the replica', () => (lb.portOwners().has(port) ? undefined : true));
    t.pass();
  },
);
