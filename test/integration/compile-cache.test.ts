// `orrery up` has its daemons' code compiled into Node's compile cache before it starts them
// (cli/daemons.ts): a daemon started from the checkout then finds every module it loads already
// stripped of its types, and never loads Node's TypeScript transformer, which it would keep for
// its whole life (~12 MiB resident). npm's prepare step (hack/prepare.mjs) does the same for
// every module of the checkout, so the first command after `npm ci` loads no transformer either.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { packagePath } from '../../platform/package.ts';

const execFileAsync = promisify(execFile);

/** Runs an ES module snippet with the compile cache at `cacheDir`; its stdout. */
async function run(cacheDir: string, source: string): Promise<string> {
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_COMPILE_CACHE: cacheDir };
  delete env.NODE_DISABLE_COMPILE_CACHE;
  const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '-e', source], {
    cwd: packagePath(),
    env,
  });
  return stdout.trim();
}

// What the daemon commands import when they start (cli/runtime.ts, operator.ts, proxy.ts, and the
// agent after re-adoption), named
// here by path rather than through cli/daemons.ts; prints whether the transformer got loaded.
const startDaemons = `
  await Promise.all(${JSON.stringify(
    [
      'node-runtime/agent/index.ts',
      'node-runtime/agent/agent.ts', // loaded by the agent after re-adoption
      'operator/operator.ts',
      'operator/metrics.ts',
      'mesh/proxy.ts',
      'platform/log.ts',
      'platform/memory.ts',
      'kube/index.ts',
    ].map((m) => packagePath(m)),
  )}.map((m) => import(m)));
  console.log(process.moduleLoadList.some((m) => m.includes('internal/deps/amaro')));
`;

test('daemons started after compileDaemons() load no TypeScript transformer', async (t) => {
  const warmed = mkdtempSync(join(tmpdir(), 'orrery-compile-cache-'));
  const cold = mkdtempSync(join(tmpdir(), 'orrery-compile-cache-'));
  t.teardown(() => {
    rmSync(warmed, { recursive: true, force: true });
    rmSync(cold, { recursive: true, force: true });
  });
  await run(
    warmed,
    `const { compileDaemons } = await import(${JSON.stringify(packagePath('cli/daemons.ts'))}); await compileDaemons();`,
  );
  t.is(await run(warmed, startDaemons), 'false', 'a daemon after the warm-up strips nothing');
  // Without it, the same start loads the transformer: what the warm-up saves.
  t.is(await run(cold, startDaemons), 'true', 'a daemon on an empty cache strips its modules');
});

/** `orrery ARGS` with the compile cache at `cacheDir`; whether it loaded the transformer. */
async function orreryLoadsTransformer(cacheDir: string, args: string[]): Promise<string> {
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_COMPILE_CACHE: cacheDir };
  delete env.NODE_DISABLE_COMPILE_CACHE;
  const report = `process.on('exit', () => process.stderr.write('amaro=' + process.moduleLoadList.some((m) => m.includes('internal/deps/amaro'))))`;
  const { stderr } = await execFileAsync(
    process.execPath,
    [
      '--import',
      `data:text/javascript,${encodeURIComponent(report)}`,
      packagePath('bin', 'orrery.js'),
      ...args,
    ],
    { cwd: packagePath(), env },
  );
  return /amaro=(true|false)/.exec(stderr)?.[1] ?? `no report: ${stderr}`;
}

test("after npm's prepare step, the first orrery command, up's modules and the TUI's load no transformer", async (t) => {
  const prepared = mkdtempSync(join(tmpdir(), 'orrery-compile-cache-'));
  const cold = mkdtempSync(join(tmpdir(), 'orrery-compile-cache-'));
  t.teardown(() => {
    rmSync(prepared, { recursive: true, force: true });
    rmSync(cold, { recursive: true, force: true });
  });
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_COMPILE_CACHE: prepared };
  delete env.NODE_DISABLE_COMPILE_CACHE;
  const { stdout } = await execFileAsync(process.execPath, [packagePath('hack', 'prepare.mjs')], {
    cwd: packagePath(),
    env,
  });
  t.regex(stdout, /^prepare: \d+ modules compiled into /);
  t.is(await orreryLoadsTransformer(prepared, ['--version']), 'false', 'orrery --version strips nothing');
  const upAndTui = `
    await Promise.all(${JSON.stringify(['cli/up.ts', 'cli/up-setup.ts', 'tui/run.ts'].map((m) => packagePath(m)))}.map((m) => import(m)));
    console.log(process.moduleLoadList.some((m) => m.includes('internal/deps/amaro')));
  `;
  t.is(await run(prepared, upAndTui), 'false', "up's and the TUI's modules strip nothing");
  t.is(
    await orreryLoadsTransformer(cold, ['--version']),
    'true',
    'on an empty cache the same command strips',
  );
});
