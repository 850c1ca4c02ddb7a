// `orrery logs` through the real binary (bin/orrery.js), against a real runtime agent and the
// replica's real process: following shows what the process prints after the follower started,
// across a restart; --previous shows the run before the restart; Ctrl-C ends a follower at once,
// and so does the end of the replica.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { Agent } from '../../node-runtime/agent/index.ts';
import {
  agentDirs,
  inProcessAgent,
  kubeForTests,
  replicaObject,
  testNamespace,
  waitFor,
} from '../helpers/agent-harness.ts';
import { within } from './fixtures/up-process.ts';

const orrery = path.join(import.meta.dirname, '..', '..', 'bin', 'orrery.js');

test.before(async () => {
  await kubeForTests();
});

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Follower {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<Exit>;
}

/** `orrery logs <args>` running on (a follower); killed in teardown if the test left it running. */
function startLogs(t: ExecutionContext, args: string[], env: NodeJS.ProcessEnv): Follower {
  const child = spawn(process.execPath, [orrery, 'logs', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
  });
  // 'close', not 'exit': all of its output has been read by then.
  const exited = new Promise<Exit>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Waits for `line` in the follower's output; the error says what it printed instead. */
async function showsLine(follower: Follower, what: string, line: string): Promise<void> {
  try {
    await waitFor(what, () => (follower.stdout().includes(`${line}\n`) ? true : undefined), 30_000);
  } catch (error) {
    throw new Error(
      `${(error as Error).message}\nstdout:\n${follower.stdout()}\nstderr:\n${follower.stderr()}`,
    );
  }
}

/** The pid of the replica's process once it runs (the runtime reports null before). */
function pidOf(agent: Agent, id: string, not?: number): number | undefined {
  const pid = agent.engine.status(id).processes[0]?.pid;
  return typeof pid === 'number' && pid !== not ? pid : undefined;
}

/** `orrery logs <args>` to its end. */
function runLogs(args: string[], env: NodeJS.ProcessEnv): Promise<Exit & { stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [orrery, 'logs', ...args],
      { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } },
      (err, stdout, stderr) =>
        resolve({
          code: err ? (typeof err.code === 'number' ? err.code : null) : 0,
          signal: err?.signal ?? null,
          stdout,
          stderr,
        }),
    );
  });
}

// Prints a line when it starts and one per SIGUSR1, each naming its pid: what a line says tells
// which run printed it, and a poke line exists only once the test sent the signal.
const ticker = [
  'sh',
  '-c',
  'n=0; trap \'n=$((n+1)); echo "run $$ poke $n"\' USR1; echo "run $$ started"; while :; do sleep 0.05; done',
];

test('orrery logs -f follows new lines across a restart, --previous shows the run before, Ctrl-C ends it', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  const id = `${ns}.ticker-0`;
  await k.replicas.create(replicaObject(ns, 'ticker-0', dirs.hostName, [{ name: 'main', command: ticker }]));
  const first = await waitFor('ticker-0 running', () => pidOf(agent, id));
  // The token as `up` hands it out: ORRERY_RUNTIME_TOKEN.
  const env = { ORRERY_RUNTIME_TOKEN: agent.token };
  const common = ['-n', ns, '--kubeconfig', k.kubeconfig];

  const follower = startLogs(t, ['ticker-0', '-f', ...common], env);
  const raw = startLogs(t, ['ticker-0', '-f', '--no-markers', ...common], env);
  const shows = (what: string, line: string) => showsLine(follower, what, line);
  await shows('the start line, from the history', `run ${first} started`);
  await showsLine(raw, 'the start line, from the history (--no-markers)', `run ${first} started`);
  // Printed only now, after the follower has shown the history: it can only come by following.
  process.kill(first, 'SIGUSR1');
  await shows('the poke line, while following', `run ${first} poke 1`);

  // A restart: the follower goes on with the new run.
  process.kill(first, 'SIGKILL');
  const second = await waitFor('ticker-0 restarted', () => pidOf(agent, id, first));
  await shows("the new run's start line", `run ${second} started`);
  process.kill(second, 'SIGUSR1');
  await shows("the new run's poke line", `run ${second} poke 1`);
  await showsLine(raw, "the new run's poke line (--no-markers)", `run ${second} poke 1`);
  // The runtime's run marker between the two runs (markers=true), as the TUI shows it.
  t.is(
    follower.stdout(),
    `run ${first} started\nrun ${first} poke 1\n--- restarted (pid ${second}) ---\nrun ${second} started\nrun ${second} poke 1\n`,
    'each line once, in order, the restart marked',
  );
  t.is(
    raw.stdout(),
    `run ${first} started\nrun ${first} poke 1\nrun ${second} started\nrun ${second} poke 1\n`,
    '--no-markers: the output as the process wrote it',
  );
  raw.child.kill('SIGINT');

  const previous = await runLogs(['ticker-0', '--previous', ...common], env);
  t.deepEqual(previous, {
    code: 0,
    signal: null,
    stdout: `run ${first} started\nrun ${first} poke 1\n`,
    stderr: '',
  });
  const current = await runLogs(['ticker-0', ...common], env);
  t.is(current.stdout, `run ${second} started\nrun ${second} poke 1\n`);
  const both = await runLogs(['ticker-0', '--previous', '-f', ...common], env);
  t.not(both.code, 0);
  t.regex(both.stderr, /--previous cannot be combined with --follow/);

  // Ctrl-C: the follower ends at once, as a Ctrl-C'd command does, saying nothing.
  t.is(follower.child.exitCode, null, 'still following');
  follower.child.kill('SIGINT');
  const exit = await within(follower.exited, 10_000);
  t.not(exit, 'timeout', 'the follower exits on SIGINT');
  if (exit !== 'timeout') t.true(exit.signal === 'SIGINT' || exit.code === 130, JSON.stringify(exit));
  t.is(follower.stderr(), '');
});

test('orrery logs -f ends with status 0 when its replica is deleted', async (t) => {
  const k = await kubeForTests();
  const ns = await testNamespace(t);
  const dirs = await agentDirs(t);
  const agent = await inProcessAgent(t, dirs);
  const id = `${ns}.ticker-0`;
  await k.replicas.create(replicaObject(ns, 'ticker-0', dirs.hostName, [{ name: 'main', command: ticker }]));
  const pid = await waitFor('ticker-0 running', () => pidOf(agent, id));
  const follower = startLogs(
    t,
    ['ticker-0', '-f', '-n', ns, '--kubeconfig', k.kubeconfig, '--state-dir', dirs.stateDir],
    { ORRERY_RUNTIME_TOKEN: '' },
  );
  await showsLine(follower, 'the start line', `run ${pid} started`);
  await k.replicas.delete('ticker-0', { namespace: ns });
  const exit = await within(follower.exited, 30_000);
  t.deepEqual(exit, { code: 0, signal: null }, follower.stderr());
  t.is(follower.stdout(), `run ${pid} started\n`);
  t.is(follower.stderr(), '');
});
