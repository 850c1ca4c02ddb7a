import test from 'ava';
import { cpuMillis, formatBytes, formatCpuMillis, memoryBytes, parseQuantity } from '../../crds/quantity.ts';

test('cpu quantities become millicores, rounded up', (t) => {
  t.is(cpuMillis('500m'), 500);
  t.is(cpuMillis('2'), 2000);
  t.is(cpuMillis('0.1'), 100);
  t.is(cpuMillis('1.5'), 1500);
  t.is(cpuMillis('100u'), 1);
  t.is(cpuMillis('1e-1'), 100);
});

test('memory quantities become bytes with binary and decimal suffixes', (t) => {
  t.is(memoryBytes('128Mi'), 134_217_728);
  t.is(memoryBytes('1Gi'), 1_073_741_824);
  t.is(memoryBytes('1G'), 1_000_000_000);
  t.is(memoryBytes('64k'), 64_000);
  t.is(memoryBytes('1e3'), 1000);
  t.is(memoryBytes('4096'), 4096);
});

test('malformed quantities are rejected with the value in the message', (t) => {
  for (const bad of ['', '12 Mi', 'Mi', '1.2.3', '5mb', '1Zi']) {
    const error = t.throws(() => parseQuantity(bad), { instanceOf: TypeError });
    t.true(error?.message.includes(`'${bad}'`));
  }
});

test('quantities format back the way kubectl prints them', (t) => {
  t.is(formatBytes(134_217_728), '128Mi');
  t.is(formatBytes(1000), '1000');
  t.is(formatCpuMillis(2000), '2');
  t.is(formatCpuMillis(250), '250m');
});
