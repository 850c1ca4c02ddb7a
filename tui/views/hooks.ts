// Hooks own the subscriptions (k9s's split: models watch, views render): the cluster's change
// counter, the terminal's size (debounced), and a clock for the ages that moves when they do.
import { useEffect, useRef, useState, useSyncExternalStore } from 'react';
import type { LiveCluster } from '../model/cluster.ts';
import type { LogsModel } from '../model/logs.ts';

/** Re-render when the cluster's caches or health change; returns the change counter. */
export function useClusterVersion(cluster: LiveCluster): number {
  return useSyncExternalStore(
    (listener) => cluster.subscribe(listener),
    () => cluster.version(),
  );
}

export interface TerminalSize {
  readonly columns: number;
  readonly rows: number;
}

/** What the UI needs of the output stream: its size, and its resize events. */
export interface SizedStream {
  readonly columns?: number | undefined;
  readonly rows?: number | undefined;
  on(event: 'resize', listener: () => void): unknown;
  off(event: 'resize', listener: () => void): unknown;
}

function sizeOf(stream: SizedStream): TerminalSize {
  return { columns: stream.columns || 80, rows: stream.rows || 24 };
}

/**
 * The terminal's size, taken once a burst of resize events has been quiet for `debounceMs`: a
 * window dragged wider sends dozens, and the table is laid out again once, not for each.
 */
export function useTerminalSize(stream: SizedStream, debounceMs: number): TerminalSize {
  const [size, setSize] = useState(() => sizeOf(stream));
  useEffect(() => {
    let timer: NodeJS.Timeout | undefined;
    const onResize = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        const next = sizeOf(stream);
        setSize((prev) => (prev.columns === next.columns && prev.rows === next.rows ? prev : next));
      }, debounceMs);
    };
    stream.on('resize', onResize);
    return () => {
      clearTimeout(timer);
      stream.off('resize', onResize);
    };
  }, [stream, debounceMs]);
  return size;
}

/**
 * The time, moved when the screen would read differently: every `everyMs` `due(now)` is asked
 * whether what is shown depends on the time and has changed (an age ticking from `59s` to `1m`);
 * only then does the clock move and the screen redraw. A page of objects minutes old is drawn
 * once a minute, not every second.
 */
export function useClock(everyMs: number, due: (now: number) => boolean): number {
  const [now, setNow] = useState(() => Date.now());
  const dueRef = useRef(due);
  dueRef.current = due;
  useEffect(() => {
    const timer = setInterval(() => {
      const t = Date.now();
      if (dueRef.current(t)) setNow(t);
    }, everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}

const NEVER = () => () => {};

/** Re-render as the open log grows (at most once per its notify period); returns its change counter. */
export function useLogsVersion(logs: LogsModel | undefined): number {
  return useSyncExternalStore(
    logs ? (listener) => logs.subscribe(listener) : NEVER,
    () => logs?.version() ?? 0,
  );
}
