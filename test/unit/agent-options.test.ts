import path from 'node:path';
import test from 'ava';
import { normalizeAgentOptions } from '../../node-runtime/agent/options.ts';

test('the run dir (live-process records) defaults to the state dir and is resolved to an absolute path', (t) => {
  const plain = normalizeAgentOptions({ hostName: 'h', stateDir: '/var/lib/orrery/h' });
  t.is(plain.runDir, '/var/lib/orrery/h');
  t.is(plain.logDir, '/var/lib/orrery/h/logs');
  const split = normalizeAgentOptions({ hostName: 'h', stateDir: '/var/lib/orrery/h', runDir: 'run/h' });
  t.is(split.runDir, path.resolve('run/h'));
  t.is(split.stateDir, '/var/lib/orrery/h');
});

test('an empty run dir is refused with the option named', (t) => {
  t.throws(() => normalizeAgentOptions({ hostName: 'h', runDir: '' }), { message: /runDir/ });
});
