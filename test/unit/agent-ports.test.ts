// The port allocator: round-robin over its range from a random start, skipping ports that are
// allocated or that another socket holds (probed with a real bind on loopback).
import { randomInt } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { PortAllocator } from '../../node-runtime/agent/ports.ts';

// A loopback address of this file's own (all of 127/8 is local), so no other test's socket sits
// on the ports it counts on.
const HOST = `127.201.${randomInt(256)}.${randomInt(1, 255)}`;

/** A listening socket on a port the kernel picks; closed when the test ends. */
async function held(t: import('ava').ExecutionContext): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen({ port: 0, host: HOST }, resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as net.AddressInfo).port;
}

test('round-robin from the start given, wrapping at the end, never a port allocated twice', async (t) => {
  const port = await held(t); // a port just taken on HOST: its neighbours are free there
  const range = { min: port + 1, max: port + 3 };
  const ports = new PortAllocator(range, HOST, port + 2);
  const got = [await ports.allocate(), await ports.allocate(), await ports.allocate()];
  t.is(new Set(got).size, 3);
  t.true(got.every((p) => p >= range.min && p <= range.max));
  t.is(got[0], port + 2, 'the start first');
  await t.throwsAsync(() => ports.allocate(), { message: /no free port left in the range/ });
  const released = got[1] as number;
  ports.release(released);
  t.is(await ports.allocate(), released, 'a released port comes back once the others are taken');
});

test('a port another socket holds is skipped', async (t) => {
  const port = await held(t);
  const ports = new PortAllocator({ min: port, max: port }, HOST, port);
  await t.throwsAsync(() => ports.allocate(), { message: `no free port left in the range ${port}-${port}` });
});

test('the first port is random over the range, so runtimes side by side start apart', async (t) => {
  const range = { min: 20000, max: 32767 };
  const first = new Set<number>();
  for (let i = 0; i < 20; i++) first.add(await new PortAllocator(range, HOST).allocate());
  // 20 draws from 12,768 ports: all distinct but for a chance of about 1.5 %, hence 19.
  t.true(first.size >= 19, `first ports: ${[...first].join(' ')}`);
  t.throws(() => new PortAllocator(range, '127.0.0.1', 19999), {
    message: 'start must be within 20000-32767, got 19999',
  });
});

test('claimed machine-wide: another runtime does not get a port claimed and not yet bound; a stale claim is taken over', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'orrery-port-claims-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const dir = join(root, 'claims');
  const [ownerA, ownerB] = [join(root, 'a'), join(root, 'b')];
  mkdirSync(ownerA);
  mkdirSync(ownerB);
  const port = await held(t); // taken on HOST by the test: its two neighbours are the range
  const range = { min: port + 1, max: port + 2 };
  const a = new PortAllocator(range, HOST, port + 1, { dir, owner: ownerA });
  const b = new PortAllocator(range, HOST, port + 1, { dir, owner: ownerB });
  // A's workload has not bound its port yet: B's bind probe would find it free, its claim not.
  t.is(await a.allocate(), port + 1);
  t.is(await b.allocate(), port + 2);
  await t.throwsAsync(() => b.allocate(), { message: /no free port left/ });
  t.is(readFileSync(join(dir, String(port + 1)), 'utf8'), `${JSON.stringify({ stateDir: ownerA })}\n`);
  // B cannot release A's claim; A can.
  b.release(port + 1);
  t.true(existsSync(join(dir, String(port + 1))));
  a.release(port + 1);
  t.false(existsSync(join(dir, String(port + 1))));
  // A runtime gone with its state leaves a stale claim, which the next allocation takes over.
  const c = new PortAllocator(range, HOST, port + 1, { dir, owner: join(root, 'c') });
  mkdirSync(join(root, 'c'));
  t.is(await c.allocate(), port + 1);
  rmSync(join(root, 'c'), { recursive: true });
  b.release(port + 2);
  t.is(await b.allocate(), port + 1, 'the stale claim of c is taken over');
});
