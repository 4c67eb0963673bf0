/**
 * A raw, non-blocking Unix stream client for the fuzzers: sends bytes with
 * or without fds in one sendmsg each (so message boundaries and fds land
 * exactly as a hostile client chooses), half-closes, reads whatever the
 * server says, and waits for it event-driven with a bound. Never throws on
 * the server going away: a fuzzer expects that.
 */
import {
  closeQuietly,
  connectUnix,
  FdWatcher,
  recvWithFds,
  SHUT_WR,
  sendWithFds,
  shutdownFd,
  unreadBySendPeer,
  WOULD_BLOCK,
} from '../../../native-bindings/index.js';

export class RawClient {
  readonly fd: number;
  /** Everything the server sent, in order. */
  received: Buffer = Buffer.alloc(0);
  /** The server closed its end (EOF or an error on read). */
  eof = false;
  /** A send failed (EPIPE, ECONNRESET): the server is gone from this connection. */
  broken = false;
  private closed = false;
  private readonly buf = Buffer.alloc(64 * 1024);

  constructor(
    readonly socketPath: string,
    /** Bytes of what the server sends that are kept in `received`; more is read and dropped. */
    private readonly keep = 64 * 1024,
  ) {
    this.fd = connectUnix(socketPath, true);
  }

  /** One sendmsg of `data` with `fds`; false when it would block or the connection is broken. */
  send(data: Buffer, fds: readonly number[] = []): boolean {
    if (this.closed || this.broken) return false;
    // SCM_RIGHTS needs at least one data byte to ride on.
    const payload = data.length === 0 && fds.length > 0 ? Buffer.from([0x0a]) : data;
    if (payload.length === 0) return true;
    try {
      return sendWithFds(this.fd, payload, fds) !== WOULD_BLOCK;
    } catch {
      this.broken = true;
      return false;
    }
  }

  /**
   * Sends all of `data` (waiting for room, at most `ms`), or closes the
   * connection: the server then sees exactly the bytes meant for it, never a
   * stream with a hole in it. False when the connection is gone.
   */
  async sendAll(data: Buffer, ms = 5000): Promise<boolean> {
    let off = 0;
    const end = Date.now() + ms;
    while (off < data.length) {
      if (this.closed || this.broken) return false;
      let n: number;
      try {
        n = sendWithFds(this.fd, data.subarray(off), []);
      } catch {
        this.broken = true;
        return false;
      }
      if (n !== WOULD_BLOCK) {
        off += n;
        continue;
      }
      if (Date.now() > end) {
        this.close();
        return false;
      }
      await this.writable(end - Date.now());
      this.drain(); // the server may be waiting for us to read its replies before it reads more
    }
    return true;
  }

  private writable(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        watcher.close();
        resolve();
      };
      const watcher = new FdWatcher(this.fd, finish);
      const timer = setTimeout(finish, Math.max(1, Math.min(ms, 50)));
      watcher.want(false, true);
    });
  }

  /** Writes `data` repeatedly until `total` bytes went out or the socket would block. Returns bytes sent. */
  flood(data: Buffer, total: number): number {
    if (this.closed || this.broken || data.length === 0) return 0;
    let sent = 0;
    while (sent < total) {
      let n: number;
      try {
        n = sendWithFds(this.fd, data.subarray(0, Math.min(data.length, total - sent)), []);
      } catch {
        this.broken = true;
        break;
      }
      if (n === WOULD_BLOCK) break;
      sent += n;
    }
    return sent;
  }

  /**
   * Waits (≤ `ms`) until the server has read everything sent so far, so the
   * next send arrives as a separate read: cases then replay the same way
   * whatever the machine's load, which keeps shrinking a failure reliable.
   */
  async settled(ms = 20): Promise<void> {
    const end = Date.now() + ms;
    while (!this.closed && Date.now() < end) {
      let queued: number;
      try {
        queued = unreadBySendPeer(this.fd);
      } catch {
        return;
      }
      if (queued === 0) return;
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  shutdownWrite(): void {
    if (this.closed) return;
    try {
      shutdownFd(this.fd, SHUT_WR);
    } catch {
      this.broken = true;
    }
  }

  /** Reads what is there now (fds the server might send are closed at once). */
  drain(): void {
    while (!this.closed && !this.eof) {
      let got: ReturnType<typeof recvWithFds>;
      try {
        got = recvWithFds(this.fd, this.buf, 8);
      } catch {
        this.eof = true;
        return;
      }
      if (got === null) return;
      for (const fd of got.fds) closeQuietly(fd);
      if (got.bytes === 0 && got.fds.length === 0) {
        this.eof = true;
        return;
      }
      // Bounded, so that a flood of echoed data does not pile up here.
      if (this.received.length < this.keep) {
        this.received = Buffer.concat([this.received, this.buf.subarray(0, got.bytes)]);
      }
    }
  }

  /** Waits until `done()` holds after a read, the server closes, or `ms` pass. */
  async waitFor(done: () => boolean, ms: number): Promise<void> {
    this.drain();
    if (this.closed || this.eof || done()) return;
    await new Promise<void>((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        watcher.close();
        resolve();
      };
      const watcher = new FdWatcher(this.fd, () => {
        this.drain();
        if (this.eof || done()) finish();
      });
      const timer = setTimeout(finish, ms);
      watcher.want(true, false);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeQuietly(this.fd);
  }
}
