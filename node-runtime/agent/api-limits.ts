/** Caps of the runtime's HTTP API (http.ts), in a module of their own so options.ts need not load express. */
export interface ApiLimits {
  /** Open connections; one more is answered 503 and closed. */
  maxConnections: number;
  /** Open event streams and log follows together; one more is answered 503. */
  maxStreams: number;
  /** Bytes an event stream may have queued for a reader that does not read; beyond, it is cut off. */
  eventBufferBytes: number;
}

export const DEFAULT_API_LIMITS: ApiLimits = {
  maxConnections: 256,
  maxStreams: 64,
  eventBufferBytes: 1024 * 1024,
};
