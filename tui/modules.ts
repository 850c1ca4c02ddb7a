// Loading the TUI's modules without Node's fetch in sight.
//
// Yoga, Ink's layout engine, is an Emscripten build with its WebAssembly inline as base64. Its
// loader, written for browsers too, reads that data: URL with fetch() when there is a fetch, and
// Node's fetch is undici, loaded on first use: for one data: URL, 72-116 ms more to load Ink and
// 5.5 MiB more RSS (measured loading Ink alone, warm compile cache, with and without). Without a
// fetch, the same loader decodes the same bytes itself. So fetch is hidden while the modules load
// (nothing else runs in the TUI's process then) and put back at once after.

/** Runs `load` (the TUI's imports) with globalThis.fetch hidden; fetch is back when it settles. */
export async function withoutFetch<T>(load: () => Promise<T>): Promise<T> {
  const fetch = Object.getOwnPropertyDescriptor(globalThis, 'fetch');
  if (!fetch?.configurable) return load();
  Object.defineProperty(globalThis, 'fetch', { value: undefined, configurable: true, writable: true });
  try {
    return await load();
  } finally {
    Object.defineProperty(globalThis, 'fetch', fetch);
  }
}
