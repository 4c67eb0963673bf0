/**
 * GuestVsock over real AF_VSOCK sockets (native-bindings/vsock.ts), for the
 * agent inside a QEMU guest with virtio-vsock. The listening socket is
 * non-blocking and its accept loop runs on an FdWatcher; accepted and
 * connected fds are handed out blocking, as the types promise (the launcher
 * gives them to processes as plain stream fds).
 *
 * Node's net.Socket cannot wrap an AF_VSOCK fd (libuv guesses its handle
 * type from the address family: only TCP and Unix sockets qualify), so
 * connections to the ports named in `unixBridgePorts` (the agent's ttrpc
 * port) are handed out as one end of an AF_UNIX socketpair instead, with a
 * small pump between it and the vsock socket. Passfd stream ports are never
 * bridged: those fds go to the process as they are.
 */
import {
  closeQuietly,
  FdWatcher,
  readFd,
  SHUT_WR,
  setNonBlocking,
  shutdownFd,
  socketPair,
  VMADDR_CID_HOST,
  vsockAccept,
  vsockConnect,
  vsockListen,
  vsockLocalAddr,
  WOULD_BLOCK,
  writeFd,
} from '../../native-bindings/index.js';
import type { AcceptedStream, ConnectedStream, GuestVsock, VsockListener } from './types.js';
import { VsockError } from './types.js';

function errCode(err: unknown): string {
  const e = err as { code?: string; errno?: number };
  return typeof e.code === 'string' ? e.code : 'EIO';
}

export interface AfVsockOptions {
  /** Ports whose accepted connections are handed out as a bridged AF_UNIX socket (for net.Socket). */
  unixBridgePorts?: number[];
  connectTimeoutMs?: number;
  onBridgeError?: (err: Error) => void;
}

export class AfVsock implements GuestVsock {
  readonly kind = 'af-vsock';

  constructor(private readonly opts: AfVsockOptions = {}) {}

  async listen(port: number, onAccept: (stream: AcceptedStream) => void): Promise<VsockListener> {
    let lfd: number;
    try {
      lfd = vsockListen(port);
    } catch (err) {
      const code = errCode(err);
      throw new VsockError(code, `listen on vsock port ${port}: ${(err as Error).message}`, { cause: err });
    }
    let closed = false;
    const watcher = new FdWatcher(lfd, () => {
      for (;;) {
        if (closed) return;
        let got: ReturnType<typeof vsockAccept>;
        try {
          got = vsockAccept(lfd);
        } catch {
          // EMFILE and friends: leave the connection pending, try again on the next wake-up.
          return;
        }
        if (!got) return;
        let fd: number;
        try {
          if (this.opts.unixBridgePorts?.includes(port)) fd = bridgeToUnix(got.fd, this.opts.onBridgeError);
          else {
            setNonBlocking(got.fd, false);
            fd = got.fd;
          }
        } catch {
          closeQuietly(got.fd);
          continue;
        }
        onAccept({ fd, peerPort: got.peerPort, peerCid: got.peerCid });
      }
    });
    watcher.want(true, false);
    return {
      port,
      close: () => {
        if (closed) return;
        closed = true;
        watcher.close();
        closeQuietly(lfd);
      },
    };
  }

  async connect(port: number): Promise<ConnectedStream> {
    let fd: number;
    try {
      fd = await vsockConnect(VMADDR_CID_HOST, port, this.opts.connectTimeoutMs ?? 10_000);
    } catch (err) {
      const code = errCode(err);
      throw new VsockError(code, `connect to vsock port ${port}: ${code}`, { cause: err });
    }
    try {
      setNonBlocking(fd, false);
      return { fd, localPort: vsockLocalAddr(fd).port };
    } catch (err) {
      closeQuietly(fd);
      throw new VsockError(errCode(err), `connect to vsock port ${port}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
}

/**
 * Pumps bytes both ways between the non-blocking vsock socket `vfd` and our
 * end of a new AF_UNIX socketpair; returns the other end (the caller owns
 * it). Half-closes are forwarded; both fds are closed once both directions
 * are done or either side fails.
 */
function bridgeToUnix(vfd: number, onError?: (err: Error) => void): number {
  const [ours, theirs] = socketPair(true);
  interface Dir {
    from: number;
    to: number;
    buf: Buffer;
    off: number;
    len: number;
    eof: boolean;
    done: boolean;
  }
  const mk = (from: number, to: number): Dir => ({
    from,
    to,
    buf: Buffer.allocUnsafe(256 * 1024),
    off: 0,
    len: 0,
    eof: false,
    done: false,
  });
  const dirs = [mk(vfd, ours), mk(ours, vfd)];
  let closed = false;
  const watchers = new Map<number, FdWatcher>();
  const finish = (err?: Error) => {
    if (closed) return;
    closed = true;
    for (const w of watchers.values()) w.close();
    closeQuietly(vfd);
    closeQuietly(ours);
    if (err && onError) onError(err);
  };
  const step = () => {
    if (closed) return;
    try {
      for (const d of dirs) {
        for (;;) {
          if (d.done) break;
          if (d.len > 0) {
            const n = writeFd(d.to, d.buf, d.off, d.len);
            if (n === WOULD_BLOCK) break;
            d.off += n;
            d.len -= n;
            continue;
          }
          if (d.eof) {
            shutdownFd(d.to, SHUT_WR);
            d.done = true;
            break;
          }
          const n = readFd(d.from, d.buf, 0, d.buf.length);
          if (n === WOULD_BLOCK) break;
          if (n === 0) d.eof = true;
          else {
            d.off = 0;
            d.len = n;
          }
        }
      }
    } catch (err) {
      const code = (err as { code?: string }).code;
      finish(code === 'ECONNRESET' || code === 'EPIPE' ? undefined : (err as Error));
      return;
    }
    if (dirs.every((d) => d.done)) {
      finish();
      return;
    }
    for (const fd of [vfd, ours]) {
      const rd = dirs.some((d) => d.from === fd && !d.done && !d.eof && d.len === 0);
      const wr = dirs.some((d) => d.to === fd && !d.done && d.len > 0);
      watchers.get(fd)!.want(rd, wr);
    }
  };
  try {
    watchers.set(vfd, new FdWatcher(vfd, step));
    watchers.set(ours, new FdWatcher(ours, step));
  } catch (err) {
    for (const w of watchers.values()) w.close();
    closeQuietly(ours);
    closeQuietly(theirs);
    throw err;
  }
  step();
  return theirs;
}
