// A network partition between one client and the API server, on loopback: a TCP proxy the
// client's kubeconfig points at. Healthy, it forwards bytes both ways; partitioned, it forwards
// nothing and answers nothing (open connections hang, new ones are accepted and left hanging),
// which is what a client behind a broken network sees: no refusal, no reset, no reply. TLS goes
// through it untouched, so the client still talks to the real kube-apiserver.
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import { parse, stringify } from 'yaml';

export interface Partition {
  /** A kubeconfig like the original, whose server is the proxy. */
  kubeconfig: string;
  /** Stop forwarding: every connection hangs. */
  cut(): void;
  /** Forward again; the connections that hung are reset, as after a network recovers. */
  heal(): void;
}

export async function partitionable(
  t: ExecutionContext,
  kubeconfig: string,
  kubeconfigOut: string,
): Promise<Partition> {
  const config = parse(readFileSync(kubeconfig, 'utf8')) as {
    clusters: { cluster: { server: string } }[];
  };
  const cluster = config.clusters[0]?.cluster;
  if (!cluster) throw new Error(`${kubeconfig} has no cluster`);
  const upstream = new URL(cluster.server);
  let cut = false;
  const open = new Set<net.Socket>();
  const server = net.createServer((client) => {
    open.add(client);
    client.on('close', () => open.delete(client));
    client.on('error', () => {});
    if (cut) {
      client.pause(); // accepted, never answered
      return;
    }
    const up = net.connect(Number(upstream.port), upstream.hostname);
    open.add(up);
    up.on('close', () => {
      open.delete(up);
      client.destroy();
    });
    up.on('error', () => client.destroy());
    client.on('close', () => up.destroy());
    const forward = (from: net.Socket, to: net.Socket) =>
      from.on('data', (chunk: Buffer) => {
        if (!cut) to.write(chunk); // while cut, bytes are dropped: the peer waits forever
      });
    forward(client, up);
    forward(up, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  cluster.server = `https://127.0.0.1:${port}`;
  writeFileSync(kubeconfigOut, stringify(config), { mode: 0o600 });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  );
  return {
    kubeconfig: kubeconfigOut,
    cut() {
      cut = true;
    },
    heal() {
      cut = false;
      for (const s of open) s.destroy();
    },
  };
}
