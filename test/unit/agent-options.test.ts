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

test('the API is plain HTTP on loopback and TLS on any other address, unless told', (t) => {
  const tls = (listen: string, given?: boolean) =>
    normalizeAgentOptions({
      hostName: 'h',
      stateDir: '/s',
      listen,
      ...(given === undefined ? {} : { tls: given }),
    }).tls;
  t.false(tls('127.0.0.1:0'));
  t.false(tls('127.8.9.10:7777'));
  t.false(tls('[::1]:7777'));
  t.false(tls('localhost:7777'));
  t.true(tls('0.0.0.0:7777'));
  t.true(tls('10.0.0.5:7777'));
  t.false(tls('10.0.0.5:7777', false), '--no-tls');
  t.true(tls('127.0.0.1:0', true), '--tls');
});

test('workloadRoot is an absolute path, named when it is not', (t) => {
  t.is(normalizeAgentOptions({ hostName: 'h', stateDir: '/s', workloadRoot: '/host' }).workloadRoot, '/host');
  t.is(normalizeAgentOptions({ hostName: 'h', stateDir: '/s' }).workloadRoot, undefined);
  t.throws(() => normalizeAgentOptions({ hostName: 'h', stateDir: '/s', workloadRoot: 'host' }), {
    message: /workloadRoot must be an absolute path/,
  });
});
