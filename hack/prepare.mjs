// npm's prepare step in a checkout (`npm ci`, `npm install`): the package's TypeScript compiled
// into Node's compile cache (cli/compile.ts), so that the first `orrery` command after the install
// starts without loading Node's TypeScript transformer. Plain JavaScript, so that an old Node.js
// gets one line saying why nothing was compiled instead of a syntax error; never fails the install.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import module from 'node:module';
import { fileURLToPath } from 'node:url';
import { nodeVersionProblem } from '../bin/node-check.js';

const { engines } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const problem = nodeVersionProblem('orrery', process.versions.node, engines.node, process.execPath);
if (problem) {
  console.warn(`prepare: the compile cache is left empty: ${problem}`);
  process.exit(0);
}
const started = performance.now();
module.enableCompileCache();
const { compileModules } = await import('../cli/compile.ts');
const { compiled, failed } = await compileModules();
// cli/main.ts runs the command line as it loads: compiled by running the cheapest command.
const bin = fileURLToPath(new URL('../bin/orrery.js', import.meta.url));
const version = spawnSync(process.execPath, [bin, '--version'], { stdio: 'ignore' });
const dir = module.getCompileCacheDir?.() ?? 'nowhere';
console.log(
  `prepare: ${compiled + (version.status === 0 ? 1 : 0)} modules compiled into ${dir} in ${Math.round(performance.now() - started)} ms` +
    (failed.length ? `; not loadable here, compiled at first use: ${failed.join(', ')}` : ''),
);
