// Every module of the package compiled into Node's compile cache ahead of its first use: npm's
// prepare step in a checkout (`npm ci`, hack/prepare.mjs) calls it, so that the first command
// after an install (`npm start`, `orrery --version`, `orrery tui`) starts as every later one does.
//
// Why: Node strips the TypeScript of each module its compile cache does not hold yet, loading its
// transformer (swc as WebAssembly) to do so, which costs a first start ~100-200 ms and keeps
// 12-26 MiB resident in a long-lived process (`orrery up`, the TUI, a daemon) for its life. The
// daemons' code is also compiled by `orrery up` before it starts them (daemons.ts), which covers a
// daemon after a `git pull`.
import { readdirSync, readFileSync } from 'node:fs';
import module from 'node:module';
import { join } from 'node:path';
import { packagePath } from '../platform/package.ts';

/** The package's source modules: the directories tsconfig.build.json compiles into dist/. */
function sourceModules(): string[] {
  const { include, exclude } = JSON.parse(readFileSync(packagePath('tsconfig.build.json'), 'utf8')) as {
    include: string[];
    exclude: string[];
  };
  const skipped = new Set(exclude.map((e) => e.replace(/^\*\*\//, '')));
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (!skipped.has(entry.name)) walk(path);
      } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
        files.push(path);
      }
    }
  };
  for (const dir of include) walk(packagePath(dir));
  return files;
}

/**
 * Loads every source module but cli/main.ts (it parses the command line as it loads:
 * hack/prepare.mjs runs `orrery --version` for it) and writes the compile cache. Loading runs no
 * command: the modules only define things. A module that cannot load here (the native addon not
 * built) is counted, not fatal: it is compiled at its first use instead.
 */
export async function compileModules(): Promise<{ compiled: number; failed: string[] }> {
  const main = packagePath('cli', 'main.ts');
  const files = sourceModules().filter((f) => f !== main);
  const results = await Promise.allSettled(files.map((f) => import(f)));
  module.flushCompileCache?.();
  const failed = files.filter((_, i) => results[i]?.status === 'rejected');
  return { compiled: files.length - failed.length, failed };
}
