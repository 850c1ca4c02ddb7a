// The API server integration tests run against: the run-wide control plane started by
// hack/test.ts (its kubeconfig in ORRERY_TEST_KUBECONFIG), or, for a single-file run
// (`npx ava test/integration/x.test.ts`), a private one per test file.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { parse } from 'yaml';
import {
  type ControlPlane,
  ensureControlPlaneBinary,
  startControlPlane,
} from '../../controlplane/controlplane.ts';
import type { KubeApi } from '../../kube/index.ts';

export interface TestCluster {
  kubeconfig: string;
  server: string;
}

let shared: Promise<TestCluster> | undefined;

export function testCluster(): Promise<TestCluster> {
  shared ??= resolveCluster();
  return shared;
}

function serverOf(kubeconfig: string): string {
  const doc = parse(readFileSync(kubeconfig, 'utf8')) as {
    'current-context'?: string;
    contexts?: { name: string; context: { cluster: string } }[];
    clusters?: { name: string; cluster: { server: string } }[];
  };
  const ctx = doc.contexts?.find((c) => c.name === doc['current-context']);
  const cluster = doc.clusters?.find((c) => c.name === ctx?.context.cluster) ?? doc.clusters?.[0];
  if (!cluster) throw new Error(`kubeconfig ${kubeconfig} names no cluster`);
  return cluster.cluster.server;
}

async function resolveCluster(): Promise<TestCluster> {
  const fromEnv = process.env.ORRERY_TEST_KUBECONFIG;
  if (fromEnv) {
    if (!existsSync(fromEnv)) {
      throw new Error(
        `ORRERY_TEST_KUBECONFIG=${fromEnv} names no file; unset it to start a private control plane`,
      );
    }
    return { kubeconfig: fromEnv, server: serverOf(fromEnv) };
  }

  // Build (or find) the binary before making the temp dir: a worker killed during a long build
  // (ava's timeout) then leaves nothing behind.
  await ensureControlPlaneBinary({ log: (msg) => console.error(`[controlplane] ${msg}`) });
  const dataDir = mkdtempSync(join(tmpdir(), 'orrery-cp-'));
  let plane: ControlPlane | undefined;
  // Registered before the start so a crash mid-start still removes the dir. Synchronous on
  // purpose: 'exit' runs no further event-loop turns. SIGKILL because there is no time to wait
  // for a graceful stop, and the data is thrown away anyway.
  process.once('exit', () => {
    if (plane) {
      try {
        process.kill(plane.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(dataDir, { recursive: true, force: true });
  });
  plane = await startControlPlane({ dataDir, log: (msg) => console.error(`[controlplane] ${msg}`) });
  return { kubeconfig: plane.kubeconfig, server: plane.server };
}

export interface KubectlResult {
  stdout: string;
  stderr: string;
  /** Exit code; non-zero is returned, not thrown, so tests can assert on failures. */
  code: number;
}

export interface KubectlOptions {
  /** Written to kubectl's stdin (for `-f -`). */
  input?: string;
  /** Kills kubectl after this long (default 60 s). */
  timeoutMs?: number;
}

/** Runs the real `kubectl` binary against `kubeconfig`. */
export function kubectl(
  kubeconfig: string,
  args: string[],
  opts: KubectlOptions = {},
): Promise<KubectlResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const child = execFile(
      'kubectl',
      ['--kubeconfig', kubeconfig, ...args],
      { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          const why = err.killed ? `was killed after ${timeoutMs} ms` : `did not run: ${err.message}`;
          reject(new Error(`kubectl ${args.join(' ')} ${why}\n${stderr}`, { cause: err }));
          return;
        }
        resolve({ stdout, stderr, code: err ? (err.code as unknown as number) : 0 });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/**
 * Creates a namespace named after the test (plus a random suffix) and deletes it when the test
 * ends, pass or fail.
 */
export async function freshNamespace(t: ExecutionContext): Promise<string> {
  const { kubeconfig } = await testCluster();
  const slug = t.title
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40)
    .replace(/-+$/, '');
  const name = `${slug || 't'}-${randomBytes(3).toString('hex')}`;
  const created = await kubectl(kubeconfig, ['create', 'namespace', name]);
  if (created.code !== 0) throw new Error(`kubectl create namespace ${name} failed: ${created.stderr}`);
  t.teardown(async () => {
    await kubectl(kubeconfig, ['delete', 'namespace', name, '--wait=false', '--ignore-not-found']);
  });
  return name;
}

/** A control plane of the test's own, to stop and start again without disturbing other tests. */
export interface PrivateControlPlane {
  readonly dataDir: string;
  /** The control plane started last. */
  readonly current: ControlPlane;
  stop(): Promise<void>;
  /** Starts it again on the same data dir and port, so kubeconfigs and clients stay valid. */
  start(): Promise<ControlPlane>;
}

/** Starts a private control plane in a temp data dir; teardown stops it and removes the dir (also after a failed start). */
export async function privateControlPlane(
  t: ExecutionContext,
  prefix = 'orrery-cp-',
): Promise<PrivateControlPlane> {
  const dataDir = mkdtempSync(join(tmpdir(), prefix));
  let plane: ControlPlane | undefined;
  t.teardown(async () => {
    await plane?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
  plane = await startControlPlane({ dataDir });
  const port = Number(new URL(plane.server).port);
  return {
    dataDir,
    get current() {
      return plane as ControlPlane;
    },
    stop: () => (plane as ControlPlane).stop(),
    async start() {
      plane = await startControlPlane({ dataDir, port });
      return plane;
    },
  };
}

/** Who the API server takes a client's credentials for (a SelfSubjectReview, as `kubectl auth whoami`). */
export async function whoAmI(api: KubeApi): Promise<{ username: string; extra?: Record<string, string[]> }> {
  const review = await api.request<{
    status: { userInfo: { username: string; extra?: Record<string, string[]> } };
  }>({
    method: 'POST',
    path: '/apis/authentication.k8s.io/v1/selfsubjectreviews',
    body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' },
  });
  return review.status.userInfo;
}
