// Where the installed package lives. Files that ship beside the sources (CRD manifests, the
// control plane's Go module, the native addon's build) are found from the package root, so the
// same code works from the source tree (cli/main.ts) and from an installed package, which runs
// the compiled copy in dist/ (dist/cli/main.js).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface PackageJson {
  name?: string;
  version?: string;
}

function findPackageRoot(): { root: string; version: string } {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate)) {
      const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as PackageJson;
      if (pkg.name === 'orrery') return { root: dir, version: pkg.version ?? '0.0.0-unknown' };
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json of orrery above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

const found = findPackageRoot();

/** The directory holding Orrery's package.json. */
export const packageRoot: string = found.root;

/** The package version (package.json). */
export const version: string = found.version;

/** A path inside the package, e.g. `packagePath('crds')`. */
export function packagePath(...segments: string[]): string {
  return join(packageRoot, ...segments);
}
