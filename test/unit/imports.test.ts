// The import rule of docs/DESIGN.md §2 ("Layers"): which top-level folder may import which.
// The table is the rule; this test reads every TypeScript file's relative imports (static,
// re-exports and dynamic import()) and fails on an edge the table does not allow, which also
// rules out every cycle between top-level folders.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import test from 'ava';

const root = join(import.meta.dirname, '..', '..');

/** What each product folder may import, besides itself. */
const ALLOWED: Record<string, readonly string[]> = {
  platform: [],
  kube: ['platform'],
  crds: ['kube', 'platform'],
  controlplane: ['platform'],
  operator: ['crds', 'kube', 'platform'],
  'node-runtime': ['crds', 'kube', 'platform'],
  mesh: ['crds', 'kube', 'platform'],
  tui: ['crds', 'kube', 'platform'],
  cli: ['controlplane', 'crds', 'kube', 'mesh', 'node-runtime', 'operator', 'platform', 'tui'],
};
const PRODUCT = Object.keys(ALLOWED);
/** Development folders: they may import any product folder; no product folder imports them. */
const DEVELOPMENT = ['bench', 'hack', 'test', 'bin'];

/** The folder an import edge is judged by: the top-level folder, with test/ split in its parts. */
function unitOf(file: string): string {
  const [top, second] = file.split('/');
  return top === 'test' && second ? `test/${second}` : (top as string);
}

/** Relative import specifiers of a TypeScript source, resolved to repository paths. */
function importsOf(file: string, source: string): string[] {
  const specifiers = [
    ...source.matchAll(/^\s*(?:import|export)\s[^'"]*?\sfrom\s+['"](\.[^'"]+)['"]/gm),
    ...source.matchAll(/^\s*import\s+['"](\.[^'"]+)['"]/gm),
    ...source.matchAll(/\bimport\(\s*['"](\.[^'"]+)['"]\s*\)/g),
  ].map((m) => m[1] as string);
  return specifiers.map((s) => normalize(join(dirname(file), s)));
}

/** Why an edge from `from` to `to` (repository paths) breaks the rule, or undefined. */
function violation(from: string, to: string): string | undefined {
  const a = unitOf(from);
  const b = unitOf(to);
  if (a === b) return undefined;
  const [topA] = a.split('/');
  const [topB] = b.split('/');
  if (PRODUCT.includes(topA as string)) {
    if (!PRODUCT.includes(topB as string)) return `product folder ${a} imports ${b}`;
    if (topA === topB) return undefined;
    return ALLOWED[topA as string]?.includes(topB as string) ? undefined : `${topA} may not import ${topB}`;
  }
  if (a === 'test/helpers' && b.startsWith('test/')) return `test/helpers imports ${b}`;
  if (!DEVELOPMENT.includes(topA as string)) return `${a} is in no layer of the rule`;
  return undefined;
}

test('the rule itself: allowed and forbidden edges', (t) => {
  t.is(violation('operator/operator.ts', 'kube/index.ts'), undefined);
  t.is(violation('cli/up.ts', 'controlplane/controlplane.ts'), undefined);
  t.is(violation('bench/e2e.bench.ts', 'cli/up.ts'), undefined);
  t.is(violation('kube/resources.ts', 'crds/types.ts'), 'kube may not import crds');
  t.is(
    violation('node-runtime/agent/agent.ts', 'operator/labels.ts'),
    'node-runtime may not import operator',
  );
  t.is(violation('operator/x.ts', 'node-runtime/engine.ts'), 'operator may not import node-runtime');
  t.is(violation('cli/up.ts', 'hack/test.ts'), 'product folder cli imports hack');
  t.is(
    violation('test/helpers/e2e.ts', 'test/integration/fixtures/x.ts'),
    'test/helpers imports test/integration',
  );
  t.deepEqual(
    importsOf('cli/logs.ts', "const k = await import('../kube/index.ts');\nimport { a } from './b.ts';\n"),
    ['cli/b.ts', 'kube/index.ts'],
  );
});

test('no import breaks the layering between top-level folders', (t) => {
  const files = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '*.ts'], {
    cwd: root,
    encoding: 'utf8',
  })
    .split('\n')
    .filter((f) => f && !f.endsWith('.d.ts') && !f.startsWith('dist/'));
  t.true(files.length > 100, `found ${files.length} TypeScript files`);
  const broken: string[] = [];
  let edges = 0;
  for (const file of files) {
    let source: string;
    try {
      source = readFileSync(join(root, file), 'utf8');
    } catch {
      continue; // deleted in the working tree
    }
    for (const target of importsOf(file, source)) {
      edges++;
      const why = violation(file, relative('.', target));
      if (why) broken.push(`${file} -> ${target}: ${why}`);
    }
  }
  t.true(edges > 300, `read ${edges} imports`);
  t.deepEqual(broken, [], 'see docs/DESIGN.md §2 for the rule');
});
