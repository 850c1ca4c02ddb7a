// Free malloc memory given back to the kernel now and then.
//
// glibc's malloc keeps what a process freed inside its arenas (one per thread that allocated, up
// to 8 per core) and returns to the kernel only the free space at the top of each, above a
// threshold. A Node.js process frees most of what its start allocated (V8's compiler zones, the
// module loader's buffers), scattered through its arenas, so those pages stay resident for its
// whole life: 6-8 MiB of a long-running `orrery tui` (measured in docs/BENCHMARKS.md).
// malloc_trim(0) gives back every whole free page of every arena (madvise), which a few
// milliseconds of work every half minute keeps given back. Through the native addon (glibc only:
// elsewhere, or when the addon is not built, nothing is done).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { packagePath } from './package.ts';

type Trim = () => boolean;

let trim: Trim | null | undefined;

function mallocTrim(): Trim | null {
  if (trim !== undefined) return trim;
  trim = null;
  const file = packagePath('node-runtime', 'native', 'build', 'Release', 'orrery_native.node');
  try {
    if (existsSync(file))
      trim = (createRequire(import.meta.url)(file) as { mallocTrim?: Trim }).mallocTrim ?? null;
  } catch {
    // Not loadable here (another platform's build): malloc keeps what it keeps.
  }
  return trim;
}

/** Whether this process can give free malloc memory back (glibc, the addon built). */
export function canTrimMalloc(): boolean {
  return mallocTrim() !== null;
}

/** Give every free page of the malloc arenas back to the kernel now; true when any was. */
export function trimMalloc(): boolean {
  return mallocTrim()?.() ?? false;
}

/**
 * Trim once `firstMs` after now (a process's start has settled by then) and every `everyMs`
 * after that, on an unref'd timer that never keeps the process alive; where it cannot, it stops
 * after the first. Returns a stop function.
 */
export function keepMallocTrimmed(opts: { firstMs?: number; everyMs?: number } = {}): () => void {
  const { firstMs = 5_000, everyMs = 30_000 } = opts;
  // The addon is loaded by the first tick, not here: nothing more for the start to do.
  let timer = setTimeout(function tick() {
    if (!canTrimMalloc()) return;
    trimMalloc();
    timer = setTimeout(tick, everyMs).unref();
  }, firstMs).unref();
  return () => clearTimeout(timer);
}
