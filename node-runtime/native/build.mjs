// Builds the addon and orrery-init with the node-gyp that npm bundles, against the headers of the
// Node.js that runs this script, never downloaded: a release's prefix (the npm registry's
// node-linux-* package, hack/node.sh, nvm, the official tarball) has them in include/node, a
// distribution's packaged Node in /usr/include/node. Run by the root package's `install` script
// and by hand after editing src/.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireSupportedNode } from '../../bin/node-check.js';
import { buildBpf } from '../bpf/build.mjs';

requireSupportedNode('orrery (npm install)');

const here = dirname(fileURLToPath(import.meta.url));

function findNodeGyp() {
  const require = createRequire(import.meta.url);
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {}
  // npm's own copy: <prefix>/lib/node_modules/npm/node_modules/node-gyp
  const npmCli = process.env.npm_execpath;
  const candidates = [
    npmCli && join(dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(
      dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
    '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
    '/usr/share/nodejs/node-gyp/bin/node-gyp.js',
  ].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`node-gyp not found; looked in: ${candidates.join(', ')}`);
  return found;
}

/** The prefix whose include/node has this Node's headers (the one the addon must match). */
function findNodeDir() {
  const candidates = [process.env.npm_config_nodedir, dirname(dirname(process.execPath))];
  const found = candidates.find((dir) => dir && existsSync(join(dir, 'include', 'node', 'node_api.h')));
  if (!found) {
    throw new Error(
      `the headers of Node.js ${process.version} are not installed (looked for include/node/node_api.h in ${candidates.filter(Boolean).join(', ')})`,
    );
  }
  return found;
}

const args = [findNodeGyp(), 'rebuild', '--release', `--nodedir=${findNodeDir()}`];
const result = spawnSync(process.execPath, args, { cwd: here, stdio: 'inherit' });
if (result.status !== 0) {
  console.error(`orrery native build failed (node-gyp exit ${result.status ?? result.signal})`);
  process.exit(result.status ?? 1);
}
// The kernel fast path: off with one line when clang or libbpf is missing (../bpf/build.mjs).
buildBpf();
