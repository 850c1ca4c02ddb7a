// The runtime API client every client shares (platform/runtime-api.ts): where the token is
// found, in order, and the logs path with its query.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { defaultStateDir, logsPath, readRuntimeToken, tokenPath } from '../../platform/runtime-api.ts';

test('the token: the flag, then $ORRERY_RUNTIME_TOKEN, then --token-file, then the state dir, then the default state dir', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'orrery-token-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'file');
  writeFileSync(file, 'from-file\n');
  const stateDir = join(dir, 'state');
  const env = { XDG_STATE_HOME: dir };
  t.is(
    await readRuntimeToken('a', { token: 'flag', tokenFile: file }, { ...env, ORRERY_RUNTIME_TOKEN: 'env' }),
    'flag',
  );
  t.is(await readRuntimeToken('a', { tokenFile: file }, { ...env, ORRERY_RUNTIME_TOKEN: 'env' }), 'env');
  t.is(await readRuntimeToken('a', { tokenFile: file, stateDir }, env), 'from-file');
  const defaultDir = defaultStateDir('a', env);
  t.is(defaultDir, join(dir, 'orrery', 'runtime', 'a'));
  await t.throwsAsync(readRuntimeToken('a', {}, env), {
    message: `no token for the runtime of host a: pass --token or set ORRERY_RUNTIME_TOKEN (could not read ${tokenPath(defaultDir)}: ENOENT)`,
  });
  mkdirSync(stateDir);
  writeFileSync(tokenPath(stateDir), 'from-state-dir\n');
  t.is(await readRuntimeToken('a', { stateDir }, env), 'from-state-dir');
});

test('the logs path: the replica escaped, only the parameters given', (t) => {
  t.is(logsPath({ namespace: 'web', replica: 'api-0' }), '/v1/replicas/web/api-0/logs');
  t.is(
    logsPath({ namespace: 'web', replica: 'api-0', process: 'side car', tail: 10, follow: true }),
    '/v1/replicas/web/api-0/logs?process=side+car&tail=10&follow=true',
  );
  t.is(
    logsPath({ namespace: 'web', replica: 'api-0', previous: true }),
    '/v1/replicas/web/api-0/logs?previous=true',
  );
});
