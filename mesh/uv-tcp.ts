/**
 * The libuv TCP handles that net.Socket is built on (Node's `tcp_wrap` and `stream_wrap`
 * bindings), for the `tcp` path alone (tcp.ts): a proxied connection needs none of what a
 * net.Socket adds (a Duplex stream on each side, its buffering, events and ticks), and that was
 * most of the proxy's CPU per new connection once the kernel's share was taken out. What this
 * module uses, and what it gives up:
 *
 * - `process.binding('tcp_wrap')` and `('stream_wrap')`: the same handles and requests Node's own
 *   net.js drives (TCP, TCPConnectWrap, WriteWrap, ShutdownWrap, the shared stream state). They
 *   are Node internals (process.binding is deprecated in documentation only, DEP0111), stable
 *   within a major version; `available` is false when they cannot be had, and the tcp path then
 *   runs on net.Socket (tcp.ts keeps both). test/integration/mesh-proxy.test.ts runs the tcp
 *   tests on both.
 * - A read lands in one buffer for the whole process (`useUserBuffer`) and is copied out before
 *   the next read can happen; a write the kernel takes at once (the common case) needs no request
 *   object of its own, and one that it cannot take stops the reading side until it is done.
 */
import { getSystemErrorName } from 'node:util';

/** A libuv TCP handle as tcp_wrap's TCP class exposes it (methods return 0 or a negative errno). */
export interface UvTcp {
  readStart(): number;
  readStop(): number;
  useUserBuffer(buffer: Uint8Array): void;
  writeBuffer(req: UvWriteReq, data: Uint8Array): number;
  shutdown(req: UvShutdownReq): number;
  close(callback?: () => void): void;
  reset(callback?: () => void): number;
  setNoDelay(on: boolean): number;
  getpeername(out: { address?: string; port?: number; family?: string }): number;
  connect(req: UvConnectReq, address: string, port: number): number;
  bind(address: string, port: number): number;
  listen(backlog: number): number;
  /** Called with `this` the handle; the byte count (or a negative errno, UV_EOF) is in `readState()`. */
  onread: ((this: UvTcp) => unknown) | null;
  /** Server handles: a connection accepted (status 0 and its handle) or accept failed (status < 0). */
  onconnection: ((this: UvTcp, status: number, handle?: UvTcp) => void) | null;
  /** Ours: what the handle belongs to. */
  owner?: unknown;
}

export interface UvConnectReq {
  oncomplete: ((this: UvConnectReq, status: number, handle: UvTcp) => void) | null;
  address?: string;
  port?: number;
  owner?: unknown;
}

export interface UvWriteReq {
  oncomplete: ((this: UvWriteReq, status: number) => void) | null;
  /** Keeps the bytes alive while the write is in flight. */
  buffer?: Uint8Array;
  owner?: unknown;
  /** Ours: which side it writes to. */
  side?: number;
}

export interface UvShutdownReq {
  oncomplete: ((this: UvShutdownReq, status: number) => void) | null;
  owner?: unknown;
  side?: number;
}

interface Bindings {
  TCP: new (type: number) => UvTcp;
  TCPConnectWrap: new () => UvConnectReq;
  WriteWrap: new () => UvWriteReq;
  ShutdownWrap: new () => UvShutdownReq;
  socketType: number;
  serverType: number;
  state: Int32Array;
  kReadBytesOrError: number;
  kLastWriteWasAsync: number;
}

function load(): Bindings | undefined {
  try {
    const binding = (process as unknown as { binding(name: string): Record<string, unknown> }).binding;
    const tcp = binding('tcp_wrap') as {
      TCP: Bindings['TCP'];
      TCPConnectWrap: Bindings['TCPConnectWrap'];
      constants: { SOCKET: number; SERVER: number };
    };
    const stream = binding('stream_wrap') as {
      WriteWrap: Bindings['WriteWrap'];
      ShutdownWrap: Bindings['ShutdownWrap'];
      streamBaseState: Int32Array;
      kReadBytesOrError: number;
      kLastWriteWasAsync: number;
    };
    const b: Bindings = {
      TCP: tcp.TCP,
      TCPConnectWrap: tcp.TCPConnectWrap,
      WriteWrap: stream.WriteWrap,
      ShutdownWrap: stream.ShutdownWrap,
      socketType: tcp.constants.SOCKET,
      serverType: tcp.constants.SERVER,
      state: stream.streamBaseState,
      kReadBytesOrError: stream.kReadBytesOrError,
      kLastWriteWasAsync: stream.kLastWriteWasAsync,
    };
    const ok =
      typeof b.TCP === 'function' &&
      typeof b.TCPConnectWrap === 'function' &&
      typeof b.WriteWrap === 'function' &&
      typeof b.ShutdownWrap === 'function' &&
      b.state instanceof Int32Array &&
      Number.isInteger(b.kReadBytesOrError) &&
      Number.isInteger(b.kLastWriteWasAsync) &&
      typeof (b.TCP.prototype as UvTcp).useUserBuffer === 'function' &&
      typeof (b.TCP.prototype as UvTcp).reset === 'function';
    return ok ? b : undefined;
  } catch {
    return undefined;
  }
}

const b = load();

/**
 * Whether the handles are there (and not turned off: ORRERY_PROXY_TCP_STREAMS=1 runs the tcp path
 * on net.Socket, as the tests do to cover both).
 */
export const available = b !== undefined && process.env.ORRERY_PROXY_TCP_STREAMS !== '1';

function bindings(): Bindings {
  if (!b) throw new Error('the tcp_wrap and stream_wrap bindings are not available');
  return b;
}

/** libuv's end of file, as a read reports it. */
export const UV_EOF = -4095;

/** The byte count of the read being reported (onread), or a negative errno (UV_EOF at the end). */
export function readResult(): number {
  const { state, kReadBytesOrError } = bindings();
  return state[kReadBytesOrError] as number;
}

/** Reads of `handle` land in `buffer` (at offset 0) from now on. */
export function readInto(handle: UvTcp, buffer: Uint8Array): void {
  // biome-ignore lint/correctness/useHookAtTopLevel: a libuv stream method, not a React hook
  handle.useUserBuffer(buffer);
}

export function newSocket(): UvTcp {
  const { TCP, socketType } = bindings();
  return new TCP(socketType);
}

export function newServer(): UvTcp {
  const { TCP, serverType } = bindings();
  return new TCP(serverType);
}

export function newConnectReq(): UvConnectReq {
  return new (bindings().TCPConnectWrap)();
}

export function newShutdownReq(): UvShutdownReq {
  return new (bindings().ShutdownWrap)();
}

/** The request a write uses; a write the kernel takes at once leaves it unused, for the next one. */
let spareWriteReq: UvWriteReq | undefined;

/**
 * Writes `data` to `handle`: 0 when the kernel took all of it, 1 when the rest is in flight (then
 * `oncomplete` is called on a request carrying `owner` and `side`), else a negative errno.
 */
export function write(
  handle: UvTcp,
  data: Uint8Array,
  owner: unknown,
  side: number,
  oncomplete: (this: UvWriteReq, status: number) => void,
): number {
  const { WriteWrap, state, kLastWriteWasAsync } = bindings();
  const req = spareWriteReq ?? new WriteWrap();
  spareWriteReq = undefined;
  const err = handle.writeBuffer(req, data);
  if (err !== 0 || state[kLastWriteWasAsync] === 0) {
    spareWriteReq = req;
    return err;
  }
  req.oncomplete = oncomplete;
  req.owner = owner;
  req.side = side;
  req.buffer = data;
  return 1;
}

/** An errno as its name (ECONNREFUSED), for logs and errors. */
export function errorName(errno: number): string {
  try {
    return getSystemErrorName(errno);
  } catch {
    return `errno ${errno}`;
  }
}
