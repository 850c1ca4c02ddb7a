// Small network helpers shared by the runtime, the benchmarks and the tests.
import { type AddressInfo, createServer } from 'node:net';

/** A TCP port free on `host` now: the kernel's pick for port 0, read and released. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
