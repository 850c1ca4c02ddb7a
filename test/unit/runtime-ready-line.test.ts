import test from 'ava';
import { parseReadyLine } from '../../cli/runtime.ts';

const ready = { host: 'vm', apiEndpoint: 'http://127.0.0.1:40000', tokenFile: '/var/lib/orrery/api-token' };

test('the ready line of `orrery runtime` is parsed into its fields', (t) => {
  t.deepEqual(parseReadyLine(JSON.stringify(ready)), ready);
});

test('log records, other JSON and text are not the ready line', (t) => {
  // A pino record that happens to carry the same fields.
  t.is(parseReadyLine(JSON.stringify({ level: 30, msg: 'runtime agent started', ...ready })), undefined);
  t.is(parseReadyLine(JSON.stringify({ host: 'vm', apiEndpoint: 'http://127.0.0.1:1' })), undefined);
  t.is(parseReadyLine('{"apiEndpoint": not json'), undefined);
  t.is(parseReadyLine('apiEndpoint=http://127.0.0.1:1'), undefined);
  t.is(parseReadyLine('null'), undefined);
});
