// The one check of the Node.js version, in plain JavaScript that old releases still parse, run
// before anything else loads: `engines.node` in package.json is the floor (">=MAJOR.MINOR").
import { readFileSync } from 'node:fs';

/** The line to print when `version` (e.g. "20.20.2") is below `engines` (">=24.12"), else undefined. */
export function nodeVersionProblem(what, version, engines, execPath) {
  const floor = /^>=\s*(\d+)\.(\d+)/.exec(engines);
  if (!floor)
    throw new Error(`package.json engines.node must read ">=MAJOR.MINOR", got ${JSON.stringify(engines)}`);
  const [major, minor] = version.split('.').map(Number);
  const [wantMajor, wantMinor] = [Number(floor[1]), Number(floor[2])];
  if (major > wantMajor || (major === wantMajor && minor >= wantMinor)) return undefined;
  return (
    `${what} needs Node.js ${wantMajor}.${wantMinor} or newer, and this is v${version} (${execPath}); ` +
    `in a checkout, \`export PATH="$(hack/node.sh):$PATH"\` installs the pinned release from the npm registry, ` +
    `otherwise install Node.js ${wantMajor} LTS (nvm install ${wantMajor}, or your distribution's package)`
  );
}

/** Exits with one line saying what is needed and how to get it when this Node.js is too old. */
export function requireSupportedNode(what) {
  const { engines } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  const problem = nodeVersionProblem(what, process.versions.node, engines.node, process.execPath);
  if (problem === undefined) return;
  process.stderr.write(`${problem}\n`);
  process.exit(1);
}
