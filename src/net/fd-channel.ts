/**
 * FdChannel: a raw Unix stream socket that carries small messages and file
 * descriptors (SCM_RIGHTS) both ways, driven by readiness on Node's loop.
 *
 * Used for every control socket that may carry an fd: the hybrid-vsock
 * socket's command phase (passfd), the AF_VSOCK stand-in. It never lets
 * `net.Socket` near the fd, since Node's reader would swallow a message's fds.
 *
 * Receiving: every read is a `recvmsg` with room for fds; a message that
 * carried more fds than the channel accepts (`maxFds`) or lost fds to
 * truncation is reported as an error and its fds are closed, never leaked.
 * Sending: messages queue in order; an fd attached to a message is closed
 * here once the message is out (the receiver has its own copy), or when the
 * channel closes before it went out.
 * `release()` hands the bare socket to a new owner (the CONNECT stream)
 * without closing it.
 */
import {
  closeQuietly,
  FdWatcher,
  recvWithFds,
  sendWithFds,
  WOULD_BLOCK,
} from '../../native-bindings/index.js';

export interface FdChannelHandlers {
  /** Bytes (a view valid during the call) and the fds that came with them; the handler owns the fds. */
  onData(bytes: Buffer, fds: number[]): void;
  /** The peer closed its end (after all data was delivered). */
  onEnd(): void;
  /**
   * A socket error (the SysError as thrown, `code` = errno name) or a message
   * with too many or truncated fds. The channel is closed after this.
   */
  onError(err: Error): void;
}

interface Outgoing {
  payload: Buffer;
  fd: number;
}

export class FdChannel {
  private watcher: FdWatcher | null;
  private readonly out: Outgoing[] = [];
  private reading = true;
  private readonly buf: Buffer;
  private closeWhenFlushed = false;
  fd: number;

  constructor(
    fd: number,
    private readonly handlers: FdChannelHandlers,
    private readonly maxFds = 1,
    bufSize = 512,
  ) {
    this.fd = fd;
    this.buf = Buffer.allocUnsafe(bufSize);
    this.watcher = new FdWatcher(fd, (ev) => {
      if (ev.writable) this.flush();
      if ((ev.readable || ev.hangup) && this.reading) this.readAll();
    });
    this.update();
  }

  get closed(): boolean {
    return this.fd < 0;
  }

  pause(): void {
    this.reading = false;
    this.update();
  }

  resume(): void {
    this.reading = true;
    this.update();
  }

  /** Queues `payload` (with `fd`, whose ownership passes to the channel). */
  send(payload: Buffer, fd = -1): void {
    if (this.closed) {
      closeQuietly(fd);
      return;
    }
    this.out.push({ payload, fd });
    this.flush();
  }

  /** Closes once everything queued is sent. */
  end(): void {
    this.closeWhenFlushed = true;
    if (this.out.length === 0) this.close();
    else this.pause();
  }

  private flush(): void {
    while (this.out.length > 0 && !this.closed) {
      const msg = this.out[0]!;
      let n: number;
      try {
        n = sendWithFds(this.fd, msg.payload, msg.fd >= 0 ? [msg.fd] : []);
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      if (n === WOULD_BLOCK) break;
      // The fds went with the first byte; the rest of the payload continues without them.
      closeQuietly(msg.fd);
      msg.fd = -1;
      if (n < msg.payload.length) {
        msg.payload = msg.payload.subarray(n);
        continue;
      }
      this.out.shift();
    }
    if (this.closeWhenFlushed && this.out.length === 0) this.close();
    else this.update();
  }

  private readAll(): void {
    while (this.reading && !this.closed) {
      let got: ReturnType<typeof recvWithFds>;
      try {
        got = recvWithFds(this.fd, this.buf, this.maxFds);
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      if (got === null) return;
      if (got.truncated || got.surplus > 0) {
        for (const fd of got.fds) closeQuietly(fd);
        this.fail(
          new Error(
            got.truncated
              ? 'fds were truncated (MSG_CTRUNC)'
              : `more than ${this.maxFds} fd(s) in one message`,
          ),
        );
        return;
      }
      if (got.bytes === 0 && got.fds.length === 0) {
        this.reading = false;
        this.update();
        this.handlers.onEnd();
        return;
      }
      this.handlers.onData(this.buf.subarray(0, got.bytes), got.fds);
    }
  }

  private update(): void {
    this.watcher?.want(this.reading, this.out.length > 0);
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.close();
    this.handlers.onError(err);
  }

  /** Stops watching and returns the socket fd to the caller, who now owns it. */
  release(): number {
    const fd = this.fd;
    this.watcher?.close();
    this.watcher = null;
    for (const m of this.out.splice(0)) closeQuietly(m.fd);
    this.fd = -1;
    return fd;
  }

  close(): void {
    if (this.closed) return;
    closeQuietly(this.release());
  }
}
