// A client process in a cgroup of the test's choosing, for the kernel fast path's tests: it joins
// the cgroup before Node starts, so every socket it opens is covered by the programs attached
// above it, and connects to VIP:port on command.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/** What `connect N` answered: the servers reached, the peers getpeername() gave, the errors. */
export interface Tally {
  servers: Record<string, number>;
  peers: Record<string, number>;
  errors: Record<string, number>;
  /** process.hrtime.bigint() at the start of each failed connect, as strings. */
  failedAt: string[];
}

// The client: N sequential connects to VIP:port per `connect N` line on stdin (or as many as fit
// in MS milliseconds for `loop MS`), one JSON Tally per answer, with the CLOCK_MONOTONIC start of
// each failed connect (process.hrtime, the same clock in every process). socket.remoteAddress is
// libuv's getpeername(2), called once the connect is done.
const CLIENT = `
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
const [vip, port] = process.argv.slice(1);
function once() {
  return new Promise((resolve) => {
    const s = connect(Number(port), vip);
    let name = '', peer = '';
    s.on('connect', () => { peer = s.remoteAddress + ':' + s.remotePort; });
    s.on('data', (d) => { name += d; });
    s.on('error', (e) => resolve({ error: e.code }));
    s.on('close', () => resolve({ name, peer }));
  });
}
for await (const line of createInterface({ input: process.stdin })) {
  const [command, arg] = line.split(' ');
  const t = { servers: {}, peers: {}, errors: {}, failedAt: [] };
  const until = process.hrtime.bigint() + BigInt(arg) * 1000000n;
  for (let i = 0; command === 'connect' ? i < Number(arg) : process.hrtime.bigint() < until; i++) {
    const started = process.hrtime.bigint();
    const r = await once();
    if (r.error) { t.errors[r.error] = (t.errors[r.error] ?? 0) + 1; t.failedAt.push(String(started)); }
    else { t.servers[r.name] = (t.servers[r.name] ?? 0) + 1; t.peers[r.peer] = (t.peers[r.peer] ?? 0) + 1; }
  }
  console.log(JSON.stringify(t));
}
`;

/** A process that joins `dir` before Node starts (so every socket it opens is in that cgroup). */
export class CgroupClient {
  readonly child: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;

  constructor(dir: string, vip: string, port: number) {
    const script = 'echo $$ > "$1/cgroup.procs" && exec "$2" --input-type=module -e "$3" "$4" "$5"';
    this.child = spawn('/bin/sh', ['-c', script, 'sh', dir, process.execPath, CLIENT, vip, String(port)]);
    this.#lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  connect(n: number): Promise<Tally> {
    return this.#ask(`connect ${n}`);
  }

  /** Connects one after the other for `ms` milliseconds. */
  loop(ms: number): Promise<Tally> {
    return this.#ask(`loop ${ms}`);
  }

  async #ask(command: string): Promise<Tally> {
    this.child.stdin.write(`${command}\n`);
    const next = await this.#lines.next();
    if (next.done) throw new Error('the client in the cgroup exited');
    return JSON.parse(next.value) as Tally;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGKILL');
    await exited;
  }
}
