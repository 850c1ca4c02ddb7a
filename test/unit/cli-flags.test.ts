import test from 'ava';
import { InvalidArgumentError } from 'commander';
import {
  addressFlag,
  dnsSubdomainFlag,
  durationFlag,
  labelFlag,
  listenFlag,
  portRangeFlag,
  quantityFlag,
  wholeNumberFlag,
} from '../../cli/flags.ts';
import { runtimeUrlFlag } from '../../cli/proxy.ts';

test('whole numbers: bounds in the message, no sign, no fraction', (t) => {
  t.is(wholeNumberFlag('--workers', 1, 64)('4'), 4);
  t.is(wholeNumberFlag('--tail', 0)('0'), 0);
  t.throws(() => wholeNumberFlag('--workers', 1, 64)('65'), {
    instanceOf: InvalidArgumentError,
    message: "--workers expects a whole number from 1 to 64, got '65'",
  });
  t.throws(() => wholeNumberFlag('--lease-duration', 1)('0.5'), {
    message: "--lease-duration expects a whole number >= 1, got '0.5'",
  });
  t.throws(() => wholeNumberFlag('--tail', 0)('-1'), { message: /^--tail expects a whole number >= 0/ });
});

test('durations are milliseconds; a bare number is seconds', (t) => {
  const grace = durationFlag('--host-grace');
  t.is(grace('500ms'), 500);
  t.is(grace('1.5s'), 1500);
  t.is(grace('2m'), 120_000);
  t.is(grace('3'), 3000);
  t.throws(() => grace('soon'), {
    message: "--host-grace expects a duration such as 500ms, 1s or 2m, got 'soon'",
  });
});

test('listen addresses and port ranges are the runtime options grammar, naming the flag', (t) => {
  t.is(listenFlag('--listen')('[::1]:0'), '[::1]:0');
  t.is(listenFlag('--listen')(':8080'), ':8080');
  t.throws(() => listenFlag('--metrics-listen')('nowhere'), {
    instanceOf: InvalidArgumentError,
    message: /^--metrics-listen must be host:port/,
  });
  t.throws(() => listenFlag('--listen')('127.0.0.1:70000'), { message: /^--listen must be host:port/ });
  t.deepEqual(portRangeFlag('--port-range')('20000-20999'), { min: 20000, max: 20999 });
  t.throws(() => portRangeFlag('--port-range')('9-1'), { message: /^--port-range must be a range MIN-MAX/ });
});

test('quantities are Kubernetes quantities, kept as written; negative ones are refused', (t) => {
  const cpu = quantityFlag('--capacity-cpu');
  for (const q of ['2', '1500m', '0.5', '8Gi', '1e3']) t.is(cpu(q), q);
  for (const q of ['-1', 'lots', '8GB']) {
    t.throws(() => cpu(q), {
      message: `--capacity-cpu expects a quantity such as 2, 1500m or 8Gi, got '${q}'`,
    });
  }
});

test('addresses, names and labels', (t) => {
  t.is(addressFlag('--address')('::1'), '::1');
  t.throws(() => addressFlag('--address')('host.example'), {
    message: "--address expects an IPv4 or IPv6 address, got 'host.example'",
  });
  t.is(dnsSubdomainFlag('--host-name')('node-1.example'), 'node-1.example');
  t.throws(() => dnsSubdomainFlag('--host-name')('Bad_Name'), {
    message: /^--host-name expects a DNS-1123 subdomain/,
  });
  const label = labelFlag('--label');
  t.deepEqual(label('b=2', label('a=1')), { a: '1', b: '2' });
  t.throws(() => label('=1'), { message: "--label expects key=value, got '=1'" });
});

test("the proxy's --runtime takes http:// and https:// base URLs, repeatable", (t) => {
  // deploy/proxy.yaml points it at its node's runtime over HTTPS (the API off loopback is TLS).
  t.deepEqual(runtimeUrlFlag('https://10.200.0.2:7777/'), ['https://10.200.0.2:7777']);
  t.deepEqual(runtimeUrlFlag('http://127.0.0.1:7777', ['https://10.0.0.5:7777']), [
    'https://10.0.0.5:7777',
    'http://127.0.0.1:7777',
  ]);
  t.throws(() => runtimeUrlFlag('ftp://127.0.0.1:7777'), {
    instanceOf: InvalidArgumentError,
    message: /^--runtime expects an http:\/\/ or https:\/\/ URL .*got 'ftp:\/\/127\.0\.0\.1:7777'$/,
  });
  t.throws(() => runtimeUrlFlag('127.0.0.1:7777'), {
    message: /^--runtime expects /,
    instanceOf: InvalidArgumentError,
  });
});
