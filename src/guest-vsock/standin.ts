/**
 * GuestVsock over the loopback guest's AF_VSOCK stand-in (`<guest-dir>/vsock.sock`,
 * protocol in protocol/vsock-standin.ts). Each listen or connect is one
 * control connection; accepted and connected sockets arrive as fds.
 *
 * With `waitMs`, the first control connection waits (event-driven, see
 * net/connect-when-listening.ts) for a vmm that has not started listening
 * yet, as a guest process would wait for its kernel: `run` starts the vmm
 * and the agent at the same time. Once one connection succeeded, later ones
 * fail at once when the stand-in is gone.
 */
import path from 'node:path';
import { closeQuietly, connectUnix } from '../../native-bindings/index.js';
import { connectWhenListening } from '../net/connect-when-listening.js';
import { FdChannel } from '../net/fd-channel.js';
import {
  encodeRequest,
  LineSplitter,
  parseReply,
  STANDIN_SOCKET_NAME,
  type StandinReply,
} from '../protocol/vsock-standin.js';
import type { AcceptedStream, ConnectedStream, GuestVsock, VsockListener } from './types.js';
import { VsockError } from './types.js';

export class StandinVsock implements GuestVsock {
  readonly kind = 'standin';
  readonly socketPath: string;
  private waitMs: number;

  constructor(guestDir: string, opts: { waitMs?: number } = {}) {
    this.socketPath = path.join(guestDir, STANDIN_SOCKET_NAME);
    this.waitMs = opts.waitMs ?? 0;
  }

  /** A control connection to the stand-in (waiting for it the first time, with `waitMs`). */
  private async connectControl(): Promise<number> {
    try {
      if (this.waitMs <= 0) return connectUnix(this.socketPath);
      const fd = await connectWhenListening(this.socketPath, this.waitMs);
      this.waitMs = 0;
      return fd;
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'EIO';
      throw new VsockError(code, `vsock stand-in at ${this.socketPath}: ${code} (is the vmm running?)`, {
        cause: err,
      });
    }
  }

  /** Opens a control connection and calls `onReply` for each reply line with its fd (or -1). */
  private open(
    sock: number,
    request: Buffer,
    onReply: (reply: StandinReply, fd: number, channel: FdChannel) => void,
    onGone: (err: Error) => void,
  ): FdChannel {
    const lines = new LineSplitter();
    const channel = new FdChannel(sock, {
      onData: (bytes, fds) => {
        let got: string[];
        try {
          got = lines.push(bytes);
        } catch (err) {
          for (const fd of fds) closeQuietly(fd);
          channel.close();
          onGone(err as Error);
          return;
        }
        // An fd always travels with its own line, the last one of the read.
        got.forEach((line, i) => {
          const fd = i === got.length - 1 && fds.length > 0 ? fds[0]! : -1;
          try {
            onReply(parseReply(line), fd, channel);
          } catch (err) {
            closeQuietly(fd);
            channel.close();
            onGone(err as Error);
          }
        });
      },
      onEnd: () => {
        channel.close();
        onGone(new VsockError('ECONNRESET', 'vsock stand-in closed the connection'));
      },
      onError: (err) => onGone(err),
    });
    channel.send(request);
    return channel;
  }

  async listen(port: number, onAccept: (stream: AcceptedStream) => void): Promise<VsockListener> {
    const sock = await this.connectControl();
    return new Promise((resolve, reject) => {
      let listening = false;
      const channel = this.open(
        sock,
        encodeRequest({ kind: 'listen', port }),
        (reply, fd) => {
          if (reply.kind === 'ok' && !listening) {
            listening = true;
            resolve({ port, close: () => channel.close() });
          } else if (reply.kind === 'accept' && fd >= 0) {
            onAccept({ fd, peerPort: reply.peerPort, peerCid: reply.peerCid });
          } else if (reply.kind === 'err') {
            channel.close();
            reject(
              new VsockError(reply.code, `listen on vsock port ${port}: ${reply.code} ${reply.message}`),
            );
          } else {
            closeQuietly(fd);
          }
        },
        (err) => {
          if (!listening) reject(err);
        },
      );
    });
  }

  async connect(port: number): Promise<ConnectedStream> {
    const sock = await this.connectControl();
    return new Promise((resolve, reject) => {
      let settled = false;
      this.open(
        sock,
        encodeRequest({ kind: 'connect', port }),
        (reply, fd, channel) => {
          settled = true;
          channel.close();
          if (reply.kind === 'ok' && fd >= 0) resolve({ fd, localPort: reply.port });
          else {
            closeQuietly(fd);
            const code = reply.kind === 'err' ? reply.code : 'EPROTO';
            reject(new VsockError(code, `connect to vsock port ${port}: ${code}`));
          }
        },
        (err) => {
          if (!settled) reject(err);
        },
      );
    });
  }
}
