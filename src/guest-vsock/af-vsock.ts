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
 * port) are handed out as one end of an AF_UNIX socketpair instead, with the
 * project's splice pumps between it and the vsock socket. Passfd stream
 * ports are never bridged: those fds go to the process as they are.
 */
import {
  closeQuietly,
  dupFd,
  FdWatcher,
  SHUT_WR,
  setNonBlocking,
  shutdownFd,
  socketPair,
  VMADDR_CID_HOST,
  vsockAccept,
  vsockConnect,
  vsockListen,
  vsockLocalAddr,
} from '../../native-bindings/index.js';
import { SplicePump } from '../agent/process/splice-pump.js';
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
 * Bridges the non-blocking vsock socket `vfd` to one end of a new AF_UNIX
 * socketpair and returns the other end (the caller owns it): a SplicePump
 * each way (the project's pump: splice(2) through a private kernel pipe, no
 * byte in JavaScript), each on its own duplicates of the two fds, since one
 * fd takes one readiness watcher. A direction that reaches EOF passes it on
 * as SHUT_WR; when one direction fails the other is stopped; once both are
 * done every fd of the bridge is closed. A peer that resets (ECONNRESET,
 * EPIPE) is an ordinary end; other errors go to `onError`.
 */
export function bridgeToUnix(vfd: number, onError?: (err: Error) => void): number {
  const [ours, theirs] = socketPair(true);
  const fds = [vfd, ours];
  const pumps: SplicePump[] = [];
  try {
    pumps.push(new SplicePump(vfd, ours));
    fds.push(dupFd(ours), dupFd(vfd));
    pumps.push(new SplicePump(fds[2]!, fds[3]!));
  } catch (err) {
    for (const pump of pumps) pump.stop(); // releases its kernel pipe
    for (const fd of fds.slice(1)) closeQuietly(fd); // vfd stays the caller's
    closeQuietly(theirs);
    throw err;
  }
  let finished = 0;
  for (const pump of pumps) {
    void pump.done.then((end) => {
      if (end.reason === 'eof') {
        try {
          shutdownFd(pump.output, SHUT_WR);
        } catch {
          // the reader is gone already
        }
      } else if (end.reason === 'error') {
        for (const other of pumps) other.stop();
        const code = (end.error as { code?: string }).code;
        if (code !== 'ECONNRESET' && code !== 'EPIPE') onError?.(end.error);
      }
      if (++finished === pumps.length) for (const fd of fds) closeQuietly(fd);
    });
  }
  for (const pump of pumps) pump.start();
  return theirs;
}
