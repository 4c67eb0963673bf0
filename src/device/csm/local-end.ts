/**
 * The local end of a vsock connection, as the connection state machine sees
 * it (after Firecracker's `VsockConnectionBackend`: the connection is generic
 * over its stream). The device's ends are the host fds it was given (a
 * passed FIFO, a CONNECT socket, a `<uds>_<P>` socket); the loopback guest
 * stack's ends are guest processes' socketpairs; the unit tests' end is a
 * scripted double. The connection does all its I/O through this interface
 * and keeps no fd, watcher or clock of its own.
 *
 * Readiness: whoever multiplexes the connections (the endpoint) starts the
 * reports with `watch`, routing them to the connection's `onReady`; the
 * connection then says, with `want`, which of readable/writable can make
 * progress now. A hang-up is reported as readable (the read then returns
 * what is left, then end of stream).
 *
 * Host policy belongs to the end, not to the connection: what a hang-up
 * means (a FIFO passed with `keep` holds a keeper so it never hangs up) and
 * whether a slow reader is a dead peer (`slowReaderIsBackpressure`).
 */

/** What `read` and `write` return when the end has no bytes / no room now (native-bindings' WOULD_BLOCK). */
export const WOULD_BLOCK = -1;

export interface LocalEnd {
  /** The end can be read (the fd was not opened write-only). */
  readonly canRead: boolean;
  /** The end can be written (the fd was not opened read-only). */
  readonly canWrite: boolean;
  /**
   * A slow reader of this end is backpressure, never a dead peer: after the
   * peer's SHUTDOWN(SEND), bytes still buffered for it have no drain deadline
   * (a containerd FIFO reader, or `ctr attach` coming back to a kept FIFO).
   */
  readonly slowReaderIsBackpressure: boolean;
  /**
   * The end holds stream bytes that no readiness report will announce (read
   * from the fd before the connection existed: the bytes after a CONNECT
   * line); `read` returns them first.
   */
  readonly readableNow: boolean;
  /** read(2): bytes put in `buf[off, off + len)`, 0 at end of stream, WOULD_BLOCK; throws the end's error (code = errno name). */
  read(buf: Buffer, off: number, len: number): number;
  /** write(2): bytes taken from `buf[off, off + len)`, or WOULD_BLOCK; throws the end's error (EPIPE, ...). */
  write(buf: Buffer, off?: number, len?: number): number;
  /**
   * The peer will send nothing more: let the local reader see end of stream
   * now (SHUT_WR on a socket; a pipe's reader sees it when the end closes).
   * Never throws: a reader that is already gone needs no telling.
   */
  shutdownWrite(): void;
  /** Asked once the read side reached end of stream: did the far side close outright (both directions)? */
  closedOutright(): boolean;
  /** Starts readiness reports to `onReady`. Throws (nothing started) when the end cannot be watched. */
  watch(onReady: (readable: boolean, writable: boolean) => void): void;
  /** Which readiness to report from now on (both false: none). */
  want(readable: boolean, writable: boolean): void;
  /** Stops the reports and releases the end (idempotent). */
  close(): void;
  /** A few words for the operators' connection dump (`fd=12 watch=r`). */
  describe(): string;
}
