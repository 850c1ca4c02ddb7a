// tui/modules.ts: the TUI's modules loaded with fetch hidden load Yoga without Node's fetch
// (undici), Yoga lays out as before, and fetch is back afterwards. Each case in a fresh Node
// process: a module loads once per process.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const modules = fileURLToPath(new URL('../../tui/modules.ts', import.meta.url));
const run = fileURLToPath(new URL('../../tui/run.ts', import.meta.url));

/** Loads the TUI as `orrery tui` does (or without the wrapper), draws a box, and says what was loaded. */
function load(hidden: boolean): Promise<{ undici: boolean; fetch: string; frame: string }> {
  const script = `
    import { withoutFetch } from ${JSON.stringify(modules)};
    const load = () => Promise.all([import('ink'), import('react'), import(${JSON.stringify(run)})]);
    const [{ renderToString, Box, Text }, { createElement: h }] = ${hidden ? 'await withoutFetch(load)' : 'await load()'};
    const frame = renderToString(h(Box, { width: 12, justifyContent: 'flex-end' }, h(Text, null, 'right')));
    console.log(JSON.stringify({
      undici: process.moduleLoadList.some((m) => m.includes('undici')),
      fetch: typeof fetch,
      frame,
    }));
  `;
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['--input-type=module', '-e', script], (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    ),
  );
}

test('loaded with fetch hidden: no undici, Yoga lays out, fetch back after', async (t) => {
  const [hidden, plain] = await Promise.all([load(true), load(false)]);
  t.true(plain.undici, "without it Yoga's loader loads Node's fetch");
  t.false(hidden.undici);
  t.is(hidden.fetch, 'function');
  t.is(hidden.frame, '       right');
  t.is(hidden.frame, plain.frame);
});
