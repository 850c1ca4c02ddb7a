/**
 * Resolves on the first SIGINT or SIGTERM, keeping the process alive until then (pending signal
 * listeners alone do not hold Node's event loop open).
 */
export function untilSignal(): Promise<NodeJS.Signals> {
  const keepAlive = setInterval(() => {}, 1 << 30);
  return new Promise((resolve) => {
    const done = (signal: NodeJS.Signals) => {
      clearInterval(keepAlive);
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve(signal);
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}
