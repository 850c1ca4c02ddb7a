// `npm test [-- ava args]`: the whole test suite against one real control plane per run.
//
// Builds (or reuses the cached) control-plane binary, starts kube-apiserver with embedded etcd
// in a throwaway directory, installs the CRDs, runs ava with ORRERY_TEST_KUBECONFIG pointing at
// it, then stops the control plane and removes the directory, whatever the tests did. Prints one
// closing line "ava: N passed, N failed, N skipped" after ava's own summary.
//
// After ava, whether it passed, failed or was interrupted (SIGINT/SIGTERM are passed on to it as
// SIGINT, its graceful stop), hack/test-sweep.ts kills the processes the tests left running and
// removes the `orrery-test-*` cgroups they left, and prints what it swept. The tests' processes
// are known by ORRERY_TEST_RUN=<run id> in their environment, which ava gets from here.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ensureControlPlaneBinary, startControlPlane } from '../controlplane/controlplane.ts';
import { installCrds } from '../crds/install.ts';
import { loadKubeConfig } from '../kube/config.ts';
import { packagePath } from '../platform/package.ts';
import { nodeComponents, unavailable as realNodeUnavailable } from './realnode/node.ts';
import { RUN_ENV, sweep } from './test-sweep.ts';

const log = (message: string) => console.log(`[test] ${message}`);

const runId = randomBytes(4).toString('hex');
const startedAt = Date.now();
const dataDir = mkdtempSync(join(tmpdir(), 'orrery-test-cp-'));
let controlPlane: Awaited<ReturnType<typeof startControlPlane>> | undefined;
let ava: ChildProcess | undefined;
let avaExited: Promise<number> | undefined;
let finishing: Promise<never> | undefined;

/** How long an interrupted ava gets to stop its workers before it is killed. */
const AVA_STOP_MS = 15_000;

/** Once: wait for ava (bounded when interrupted), sweep, stop the control plane, exit with `code`. */
function finish(code: number): Promise<never> {
  finishing ??= (async () => {
    if (ava && avaExited && ava.exitCode === null && ava.signalCode === null) {
      const timer = setTimeout(() => {
        log(`ava still running ${AVA_STOP_MS / 1000} s after the interrupt: killing it`);
        ava?.kill('SIGKILL');
      }, AVA_STOP_MS);
      await avaExited;
      clearTimeout(timer);
    }
    await sweep({ runId, startedAt, log }).catch((error: unknown) => log(`sweep failed: ${String(error)}`));
    await controlPlane
      ?.stop()
      .catch((error: unknown) => log(`stopping the control plane failed: ${String(error)}`));
    controlPlane = undefined;
    rmSync(dataDir, { recursive: true, force: true });
    process.exit(code);
  })();
  return finishing;
}

// `npm test` relays the terminal's Ctrl-C, so the same one arrives twice: signals within a second
// of the first are that one. A later one stops at once, sweep and control plane stop skipped.
let interruptedAt: number | undefined;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interruptedAt !== undefined) {
      if (Date.now() - interruptedAt < 1_000) return;
      log(
        `${signal} again: exiting now, without the sweep (the control plane exits with this process; its data dir stays)`,
      );
      process.exit(130);
    }
    interruptedAt = Date.now();
    log(`${signal}: stopping`);
    // A Ctrl-C reached ava already (same process group); a kill of this process alone did not.
    // ava takes a second SIGINT as the first.
    if (ava && ava.exitCode === null && ava.signalCode === null) ava.kill('SIGINT');
    void finish(130);
  });
}

let exitCode = 1;

try {
  const binary = await ensureControlPlaneBinary({ log });
  log(
    binary.built
      ? `built the control plane in ${(binary.buildMs / 1000).toFixed(1)} s: ${binary.path}`
      : `control plane binary cached: ${binary.path}`,
  );
  // The real-node test's kubelet and friends: a cold build takes minutes, which ava's per-test
  // bounds should not have to cover.
  if ((await realNodeUnavailable()) === undefined) {
    const components = await nodeComponents(log);
    log(
      components.built
        ? `built the node components in ${(components.buildMs / 1000).toFixed(1)} s: ${components.path}`
        : `node components cached: ${components.path}`,
    );
  }
  controlPlane = await startControlPlane({ dataDir, log });
  log(`control plane up in ${controlPlane.bringUpMs} ms at ${controlPlane.server}`);
  const crds = await installCrds(loadKubeConfig({ kubeconfig: controlPlane.kubeconfig }));
  log(`installed ${crds.length} CRDs`);

  // ava's own command, as its package.json names it (the file moved between majors).
  const avaPackage = packagePath('node_modules', 'ava', 'package.json');
  const avaBin = (JSON.parse(readFileSync(avaPackage, 'utf8')) as { bin: { ava: string } }).bin.ava;
  const avaCli = join(dirname(avaPackage), avaBin);
  log(`run ${runId}: ${RUN_ENV}=${runId} marks the processes the tests start`);
  const child = spawn(process.execPath, [avaCli, ...process.argv.slice(2)], {
    stdio: ['inherit', 'pipe', 'inherit'],
    env: { ...process.env, ORRERY_TEST_KUBECONFIG: controlPlane.kubeconfig, [RUN_ENV]: runId },
  });
  ava = child;
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => {
    process.stdout.write(chunk);
    output += chunk.toString();
  });
  avaExited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 1)));
  exitCode = await avaExited;
  // ava prints a line per test (✔ passed, ✘ [fail]) but its summary omits the passed count
  // when something failed, so count the lines.
  const lines = (pattern: RegExp) => output.match(pattern)?.length ?? 0;
  const passed = lines(/^\s*✔ /gm);
  const failed = lines(/^\s*✘ \[fail\]/gm) + Number(/(\d+) uncaught exceptions?/.exec(output)?.[1] ?? 0);
  const skipped = Number(/(\d+) tests? skipped/.exec(output)?.[1] ?? 0);
  console.log(`ava: ${passed} passed, ${failed} failed, ${skipped} skipped`);
} catch (error) {
  console.error(error);
  exitCode = 1;
}
await finish(exitCode);
