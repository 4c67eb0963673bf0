/**
 * A listening Unix stream socket served from Node's event loop: replaces a
 * stale socket file left by a dead process (never anything that is not a
 * socket), binds with mode 0600, accepts every pending connection on each
 * readiness event and hands the raw fds over, and removes the file on close.
 * Used by the hybrid-vsock socket, the AF_VSOCK stand-in and the vhost-user
 * backend socket. `pause()` leaves new connections waiting in the backlog
 * (vhost-user serves one QEMU at a time).
 */
import fs from 'node:fs';
import path from 'node:path';
import { acceptUnix, closeQuietly, FdWatcher, listenUnix } from '../../native-bindings/index.js';

export class UnixListener {
  private fd: number;
  private watcher: FdWatcher | null;

  constructor(
    readonly socketPath: string,
    /** Owns `fd` from the call on. */
    private readonly onAccept: (fd: number) => void,
    /** accept(2) failed (EMFILE, ...): the next readiness event retries. */
    private readonly onError: (err: Error) => void,
    backlog = 1024,
  ) {
    fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o700 });
    removeStaleSocket(socketPath);
    this.fd = listenUnix(socketPath, backlog);
    // After listen(2), on purpose: this chmod's inotify event tells a client waiting
    // for the socket (connect-when-listening.ts) that a connect can now succeed.
    fs.chmodSync(socketPath, 0o600);
    this.watcher = new FdWatcher(this.fd, () => this.acceptAll());
    this.watcher.want(true, false);
  }

  /** Accepts what is pending now (also useful right after `resume`). */
  acceptAll(): void {
    while (this.watcher?.wantsRead) {
      let fd: number | null;
      try {
        fd = acceptUnix(this.fd);
      } catch (err) {
        this.onError(err as Error);
        return;
      }
      if (fd === null) return;
      this.onAccept(fd);
    }
  }

  pause(): void {
    this.watcher?.want(false, false);
  }

  resume(): void {
    this.watcher?.want(true, false);
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
    closeQuietly(this.fd);
    this.fd = -1;
    fs.rmSync(this.socketPath, { force: true });
  }
}

/**
 * Removes a socket file left by a process that died, refusing to touch
 * anything that is not a socket.
 */
function removeStaleSocket(socketPath: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
  fs.rmSync(socketPath);
}
