// Requests per second per replica from the mesh proxies' metrics text (operator/autoscale/requests.ts),
// and the HPA's average-value recommendation it feeds (hpa.ts recommendAverage).
import test from 'ava';
import { recommendAverage } from '../../operator/autoscale/hpa.ts';
import { endpointRequests, RequestRateTracker } from '../../operator/autoscale/requests.ts';

const line = (ns: string, service: string, endpoint: string, n: number) =>
  `orrery_proxy_upstream_requests_total{namespace="${ns}",service="${service}",port="http",endpoint="${endpoint}",address="127.0.0.1:1"} ${n}`;

test('the requests of each replica are summed over the Services and ports that send to it', (t) => {
  const text = [
    '# HELP orrery_proxy_upstream_requests_total HTTP requests sent to an endpoint (each try)',
    '# TYPE orrery_proxy_upstream_requests_total counter',
    line('shop', 'web', 'web-0', 10),
    line('shop', 'web-admin', 'web-0', 5),
    line('shop', 'web', 'web-1', 7),
    line('other', 'web', 'web-0', 100),
    'orrery_proxy_upstream_request_errors_total{namespace="shop",service="web",port="http",endpoint="web-0",address="x"} 3',
    'orrery_proxy_upstream_requests_total{namespace="shop",service="web"} 9',
  ].join('\n');
  t.deepEqual(
    endpointRequests(text),
    new Map([
      ['shop/web-0', 15],
      ['shop/web-1', 7],
      ['other/web-0', 100],
    ]),
  );
});

test('a rate is the counter increase over the time between two reads, summed over the proxies', (t) => {
  const rates = new RequestRateTracker();
  t.is(rates.rate('shop', 'web-0'), undefined, 'nothing read yet');
  rates.add({ proxy: 'a', at: 0, counts: new Map([['shop/web-0', 100]]) });
  t.is(rates.rate('shop', 'web-0'), undefined, 'one read: no rate yet');
  rates.add({ proxy: 'a', at: 2000, counts: new Map([['shop/web-0', 140]]) });
  rates.add({ proxy: 'b', at: 0, counts: new Map([['shop/web-0', 0]]) });
  rates.add({
    proxy: 'b',
    at: 1000,
    counts: new Map([
      ['shop/web-0', 5],
      ['shop/web-1', 8],
    ]),
  });
  t.is(rates.rate('shop', 'web-0'), 20 + 5);
  t.is(rates.rate('shop', 'web-1'), 8, 'new on b: counted from zero');
  t.is(rates.rate('shop', 'web-2'), 0, 'no proxy sent it anything');
  // b restarted: its counter went down, so it was reset: its increase is its value.
  rates.add({ proxy: 'b', at: 2000, counts: new Map([['shop/web-0', 1]]) });
  t.is(rates.rate('shop', 'web-0'), 21);
  rates.add({ proxy: 'b', at: 3000, counts: new Map([['shop/web-0', 4]]) });
  t.is(rates.rate('shop', 'web-0'), 23);
  // a's Lease is gone.
  rates.keep(new Set(['b']));
  t.is(rates.rate('shop', 'web-0'), 3);
});

test('recommendAverage: the ratio of the average to the target, within tolerance no change, conservative for the unmeasured', (t) => {
  const at = (...values: (number | undefined)[]) => values.map((value) => ({ ready: true, value }));
  const units = { unit: ' req/s', what: 'a request rate' };
  t.is(recommendAverage(2, at(30, 30), 10, units).desired, 6);
  t.is(recommendAverage(2, at(10.5, 10.5), 10, units).desired, 2, 'within 10 %');
  t.is(recommendAverage(4, at(2, 2, 2, 2), 10, units).desired, 1);
  // Scaling up with one replica unmeasured: it counts as 0, which lowers the average.
  t.is(recommendAverage(3, at(30, 30, undefined), 10, units).desired, 6);
  // Scaling down with one unmeasured: it counts as at the target.
  t.is(recommendAverage(3, at(2, 2, undefined), 10, units).desired, 2);
  const none = recommendAverage(3, at(undefined, undefined), 10, units);
  t.is(none.desired, 3);
  t.is(none.reason, 'no ready replica has a request rate yet');
  t.regex(recommendAverage(2, at(30, 30), 10, units).reason, /^30 req\/s over 2 replicas, target 10 req\/s$/);
});
