/**
 * GuestVsock over the loopback guest's AF_VSOCK stand-in (`<guest-dir>/vsock.sock`,
 * protocol in protocol/vsock-standin.ts). Each listen or connect is one
 * control connection; accepted and connected sockets arrive as fds.
 */
import path from 'node:path';
import { closeQuietly, connectUnix } from '../../native-bindings/index.js';
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

/**
 * Waits (polling every 10 ms, at most `timeoutMs`) until the stand-in at
 * `<guestDir>/vsock.sock` accepts connections, as a guest's agent waits for
 * its vsock device: lets an agent start together with its vmm instead of
 * after it. Throws when the time is up.
 */
export async function waitForStandin(guestDir: string, timeoutMs: number): Promise<void> {
  const socketPath = path.join(guestDir, STANDIN_SOCKET_NAME);
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      closeQuietly(connectUnix(socketPath));
      return;
    } catch (err) {
      if (Date.now() >= until) {
        throw new VsockError(
          (err as { code?: string }).code ?? 'ETIMEDOUT',
          `vsock stand-in at ${socketPath} not up within ${timeoutMs} ms`,
        );
      }
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

export class StandinVsock implements GuestVsock {
  readonly kind = 'standin';
  readonly socketPath: string;

  constructor(guestDir: string) {
    this.socketPath = path.join(guestDir, STANDIN_SOCKET_NAME);
  }

  /** Opens a control connection and calls `onReply` for each reply line with its fd (or -1). */
  private open(
    request: Buffer,
    onReply: (reply: StandinReply, fd: number, channel: FdChannel) => void,
    onGone: (err: Error) => void,
  ): FdChannel {
    let sock: number;
    try {
      sock = connectUnix(this.socketPath);
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'EIO';
      throw new VsockError(code, `vsock stand-in at ${this.socketPath}: ${code} (is the vmm running?)`);
    }
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

  listen(port: number, onAccept: (stream: AcceptedStream) => void): Promise<VsockListener> {
    return new Promise((resolve, reject) => {
      let listening = false;
      const channel = this.open(
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

  connect(port: number): Promise<ConnectedStream> {
    return new Promise((resolve, reject) => {
      let settled = false;
      this.open(
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
