/**
 * The AF_VSOCK stand-in server: serves `<guest-dir>/vsock.sock` for guest
 * processes of the loopback guest (protocol in protocol/vsock-standin.ts).
 *
 * Each client connection makes one request. LISTEN keeps the control socket
 * open as the listening socket: every accepted connection is sent down it as
 * `ACCEPT <peer port> <peer cid>\n` with the connection's fd; closing the
 * control socket stops listening. CONNECT answers once, with the fd or an
 * error, and closes. Control sockets are raw FdChannels so no passed fd is
 * ever dropped; a client that sends an fd, a bad line or nothing for 10 s is
 * disconnected and the server keeps serving everyone else.
 */
import path from 'node:path';
import { closeQuietly } from '../../../../native-bindings/index.js';
import { makeSocketDir } from '../../../net/bind-private.js';
import { FdChannel } from '../../../net/fd-channel.js';
import { UnixListener } from '../../../net/unix-listener.js';
import {
  encodeReply,
  LineSplitter,
  parseRequest,
  STANDIN_SOCKET_NAME,
  type StandinRequest,
} from '../../../protocol/vsock-standin.js';
import type { Logger } from '../../../util/log.js';
import { MAX_WAITING_CLIENTS } from '../../defaults.js';
import type { GuestListener, LoopbackGuestStack } from './guest-stack.js';

const REQUEST_TIMEOUT_MS = 10_000;

export class StandinServer {
  readonly socketPath: string;
  private listener: UnixListener | null = null;
  private readonly clients = new Set<FdChannel>();

  constructor(
    guestDir: string,
    private readonly stack: LoopbackGuestStack,
    private readonly log: Logger,
    private readonly maxWaitingClients = MAX_WAITING_CLIENTS,
  ) {
    this.socketPath = path.join(guestDir, STANDIN_SOCKET_NAME);
  }

  start(): void {
    makeSocketDir(path.dirname(this.socketPath));
    this.listener = new UnixListener(this.socketPath, {
      onAccept: (fd, requestRead) => this.serve(fd, requestRead),
      log: this.log,
      maxClients: this.maxWaitingClients,
      clientsAre: 'guest processes waiting to send a request',
    });
  }

  /** One guest process's control socket; `requestRead` once it no longer waits for its request line. */
  private serve(fd: number, requestRead: () => void): void {
    const lines = new LineSplitter();
    let request: StandinRequest | null = null;
    let listener: (GuestListener & { port: number }) | null = null;
    let timer: NodeJS.Timeout | undefined;
    const finish = () => {
      clearTimeout(timer);
      requestRead();
      this.clients.delete(channel);
      if (listener) this.stack.unlisten(listener.port, listener);
      listener = null;
    };
    const drop = (why: string) => {
      this.log.debug(`stand-in client dropped: ${why}`);
      channel.close();
      finish();
    };
    const channel: FdChannel = new FdChannel(fd, {
      onData: (bytes, fds) => {
        if (fds.length > 0) {
          for (const f of fds) closeQuietly(f);
          drop('a client may not send fds');
          return;
        }
        if (request) return; // after the request, only its end matters
        let got: string[];
        try {
          got = lines.push(bytes);
        } catch (err) {
          drop((err as Error).message);
          return;
        }
        const line = got[0];
        if (line === undefined) return;
        try {
          request = parseRequest(line);
        } catch (err) {
          channel.send(encodeReply({ kind: 'err', code: 'EINVAL', message: (err as Error).message }));
          channel.end();
          finish();
          return;
        }
        clearTimeout(timer);
        requestRead();
        if (request.kind === 'listen') listener = this.startListening(request.port, channel);
        else this.startConnect(request.port, channel, finish);
      },
      onEnd: () => {
        channel.close();
        finish();
      },
      onError: (err) => {
        this.log.debug(`stand-in client: ${err.message}`);
        finish();
      },
    });
    this.clients.add(channel);
    // Armed once the channel exists: if its constructor threw, nothing is left behind.
    timer = setTimeout(() => {
      if (!request) drop('no request within 10 s');
    }, REQUEST_TIMEOUT_MS);
    timer.unref();
  }

  private startListening(port: number, channel: FdChannel): (GuestListener & { port: number }) | null {
    const listener = {
      port,
      deliver: (connFd: number, peerPort: number, peerCid: number) => {
        channel.send(encodeReply({ kind: 'accept', peerPort, peerCid }), connFd);
      },
    };
    if (!this.stack.listen(port, listener)) {
      channel.send(encodeReply({ kind: 'err', code: 'EADDRINUSE', message: `guest port ${port} is in use` }));
      channel.end();
      return null;
    }
    channel.send(encodeReply({ kind: 'ok', port }));
    this.log.debug(`guest process listens on port ${port}`);
    return listener;
  }

  private startConnect(port: number, channel: FdChannel, finish: () => void): void {
    this.stack.connect(port, (err, result) => {
      if (err || !result) {
        const code = (err as { code?: string } | null)?.code ?? 'ECONNRESET';
        channel.send(encodeReply({ kind: 'err', code, message: err?.message ?? 'connect failed' }));
      } else {
        channel.send(encodeReply({ kind: 'ok', port: result.localPort }), result.fd);
      }
      channel.end();
      finish();
    });
  }

  close(): void {
    this.listener?.close();
    this.listener = null;
    for (const c of [...this.clients]) c.close();
    this.clients.clear();
  }
}
