// When a long-running command (`orrery up`, `orrery operator`, `orrery runtime`) is asked to stop.

const stopSignals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Why the command stops: a signal, or `parent-exited` when the process that started it with an
 * IPC channel (`orrery up`) went away without asking it to stop (killed with SIGKILL, crashed).
 */
export type StopCause = NodeJS.Signals | 'parent-exited';

export interface UntilSignalOptions {
  /**
   * Signals within this many milliseconds of the first are the same request (default 1000). One
   * Ctrl-C can arrive several times: the terminal signals its whole foreground process group, and
   * wrappers such as npm relay the signal to their child again.
   */
  sameRequestWithinMs?: number;
  /** Aborting stops listening (signal handlers, IPC channel, keep-alive); the promise stays pending. */
  signal?: AbortSignal;
}

/**
 * Resolves on the first SIGINT, SIGTERM or SIGHUP, keeping the process alive until then (pending
 * signal listeners alone do not hold Node's event loop open). A later signal does not kill the
 * process mid-cleanup: one after the first request's window calls `onRepeat` (e.g. to kill now).
 *
 * When this process has an IPC channel to its parent (`orrery up` spawns its children so), the
 * channel closing also resolves, with `parent-exited`: the kernel closes it however the parent
 * dies, which is what prctl(PR_SET_PDEATHSIG) would give a process that Node cannot set it for.
 */
export function untilSignal(
  onRepeat: (signal: NodeJS.Signals) => void = () => {},
  options: UntilSignalOptions = {},
): Promise<StopCause> {
  const sameRequestWithinMs = options.sameRequestWithinMs ?? 1000;
  const keepAlive = setInterval(() => {}, 1 << 30);
  return new Promise((resolve) => {
    let firstAt: number | undefined;
    const stop = (cause: StopCause) => {
      firstAt = performance.now();
      clearInterval(keepAlive);
      process.off('disconnect', onDisconnect);
      resolve(cause);
    };
    const onSignal = (signal: NodeJS.Signals) => {
      if (firstAt === undefined) return stop(signal);
      if (performance.now() - firstAt >= sameRequestWithinMs) onRepeat(signal);
    };
    const onDisconnect = () => {
      if (firstAt === undefined) stop('parent-exited');
    };
    for (const signal of stopSignals) process.on(signal, onSignal);
    if (process.channel) {
      process.on('disconnect', onDisconnect);
      // The listener refs the channel; it must not keep a stopped process from exiting.
      process.channel.unref();
    }
    options.signal?.addEventListener(
      'abort',
      () => {
        clearInterval(keepAlive);
        for (const signal of stopSignals) process.off(signal, onSignal);
        process.off('disconnect', onDisconnect);
      },
      { once: true },
    );
  });
}
