/**
 * The vhost-user backend's Unix socket, generic over the device: listens
 * (mode 0600), serves one front-end at a time (the next QEMU waits in the
 * backlog: QEMU does not retry a refused connect), reads its messages and
 * hands each to the front-end's session (session.ts).
 *
 * Reading: file descriptors travel as SCM_RIGHTS with the message that needs
 * them, so one recvmsg must never span two messages; the reader takes
 * `bytesWanted()` bytes at a time from the decoder (messages.ts), the rest
 * of the header and then the rest of the payload, as libvhost-user does.
 * More fds than a message may carry, a broken stream, or a request the
 * session refuses ends the session (logged) and closes every fd it held;
 * EOF is the front-end going away. Either way the listener then accepts the
 * next front-end.
 */
import { closeQuietly, FdWatcher, recvWithFds } from '../../../../native-bindings/index.js';
import { UnixListener } from '../../../net/unix-listener.js';
import type { Logger } from '../../../util/log.js';
import type { VhostUserDevice } from './device.js';
import { MAX_FDS_PER_MESSAGE, MAX_PAYLOAD_SIZE, MessageDecoder, VhostUserProtocolError } from './messages.js';
import { VhostUserSession } from './session.js';
import { nativeSessionEnv } from './session-env.js';

/** One front-end connection: the socket reader in front of its session. */
class FrontEnd {
  readonly session: VhostUserSession;
  readonly #decoder = new MessageDecoder();
  readonly #readBuf = Buffer.allocUnsafe(MAX_PAYLOAD_SIZE + 12);
  readonly #watcher: FdWatcher;

  constructor(
    readonly fd: number,
    device: VhostUserDevice,
    log: Logger,
    onEnd: (f: FrontEnd) => void,
  ) {
    this.#watcher = new FdWatcher(fd, () => this.#onReadable());
    try {
      this.session = new VhostUserSession(device, nativeSessionEnv(fd), log, () => {
        this.#watcher.close();
        for (const f of this.#decoder.takeFds()) closeQuietly(f);
        closeQuietly(fd);
        onEnd(this);
      });
    } catch (err) {
      this.#watcher.close();
      throw err;
    }
    this.#watcher.want(true, false);
  }

  #onReadable(): void {
    if (this.session.closed) return;
    try {
      for (;;) {
        const want = this.#decoder.bytesWanted();
        const got = recvWithFds(this.fd, this.#readBuf, MAX_FDS_PER_MESSAGE, 0, want);
        if (got === null) return;
        if (got.truncated || got.surplus > 0) {
          for (const f of got.fds) closeQuietly(f);
          throw new VhostUserProtocolError('too many fds with one message');
        }
        if (got.bytes === 0 && got.fds.length === 0) {
          this.session.end('QEMU disconnected');
          return;
        }
        this.#decoder.push(Buffer.from(this.#readBuf.subarray(0, got.bytes)), got.fds);
        for (let msg = this.#decoder.next(); msg; msg = this.#decoder.next()) {
          this.session.handle(msg);
          if (this.session.closed) return;
        }
      }
    } catch (err) {
      this.session.end(`vhost-user error: ${(err as Error).message}`, true);
    }
  }
}

export class VhostUserServer {
  readonly #log: Logger;
  #listener: UnixListener | null = null;
  #current: FrontEnd | null = null;
  #closed = false;
  /** Front-end connections served so far. */
  sessions = 0;

  constructor(
    readonly socketPath: string,
    private readonly device: VhostUserDevice,
    log: Logger,
  ) {
    this.#log = log;
  }

  /** Whether a front-end is connected. */
  get connected(): boolean {
    return this.#current !== null;
  }

  /** Starts listening on the socket path (a stale socket file there is replaced). */
  listen(): void {
    // Backlog 8: one front-end is served at a time; the next waits here.
    this.#listener = new UnixListener(
      this.socketPath,
      (fd) => this.#accept(fd),
      (err) => this.#log.error(`accept: ${err.message}`),
      8,
    );
  }

  #accept(fd: number): void {
    if (this.#closed || this.#current) {
      closeQuietly(fd);
      return;
    }
    this.#listener?.pause(); // one front-end at a time: the next waits in the backlog
    this.sessions++;
    this.#log.info(`QEMU connected (session ${this.sessions})`);
    try {
      this.#current = new FrontEnd(fd, this.device, this.#log, (f) => this.#ended(f));
    } catch (err) {
      closeQuietly(fd);
      this.#log.error(`cannot serve QEMU: ${(err as Error).message}`);
      this.#listener?.resume();
    }
  }

  #ended(f: FrontEnd): void {
    if (this.#current !== f) return;
    this.#current = null;
    if (!this.#closed) {
      this.#listener?.resume();
      // A front-end may already be waiting in the backlog.
      setImmediate(() => this.#listener?.acceptAll());
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#current?.session.end('backend closing');
    this.#listener?.close();
    this.#listener = null;
  }
}
