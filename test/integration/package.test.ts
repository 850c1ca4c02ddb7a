// The package as a user gets it: `npm pack` of this checkout, installed into a temporary prefix
// with npm, runs from there. Node.js does not strip types under node_modules, so this proves the
// installed copy runs the compiled dist/ and finds its CRDs, the control plane's Go module and
// the native addon from its own package root.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import test from 'ava';
import { packageRoot, version } from '../../platform/package.ts';

const execFileAsync = promisify(execFile);

test('the packed package, installed into a prefix, runs orrery --version and orrery up --api-only', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'orrery-pack-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  await execFileAsync('npm', ['pack', '--silent', '--pack-destination', dir, packageRoot], {
    maxBuffer: 16 << 20,
  });
  const tarball = readdirSync(dir).find((name) => name.endsWith('.tgz'));
  t.truthy(tarball, 'npm pack wrote a tarball');
  const prefix = join(dir, 'prefix');
  // npm runs a global package's install script (the native addon's build) only when allowed.
  await execFileAsync(
    'npm',
    [
      'install',
      '--global',
      '--prefix',
      prefix,
      '--allow-scripts=orrery',
      '--no-audit',
      '--no-fund',
      '--loglevel=error',
      join(dir, tarball ?? ''),
    ],
    { maxBuffer: 16 << 20 },
  );
  const installed = join(prefix, 'lib', 'node_modules', 'orrery');
  const orrery = join(prefix, 'bin', 'orrery');

  const { stdout } = await execFileAsync(orrery, ['--version']);
  t.is(stdout.trim(), version);

  const dataDir = join(dir, 'data');
  const up = spawn(orrery, ['up', '--api-only', '--port', '0', '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => up.on('exit', (code) => resolve(code)));
  t.teardown(() => up.kill('SIGKILL'));
  let output = '';
  up.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const kubeconfig = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: up.stdout });
    lines.on('line', (line) => {
      output += `${line}\n`;
      const match = /^export KUBECONFIG=(.+)$/.exec(line);
      if (match?.[1]) resolve(match[1]);
    });
    void exited.then((code) => reject(new Error(`orrery up exited (${code}) before it was up:\n${output}`)));
  });

  // The CRDs came from the installed package and the API server serves them.
  const { stdout: crds } = await execFileAsync('kubectl', [
    '--kubeconfig',
    kubeconfig,
    'get',
    'crd',
    '-o',
    'jsonpath={.items[*].metadata.name}',
  ]);
  t.deepEqual(crds.split(' ').sort(), [
    'endpointslices.orrery.dev',
    'hosts.orrery.dev',
    'instances.orrery.dev',
    'replicas.orrery.dev',
    'services.orrery.dev',
  ]);
  // It ran from the installed copy, compiled: no TypeScript source was shipped or needed.
  t.false(existsSync(join(installed, 'cli', 'main.ts')));
  t.true(existsSync(join(installed, 'dist', 'cli', 'main.js')));

  up.kill('SIGINT');
  t.is(await exited, 0, output);
});
