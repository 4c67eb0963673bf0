/**
 * A listening Unix stream socket served from Node's event loop: binds a
 * socket file only its owner can connect to, admits each accepted
 * connection against the process's access policy (SO_PEERCRED), hands the
 * admitted raw fds over, and removes the file on close. Used by the
 * hybrid-vsock socket, the AF_VSOCK stand-in and the vhost-user backend
 * socket. `pause()` leaves new connections waiting in the backlog
 * (vhost-user serves one QEMU at a time).
 *
 * Binding (bind-private.ts): the file is created 0600 by bind(2) itself,
 * so no other user can connect between bind and a chmod; a path where
 * another process still answers is refused; a stale file (ECONNREFUSED) is
 * replaced, and that is logged. No directory is created: the caller names
 * one that exists.
 */
import fs from 'node:fs';
import { acceptUnix, closeQuietly, FdWatcher } from '../../native-bindings/index.js';
import { admitPeer } from '../access/admit-peer.js';
import { listenPrivately } from './bind-private.js';

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
    this.fd = listenPrivately(socketPath, backlog);
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
      // A peer the policy does not allow is closed here, with one log line.
      if (admitPeer(fd, this.socketPath)) this.onAccept(fd);
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
