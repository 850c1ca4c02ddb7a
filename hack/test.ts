// `npm test [-- ava args]`: the whole test suite against one real control plane per run.
//
// Builds (or reuses the cached) control-plane binary, starts kube-apiserver with embedded etcd
// in a throwaway directory, installs the CRDs, runs ava with ORRERY_TEST_KUBECONFIG pointing at
// it, then stops the control plane and removes the directory, whatever the tests did. Prints one
// closing line "ava: N passed, N failed, N skipped" after ava's own summary.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ensureControlPlaneBinary, startControlPlane } from '../controlplane/controlplane.ts';
import { installCrds } from '../crds/install.ts';
import { loadKubeConfig } from '../kube/config.ts';
import { packagePath } from '../platform/package.ts';

const log = (message: string) => console.log(`[test] ${message}`);

const dataDir = mkdtempSync(join(tmpdir(), 'orrery-test-cp-'));
let exitCode = 1;
let controlPlane: Awaited<ReturnType<typeof startControlPlane>> | undefined;

async function cleanUp() {
  await controlPlane
    ?.stop()
    .catch((error: unknown) => log(`stopping the control plane failed: ${String(error)}`));
  controlPlane = undefined;
  rmSync(dataDir, { recursive: true, force: true });
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping`);
    void cleanUp().then(() => process.exit(130));
  });
}

try {
  const binary = await ensureControlPlaneBinary({ log });
  log(
    binary.built
      ? `built the control plane in ${(binary.buildMs / 1000).toFixed(1)} s: ${binary.path}`
      : `control plane binary cached: ${binary.path}`,
  );
  controlPlane = await startControlPlane({ dataDir, log });
  log(`control plane up in ${controlPlane.bringUpMs} ms at ${controlPlane.server}`);
  const crds = await installCrds(loadKubeConfig({ kubeconfig: controlPlane.kubeconfig }));
  log(`installed ${crds.length} CRDs`);

  // ava's own command, as its package.json names it (the file moved between majors).
  const avaPackage = packagePath('node_modules', 'ava', 'package.json');
  const avaBin = (JSON.parse(readFileSync(avaPackage, 'utf8')) as { bin: { ava: string } }).bin.ava;
  const avaCli = join(dirname(avaPackage), avaBin);
  const ava = spawn(process.execPath, [avaCli, ...process.argv.slice(2)], {
    stdio: ['inherit', 'pipe', 'inherit'],
    env: { ...process.env, ORRERY_TEST_KUBECONFIG: controlPlane.kubeconfig },
  });
  let output = '';
  ava.stdout.on('data', (chunk: Buffer) => {
    process.stdout.write(chunk);
    output += chunk.toString();
  });
  exitCode = await new Promise<number>((resolve) => ava.on('close', (code) => resolve(code ?? 1)));
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
} finally {
  await cleanUp();
}
process.exit(exitCode);
