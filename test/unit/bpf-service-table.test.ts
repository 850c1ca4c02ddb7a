// KernelServiceTable: the kernel map's entries and the replicas down on this host
// (node-runtime/bpf/service-table.ts), against a writer that records its calls.
import test from 'ava';
import type { KernelEndpoint } from '../../node-runtime/bpf/service-map.ts';
import { KernelServiceTable } from '../../node-runtime/bpf/service-table.ts';

function recorder() {
  const calls: string[] = [];
  const writer = {
    setService: (vip: string, port: number, endpoints: readonly KernelEndpoint[]) => {
      calls.push(`set ${vip}:${port} ${endpoints.map((e) => e.port).join(',')}`);
    },
    deleteService: (vip: string, port: number) => {
      calls.push(`delete ${vip}:${port}`);
      return true;
    },
  };
  return { calls, table: new KernelServiceTable(writer) };
}

const ep = (replica: string, port: number) => ({ replica, address: '127.0.0.1', port, weight: 1 });

test('an entry is written when its endpoints change, not again when they do not', (t) => {
  const { calls, table } = recorder();
  table.setPort('10.0.0.1', 80, [ep('ns/a', 1), ep('ns/b', 2)]);
  table.setPort('10.0.0.1', 80, [ep('ns/a', 1), ep('ns/b', 2)]);
  table.setPort('10.0.0.1', 80, [ep('ns/a', 1)]);
  t.deepEqual(calls, ['set 10.0.0.1:80 1,2', 'set 10.0.0.1:80 1']);
});

test('a replica down leaves every entry that has it at once, and comes back when it is up', (t) => {
  const { calls, table } = recorder();
  table.setPort('10.0.0.1', 80, [ep('ns/a', 1), ep('ns/b', 2)]);
  table.setPort('10.0.0.2', 81, [ep('ns/b', 3)]);
  table.setPort('10.0.0.3', 82, [ep('ns/c', 4)]);
  calls.length = 0;
  t.is(table.replicaDown('ns/b'), 2);
  t.deepEqual(calls, ['set 10.0.0.1:80 1', 'set 10.0.0.2:81 ']);
  t.is(table.replicaDown('ns/b'), 0);
  // Still down: a new list from the sources leaves it out.
  table.setPort('10.0.0.1', 80, [ep('ns/a', 1), ep('ns/b', 2), ep('ns/d', 5)]);
  t.is(calls.at(-1), 'set 10.0.0.1:80 1,5');
  calls.length = 0;
  t.is(table.replicaUp('ns/b'), 2);
  t.deepEqual(calls, ['set 10.0.0.1:80 1,2,5', 'set 10.0.0.2:81 3']);
});

test('a deleted port is removed from the map, and only once', (t) => {
  const { calls, table } = recorder();
  table.setPort('10.0.0.1', 80, [ep('ns/a', 1)]);
  table.deletePort('10.0.0.1', 80);
  table.deletePort('10.0.0.1', 80);
  t.deepEqual(calls, ['set 10.0.0.1:80 1', 'delete 10.0.0.1:80']);
  t.deepEqual(table.ports(), []);
});

test('entries found in the map stay until deleteStale, unless set again', (t) => {
  const calls: string[] = [];
  const table = new KernelServiceTable(
    {
      setService: (vip, port) => {
        calls.push(`set ${vip}:${port}`);
      },
      deleteService: (vip, port) => {
        calls.push(`delete ${vip}:${port}`);
        return true;
      },
    },
    [
      { vip: '10.0.0.1', port: 80 },
      { vip: '10.0.0.2', port: 81 },
    ],
  );
  table.setPort('10.0.0.1', 80, [ep('ns/a', 1)]);
  t.is(table.deleteStale(), 1);
  t.is(table.deleteStale(), 0);
  t.deepEqual(calls, ['set 10.0.0.1:80', 'delete 10.0.0.2:81']);
});
