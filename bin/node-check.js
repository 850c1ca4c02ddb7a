// The one check of the Node.js version, in plain JavaScript that old releases still parse, run
// before anything else loads: `engines.node` in package.json is the floor (">=MAJOR.MINOR").
import { readFileSync } from 'node:fs';

const root = new URL('../', import.meta.url);

/** Exits with one line saying what is needed and how to get it when this Node.js is too old. */
export function requireSupportedNode(what) {
  const { engines } = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));
  const floor = /(\d+)\.(\d+)/.exec(engines.node);
  const [major, minor] = process.versions.node.split('.').map(Number);
  const [wantMajor, wantMinor] = [Number(floor[1]), Number(floor[2])];
  if (major > wantMajor || (major === wantMajor && minor >= wantMinor)) return;
  process.stderr.write(
    `${what} needs Node.js ${wantMajor}.${wantMinor} or newer, and this is ${process.version} (${process.execPath}); ` +
      `in a checkout, \`export PATH="$(hack/node.sh):$PATH"\` installs the pinned release from the npm registry, ` +
      `otherwise install Node.js ${wantMajor} LTS (nvm install ${wantMajor}, or your distribution's package)\n`,
  );
  process.exit(1);
}
