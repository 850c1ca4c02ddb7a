const stopSignals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Resolves on the first SIGINT, SIGTERM or SIGHUP, keeping the process alive until then (pending
 * signal listeners alone do not hold Node's event loop open). Later signals do not kill the
 * process mid-cleanup — a terminal's Ctrl-C reaches a whole process group, and wrappers such as
 * npm relay it again — they call `onRepeat` instead (e.g. to force a faster stop).
 */
export function untilSignal(onRepeat: (signal: NodeJS.Signals) => void = () => {}): Promise<NodeJS.Signals> {
  const keepAlive = setInterval(() => {}, 1 << 30);
  return new Promise((resolve) => {
    let received = false;
    const handler = (signal: NodeJS.Signals) => {
      if (received) return onRepeat(signal);
      received = true;
      clearInterval(keepAlive);
      resolve(signal);
    };
    for (const signal of stopSignals) process.on(signal, handler);
  });
}
