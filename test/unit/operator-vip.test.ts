import test from 'ava';
import { allocateVip, inRange, parseCidr } from '../../operator/service/vip.ts';

test('a service gets a stable loopback address inside the range', (t) => {
  const range = parseCidr('127.77.0.0/16');
  const ip = allocateVip(range, 'default/web', new Set());
  t.truthy(ip);
  t.true(inRange(range, ip as string));
  t.is(allocateVip(range, 'default/web', new Set()), ip);
  t.regex(ip as string, /^127\.77\.\d+\.\d+$/);
});

test('addresses in use are skipped and a full range yields nothing', (t) => {
  const range = parseCidr('127.77.0.0/30'); // two usable addresses
  const first = allocateVip(range, 'a/a', new Set()) as string;
  const second = allocateVip(range, 'b/b', new Set([first])) as string;
  t.not(first, second);
  t.deepEqual([first, second].sort(), ['127.77.0.1', '127.77.0.2']);
  t.is(allocateVip(range, 'c/c', new Set([first, second])), undefined);
});

test('a range outside loopback or malformed is rejected naming the flag', (t) => {
  t.throws(() => parseCidr('10.0.0.0/16'), { message: /--service-cidr: must lie in 127\.0\.0\.0\/8/ });
  t.throws(() => parseCidr('127.77.0.0'), { message: /--service-cidr: expected an IPv4 CIDR/ });
  t.throws(() => parseCidr('127.300.0.0/16'), { message: /got '127\.300\.0\.0\/16'/ });
});
