// Orrery on a real Kubernetes cluster (kind): hack/kind-e2e.sh builds the image, creates the
// cluster, installs deploy/, runs examples/hello.yaml to Running, and requests examples/web.yaml
// through its Service's virtual IP on the node. It needs a Docker engine and
// the kind binary; where either is missing the test is skipped and says why.
//
// Everything here is spawned asynchronously: a synchronous spawn would block the worker's event
// loop, and with it ava's timers, for as long as the script runs (up to 20 minutes). The test has
// its own t.timeout() covering the script's bound, since ava's default (3 min) cannot.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import test from 'ava';
import { runs } from '../helpers/skip.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

/** The script's own bound; past it the process group gets SIGTERM (the script's trap deletes the cluster). */
const KIND_TIMEOUT_MS = 20 * 60_000;
/** After that SIGTERM, time for the script's cleanup (kind delete cluster) before SIGKILL. */
const CLEANUP_GRACE_MS = 2 * 60_000;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** `error` of the spawn (ENOENT when the command is not installed). */
  error?: Error;
  timedOut: boolean;
}

/**
 * Runs a command in a process group of its own; past `timeoutMs` the group gets SIGTERM, and
 * SIGKILL `graceMs` later. `onStart` gets the kill for a teardown.
 */
function run(
  command: string,
  args: string[],
  opts: { timeoutMs: number; graceMs?: number; onStart?: (kill: () => void) => void },
): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const signalGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        // the group is gone already
      }
    };
    const stop = () => {
      signalGroup('SIGTERM');
      killTimer ??= setTimeout(() => signalGroup('SIGKILL'), opts.graceMs ?? 5_000);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, opts.timeoutMs);
    opts.onStart?.(stop);
    let error: Error | undefined;
    child.once('error', (err) => {
      error = err;
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      resolve({ code, signal, stdout, stderr, timedOut, ...(error ? { error } : {}) });
    });
  });
}

const tail = (text: string, lines: number) => text.trimEnd().split('\n').slice(-lines).join('\n');

async function missing(): Promise<string | undefined> {
  const kind = await run('kind', ['version'], { timeoutMs: 10_000 });
  if (kind.code !== 0) return 'the kind binary is not on PATH';
  const docker = await run('docker', ['info'], { timeoutMs: 20_000 });
  if (docker.timedOut) return 'no Docker engine answers (docker info: no answer within 20 s)';
  if (docker.code !== 0)
    return `no Docker engine answers (docker info: ${(docker.stderr || docker.error?.message || '').trim().split('\n')[0]})`;
  return undefined;
}

const reason = await missing();

test.runIf(runs(reason, 'kind e2e'))(
  'kubectl apply -k deploy/ on kind runs hello to Running and serves web through its Service',
  async (t) => {
    t.timeout(KIND_TIMEOUT_MS + CLEANUP_GRACE_MS + 60_000, 'hack/kind-e2e.sh and its cleanup');
    let stop: (() => void) | undefined;
    let done = false;
    // Should the test end any other way (ava's timeout included), nothing of the script runs on.
    t.teardown(() => {
      if (!done) stop?.();
    });
    const result = await run('bash', ['hack/kind-e2e.sh'], {
      timeoutMs: KIND_TIMEOUT_MS,
      graceMs: CLEANUP_GRACE_MS,
      onStart: (kill) => {
        stop = kill;
      },
    });
    done = true;
    t.log(tail(result.stdout, 20));
    t.false(result.timedOut, `hack/kind-e2e.sh still running after ${KIND_TIMEOUT_MS / 60_000} minutes`);
    t.is(result.code, 0, tail(result.stderr, 40));
    t.regex(result.stdout, /^web answered: hello from /m);
  },
);
