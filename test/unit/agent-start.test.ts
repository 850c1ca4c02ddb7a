import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';

const repo = join(import.meta.dirname, '..', '..');

test('what `orrery runtime` loads before re-adoption talks to no API server: no kube/, HTTP API, metrics or node:http', async (t) => {
  // A fresh process that imports the agent's entry module as cli/runtime.ts does, and lists what it loaded.
  const script = `
import { registerHooks } from 'node:module';
const loaded = [];
registerHooks({ load(url, context, next) { loaded.push(url); return next(url, context); } });
await import('./node-runtime/agent/index.ts');
console.log(JSON.stringify(loaded));
`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    cwd: repo,
  });
  const loaded = JSON.parse(stdout) as string[];
  t.true(
    loaded.some((url) => url.endsWith('/node-runtime/engine.ts')),
    'the engine is loaded: it does the re-adoption',
  );
  const heavy = loaded.filter((url) =>
    /\/kube\/|\/node-runtime\/agent\/(agent|http|metrics|status|host)\.ts$|\/node_modules\/(express|prom-client|yaml|@kubernetes)\/|^node:https?$/.test(
      url,
    ),
  );
  t.deepEqual(heavy, [], 'loaded later, by agent.ts, once the replicas are re-adopted');
});
