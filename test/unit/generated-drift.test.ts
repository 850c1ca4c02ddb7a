import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import test from 'ava';
import { generate, outputPaths } from '../../hack/gen-types.ts';

test('crds/*.yaml and crds/types.ts are what `npm run gen` makes from crds/src', async (t) => {
  const files = outputPaths(await generate());
  t.is(files.size, 7); // five CRDs, the types and the defaults
  for (const [file, expected] of files) {
    let actual = '';
    try {
      actual = readFileSync(file, 'utf8');
    } catch {
      // a missing file is reported by the assertion below
    }
    t.true(
      actual === expected,
      `${relative(process.cwd(), file)} is stale: run \`npm run gen\` and commit the result`,
    );
  }
});
