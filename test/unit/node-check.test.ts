// The Node.js version check that runs before anything else: one line, naming what is needed and
// how to get it.
import { execFile, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import test from 'ava';
import { nodeVersionProblem } from '../../bin/node-check.js';
import { packagePath } from '../../platform/package.ts';
import { runs } from '../helpers/skip.ts';

const execFileAsync = promisify(execFile);
const engines = (
  JSON.parse(readFileSync(packagePath('package.json'), 'utf8')) as { engines: { node: string } }
).engines.node;

test('a release below engines.node gets one line naming the floor, this release and how to get one', (t) => {
  const line = nodeVersionProblem('orrery', '20.20.2', '>=24.12', '/usr/bin/node');
  t.is(
    line,
    'orrery needs Node.js 24.12 or newer, and this is v20.20.2 (/usr/bin/node); in a checkout, ' +
      '`export PATH="$(hack/node.sh):$PATH"` installs the pinned release from the npm registry, ' +
      "otherwise install Node.js 24 LTS (nvm install 24, or your distribution's package)",
  );
  t.notRegex(line ?? '', /\n/);
  t.truthy(nodeVersionProblem('orrery', '24.11.9', '>=24.12', 'node'));
});

test('releases at or above the floor pass, newer majors included', (t) => {
  for (const version of ['24.12.0', '24.22.3', '25.0.0', '26.12.1']) {
    t.is(nodeVersionProblem('orrery', version, '>=24.12', 'node'), undefined, version);
  }
});

test('the pinned release in .nvmrc satisfies engines.node', (t) => {
  const pinned = readFileSync(packagePath('.nvmrc'), 'utf8').trim();
  t.is(nodeVersionProblem('orrery', pinned, engines, 'node'), undefined);
  t.is(nodeVersionProblem('orrery', process.versions.node, engines, 'node'), undefined);
});

test('engines.node in another form is refused, naming the field', (t) => {
  t.throws(() => nodeVersionProblem('orrery', '24.0.0', '^24', 'node'), { message: /engines\.node/ });
});

// Runs the real entry point under an older Node.js when this machine has one (/usr/bin/node is
// often the distribution's older release); skipped, with the reason printed, when it has none.
const old = '/usr/bin/node';
const oldVersion = ((): { version?: string; skip?: string } => {
  const probe = spawnSync(old, ['-p', 'process.versions.node'], { encoding: 'utf8' });
  if (probe.status !== 0) return { skip: `no ${old} to run` };
  const version = probe.stdout.trim();
  if (nodeVersionProblem('orrery', version, engines, old) === undefined)
    return { skip: `${old} is v${version}, not older than ${engines}` };
  return { version };
})();

test.runIf(runs(oldVersion.skip, 'node-check'))(
  'bin/orrery.js on an older Node.js prints the one line and exits 1',
  async (t) => {
    const version = oldVersion.version as string;
    const error = await t.throwsAsync(execFileAsync(old, [packagePath('bin', 'orrery.js'), '--version']));
    const { code, stdout, stderr } = error as Error & { code: number; stdout: string; stderr: string };
    t.is(code, 1);
    t.is(stdout, '');
    t.is(stderr, `${nodeVersionProblem('orrery', version, engines, old)}\n`);
  },
);
