// The young generation of the TUI's V8 heap, held at a fixed size once it reaches it.
//
// V8 grows its young generation (new space) whenever the bytes that survived its scavenges since
// the last growth add up to its size: a running total that is never reset otherwise, so a process
// that draws frames for long enough ends at the maximum (64 MiB of new space here, measured in
// bench/tui.bench.ts, up to 128 MiB), and those pages stay resident: most of the TUI's RSS above
// its live heap. The maximum (`--max-semi-space-size`) is read only when Node starts, but the
// growth factor is read at each growth: at 1, it stays where it is.
//
// The cost is more scavenges: a frame leaves ~0.6 MiB of garbage, so 16 MiB is one scavenge per
// dozen frames or so (measured in docs/BENCHMARKS.md's tui section, with and without).
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';

/** Where the young generation stops growing (both semi-spaces). */
export const YOUNG_GENERATION_BYTES = 16 * 1024 * 1024;

/** The young generation's size now (new space, both semi-spaces). */
export function youngGenerationBytes(): number {
  return v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
}

/**
 * Let the young generation grow as V8 does until it reaches `cap`, then no further: checked after
 * each collection (growth happens in one) until it does. For the whole process and for good: only
 * the TUI's own process calls it. Returns a function that stops waiting.
 */
export function capYoungGeneration(cap = YOUNG_GENERATION_BYTES): () => void {
  const freeze = () => v8.setFlagsFromString('--semi-space-growth-factor=1');
  if (youngGenerationBytes() >= cap) {
    freeze();
    return () => {};
  }
  const observer = new PerformanceObserver(() => {
    if (youngGenerationBytes() < cap) return;
    freeze();
    observer.disconnect();
  });
  observer.observe({ entryTypes: ['gc'] });
  return () => observer.disconnect();
}
