// Builds the addon and orrery-init with the node-gyp that npm bundles (no downloads: when the
// distribution ships Node's headers in /usr/include/node, node-gyp is pointed there with
// --nodedir=/usr). Run by the root package's `install` script and by hand after editing src/.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

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

const args = [findNodeGyp(), 'rebuild', '--release'];
if (existsSync('/usr/include/node/node_api.h')) args.push('--nodedir=/usr');
const result = spawnSync(process.execPath, args, { cwd: here, stdio: 'inherit' });
if (result.status !== 0) {
  console.error(`orrery native build failed (node-gyp exit ${result.status ?? result.signal})`);
  process.exit(result.status ?? 1);
}
