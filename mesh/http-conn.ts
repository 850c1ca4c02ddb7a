/**
 * The byte streams the `http` path (http.ts) runs on, both ways: `Conn`, with two
 * implementations that behave the same for it.
 *
 * - `UvConn` (the default): a libuv TCP handle (uv-tcp.ts) with no net.Socket, as the tcp path
 *   runs (tcp-uv.ts). A read lands in one buffer for the whole process and is copied out for the
 *   sink; a write the kernel takes at once needs nothing more, one it cannot take is kept until
 *   it is done and `write()` says false (the sink hears `connDrain` once none is in flight); a
 *   FIN is sent with shutdown() after the writes in flight; the client's idle timeout is the tcp
 *   path's shared sweep, not a timer per connection.
 * - `SocketConn`: the same over a net.Socket, when the bindings are missing or with
 *   ORRERY_PROXY_TCP_STREAMS=1 (the tests run the http path on both).
 *
 * Both allow half-open: the peer's FIN is reported (`connEnd`) and the connection stays open for
 * writing; after `end()` it closes once the peer's FIN came too. `connClosed` comes once, after
 * the handle closed (never from inside the call that closed it).
 */
import { connect, type Socket } from 'node:net';
import { ConnectError, idleSweep, type Sweepable } from './tcp.ts';
import {
  errorName,
  newConnectReq,
  newShutdownReq,
  newSocket,
  readInto,
  readResult,
  UV_EOF,
  type UvConnectReq,
  type UvShutdownReq,
  type UvTcp,
  type UvWriteReq,
  write,
} from './uv-tcp.ts';

/** What a connection reports to its user (one object, no closure per connection). */
export interface ConnSink {
  /** Bytes read; the buffer is the sink's to keep. */
  connData(chunk: Buffer): void;
  /** The peer sent its FIN. */
  connEnd(): void;
  /** Every write that `write()` said false for is done. */
  connDrain(): void;
  /** Closed (once); `hadError`: by an error (a reset, a failed write), not in order. */
  connClosed(hadError: boolean): void;
}

export interface Conn {
  sink: ConnSink | undefined;
  /** The peer's address (the client's, for X-Forwarded-For and ring-hash). */
  readonly remoteAddress: string;
  /** Closed or closing: writes are dropped. */
  readonly closed: boolean;
  /** Sends `data`; false when some of it waits in the connection (`connDrain` follows). */
  write(data: Uint8Array): boolean;
  /** Stops reading until resume(). */
  pause(): void;
  resume(): void;
  /** Our FIN after what was written; closes once the peer's came too (read, so not while paused). */
  end(): void;
  /** Closes now. */
  destroy(): void;
  /** Closes now with a reset, so the peer cannot take the close for the end of a message. */
  reset(): void;
  /** Nothing read or written for `ms` closes it (0: never). */
  setIdleTimeout(ms: number): void;
}

// --- on libuv handles ---------------------------------------------------------------------------

/** Every UvConn reads into it; a read's bytes are copied out before the next read. */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

export class UvConn implements Conn, Sweepable {
  sink: ConnSink | undefined = undefined;
  readonly remoteAddress: string;
  readonly #handle: UvTcp;
  #closed = false;
  #reading = false;
  /** The peer's FIN was read. */
  #eof = false;
  /** end() was called (a shutdown is in flight or done). */
  #ended = false;
  #shutting = false;
  /** Writes in flight. */
  #pending = 0;
  #idleMs = 0;
  // Sweepable (the idle timeout)
  activity = 0;
  seen = 0;
  quiet = 0;

  constructor(handle: UvTcp, remoteAddress: string) {
    this.#handle = handle;
    this.remoteAddress = remoteAddress;
    handle.owner = this;
    handle.onread = onUvRead;
    readInto(handle, READ_BUFFER);
  }

  /** An accepted client handle: its peer's address read once. */
  static accepted(handle: UvTcp): UvConn {
    handle.setNoDelay(true);
    const peer: { address?: string } = {};
    handle.getpeername(peer);
    return new UvConn(handle, peer.address ?? '');
  }

  get closed(): boolean {
    return this.#closed;
  }

  write(data: Uint8Array): boolean {
    if (this.#closed) return true;
    this.activity++;
    const r = write(this.#handle, data, this, 0, onUvWritten);
    if (r === 0) return true;
    if (r < 0) {
      this.#fail();
      return false;
    }
    this.#pending++;
    return false;
  }

  /** A write in flight is done. */
  written(status: number): void {
    if (this.#closed) return;
    if (status < 0) {
      this.#fail();
      return;
    }
    if (--this.#pending > 0) return;
    this.sink?.connDrain();
  }

  pause(): void {
    if (this.#reading) {
      this.#reading = false;
      this.#handle.readStop();
    }
  }

  resume(): void {
    this.#read();
  }

  #read(): void {
    if (this.#reading || this.#closed || this.#eof) return;
    this.#reading = true;
    const err = this.#handle.readStart();
    if (err !== 0) this.#fail();
  }

  /** What a read reported (bytes in READ_BUFFER, or the end, or an error). */
  read(n: number): void {
    if (this.#closed) return;
    if (n > 0) {
      this.activity++;
      this.sink?.connData(Buffer.copyBytesFrom(READ_BUFFER, 0, n));
      return;
    }
    if (n === UV_EOF) {
      this.#eof = true;
      this.#reading = false;
      this.#handle.readStop();
      this.sink?.connEnd();
      if (this.#ended && !this.#shutting && !this.#closed) this.destroy();
      return;
    }
    if (n < 0) this.#fail();
  }

  end(): void {
    if (this.#closed || this.#ended) return;
    this.#ended = true;
    if (this.#eof) {
      // Both directions done: the close sends our FIN after what is in flight (nothing is unread).
      if (this.#pending === 0) {
        this.destroy();
        return;
      }
    }
    const req = newShutdownReq();
    req.oncomplete = onUvShutdown;
    req.owner = this;
    this.#shutting = true;
    const err = this.#handle.shutdown(req);
    if (err !== 0) {
      this.#shutting = false;
      this.#fail();
    }
  }

  shutdownDone(status: number): void {
    this.#shutting = false;
    if (this.#closed) return;
    if (status < 0) this.#fail();
    else if (this.#eof) this.destroy();
  }

  destroy(): void {
    this.#close(false, false);
  }

  reset(): void {
    this.#close(true, false);
  }

  /** A read, write or shutdown failed: closed with a reset (the peer must not take it for an end). */
  #fail(): void {
    this.#close(true, true);
  }

  #close(reset: boolean, hadError: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reading = false;
    if (this.#idleMs > 0) idleSweep(this.#idleMs).delete(this);
    const done = hadError ? onUvClosedByError : onUvClosed;
    // libuv cannot reset a socket with a shutdown in flight; a close it is then.
    if (!reset || this.#shutting || this.#handle.reset(done) !== 0) this.#handle.close(done);
  }

  setIdleTimeout(ms: number): void {
    if (this.#idleMs > 0 || ms <= 0 || this.#closed) return;
    this.#idleMs = ms;
    idleSweep(ms).add(this);
  }

  /** Nothing went through for the idle timeout. */
  idle(): void {
    this.#idleMs = 0; // the sweep has let go of it
    this.destroy();
  }
}

function onUvRead(this: UvTcp): void {
  (this.owner as UvConn).read(readResult());
}

function onUvWritten(this: UvWriteReq, status: number): void {
  this.buffer = undefined;
  (this.owner as UvConn).written(status);
}

function onUvShutdown(this: UvShutdownReq, status: number): void {
  (this.owner as UvConn).shutdownDone(status);
}

function onUvClosed(this: UvTcp): void {
  (this.owner as UvConn).sink?.connClosed(false);
}

function onUvClosedByError(this: UvTcp): void {
  (this.owner as UvConn).sink?.connClosed(true);
}

/**
 * A connect within `timeoutMs` that `signal` can abort: `start` begins it and calls `done` with
 * the connection or an error (once; later calls are ignored), and returns what gives up on it
 * (closes the half-made connection).
 */
function connectWithin(
  timeoutMs: number,
  signal: AbortSignal,
  start: (done: (err: ConnectError | undefined, conn?: Conn) => void) => () => void,
): Promise<Conn> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new ConnectError('ABORTED', 'connection closed'));
    let settled = false;
    const done = (err: ConnectError | undefined, conn?: Conn) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      if (err || !conn) {
        giveUp();
        reject(err);
      } else resolve(conn);
    };
    const onAbort = () => done(new ConnectError('ABORTED', 'connection closed'));
    const timer = setTimeout(
      () => done(new ConnectError('ETIMEDOUT', `no connect in ${timeoutMs} ms`)),
      timeoutMs,
    );
    signal.addEventListener('abort', onAbort, { once: true });
    const giveUp = start(done);
  });
}

/** A connected UvConn to address:port (no Nagle), or a ConnectError within timeoutMs. */
export function connectUv(
  address: string,
  port: number,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Conn> {
  return connectWithin(timeoutMs, signal, (done) => {
    const handle = newSocket();
    handle.setNoDelay(true);
    const req: UvConnectReq = newConnectReq();
    const failed = (errno: number) =>
      done(new ConnectError(errorName(errno), `connect ${errorName(errno)} ${address}:${port}`));
    req.oncomplete = (status: number) => {
      if (status < 0) failed(status);
      else done(undefined, new UvConn(handle, address));
    };
    const err = handle.connect(req, address, port);
    if (err !== 0) queueMicrotask(() => failed(err));
    return () => handle.close();
  });
}

// --- on net.Socket ------------------------------------------------------------------------------

const kConn = Symbol('orrery.http.conn');
type ConnSocket = Socket & { [kConn]: SocketConn };

export class SocketConn implements Conn {
  sink: ConnSink | undefined = undefined;
  readonly remoteAddress: string;
  readonly socket: Socket;

  /** `socket` allows half-open (the listener's and connectTo's do). */
  constructor(socket: Socket) {
    this.socket = socket;
    this.remoteAddress = socket.remoteAddress ?? '';
    (socket as ConnSocket)[kConn] = this;
    socket.on('data', onSocketData);
    socket.on('end', onSocketEnd);
    socket.on('drain', onSocketDrain);
    socket.on('error', () => {}); // 'close' (with hadError) follows
    socket.on('close', onSocketClose);
  }

  get closed(): boolean {
    return this.socket.destroyed;
  }

  write(data: Uint8Array): boolean {
    if (this.socket.destroyed) return true;
    return this.socket.write(data);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  end(): void {
    const s = this.socket;
    if (s.destroyed || s.writableEnded) return;
    s.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  reset(): void {
    if (!this.socket.destroyed) this.socket.resetAndDestroy();
  }

  setIdleTimeout(ms: number): void {
    if (ms > 0) this.socket.setTimeout(ms, () => this.socket.destroy());
  }
}

function onSocketData(this: ConnSocket, chunk: Buffer): void {
  this[kConn].sink?.connData(chunk);
}

function onSocketEnd(this: ConnSocket): void {
  this[kConn].sink?.connEnd();
}

function onSocketDrain(this: ConnSocket): void {
  this[kConn].sink?.connDrain();
}

function onSocketClose(this: ConnSocket, hadError: boolean): void {
  this[kConn].sink?.connClosed(hadError);
}

/** A connected SocketConn to address:port (half-open allowed, no Nagle), or a ConnectError. */
export function connectSocket(
  address: string,
  port: number,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Conn> {
  return connectWithin(timeoutMs, signal, (done) => {
    const socket = connect({ host: address, port, allowHalfOpen: true, noDelay: true });
    const onError = (err: NodeJS.ErrnoException) => done(new ConnectError(err.code ?? 'ERROR', err.message));
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      done(undefined, new SocketConn(socket));
    });
    return () => socket.destroy();
  });
}

// --- a tunnel (Upgrade) -------------------------------------------------------------------------

/** One direction of a tunnel: what `from` reads goes to `to`, with backpressure and half-close. */
class TunnelSide implements ConnSink {
  readonly #from: Conn;
  readonly #to: Conn;
  readonly #onClosed: () => void;
  constructor(from: Conn, to: Conn, onClosed: () => void) {
    this.#from = from;
    this.#to = to;
    this.#onClosed = onClosed;
  }
  connData(chunk: Buffer): void {
    if (!this.#to.write(chunk)) this.#from.pause();
  }
  connEnd(): void {
    this.#to.end();
  }
  connDrain(): void {
    // Writes to #from are done: the other side may read again.
    this.#to.resume();
  }
  connClosed(hadError: boolean): void {
    if (hadError) this.#to.reset();
    else this.#to.destroy();
    this.#onClosed();
  }
}

/**
 * Bytes both ways between `a` and `b` until both close (an error on one resets the other; a FIN
 * is passed on); `onClosed` is called when each of them closed.
 */
export function tunnel(a: Conn, b: Conn, onClosed: (side: Conn) => void): void {
  a.sink = new TunnelSide(a, b, () => onClosed(a));
  b.sink = new TunnelSide(b, a, () => onClosed(b));
  a.resume();
  b.resume();
}
