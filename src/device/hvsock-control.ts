/**
 * One client of the hybrid-vsock Unix socket, from accept to hand-off: reads
 * the command (`CONNECT <port>\n` or `passfd\n` + one sendmsg of
 * `<port>[ keep]` with exactly one fd) and hands the request to the device.
 *
 *   reading-command ──CONNECT──▶ the socket itself becomes the connection's host end
 *         │                      (`OK <hostport>\n` once the guest accepts; closed if it refuses)
 *         └──passfd──▶ reading-payload ──payload+fd──▶ waiting ──▶ `OK <hostport>\n` ──▶ linger ──▶ close
 *                                                              └─▶ refused: `ERR <reason>\n`, close   (linger: until the connection ends)
 *
 * Any malformed input (bad word or port, line over 32 bytes, no fd, more
 * than one fd, an fd with CONNECT, EOF or 5 s of silence mid-command) closes
 * this client, logs one line, closes every fd it received and leaves the
 * device serving everyone else.
 *
 * After `OK`, Dragonball leaves the socket unused. This device keeps it open
 * until the connection ends and then closes it, so the passer can learn,
 * event-driven, that every byte it handed over has been delivered (or the
 * connection was reset): the broker reports a process's exit only after its
 * stdout/stderr connections have closed. A client that ignores the socket
 * (Kata's runtime) or closes it loses nothing.
 *
 * Where the payload ends: the kernel returns a message's fds with the first
 * read that touches its bytes and never glues bytes after an fd-carrying
 * message into the same read, so the payload is exactly the bytes that came
 * with the fd. Payload bytes arriving without an fd mean the client sent no fd.
 */
import { closeQuietly } from '../../native-bindings/index.js';
import { FdChannel } from '../net/fd-channel.js';
import {
  encodeErr,
  HYBRID_MAX_PASSFD_PAYLOAD,
  HybridCommandParser,
  HybridProtocolError,
  parsePassfdPayload,
} from '../protocol/hybrid-vsock.js';

/** What the device does with a parsed request. */
export interface HvsockRequestHandler {
  /** CONNECT: `socketFd` becomes the host end; `preRead` are stream bytes that followed the line. */
  connect(guestPort: number, socketFd: number, preRead: Buffer): void;
  /** passfd: `fd` is the passed fd (now owned by the handler); `reply` writes OK or closes. */
  passfd(guestPort: number, fd: number, keep: boolean, reply: PassfdReply): void;
  invalid(reason: string): void;
}

export interface PassfdReply {
  /** The guest accepted: write `OK <hostport>\n`; the socket lingers until `connectionClosed`. */
  ok(okLine: Buffer): void;
  /** Refused before it was established: write `ERR <reason>`, close the socket. */
  fail(reason: string): void;
  /** The connection ended (drained, reset or shut down): close the socket. */
  connectionClosed(): void;
}

export const COMMAND_TIMEOUT_MS = 5000;

export class HvsockControl {
  private readonly channel: FdChannel;
  private readonly parser = new HybridCommandParser();
  private phase: 'command' | 'payload' | 'waiting' | 'linger' | 'done' = 'command';
  private payload: Buffer = Buffer.alloc(0);
  private readonly timer: NodeJS.Timeout;

  constructor(
    fd: number,
    private readonly handler: HvsockRequestHandler,
    private readonly onDone: (ctl: HvsockControl) => void,
  ) {
    this.channel = new FdChannel(fd, {
      onData: (bytes, fds) => this.onData(bytes, fds),
      onEnd: () =>
        this.reject(
          this.phase === 'payload' ? 'no fd: client closed before sending one' : 'client closed mid-command',
        ),
      onError: (err) => this.reject(err.message),
    });
    this.timer = setTimeout(
      () => this.reject(`no complete request within ${COMMAND_TIMEOUT_MS} ms`),
      COMMAND_TIMEOUT_MS,
    );
    this.timer.unref();
  }

  private onData(bytes: Buffer, fds: number[]): void {
    if (this.phase === 'command') {
      let result: ReturnType<HybridCommandParser['push']>;
      try {
        result = this.parser.push(bytes);
      } catch (err) {
        for (const fd of fds) closeQuietly(fd);
        this.reject(err instanceof HybridProtocolError ? err.message : String(err));
        return;
      }
      if (!result) {
        if (fds.length > 0) {
          for (const fd of fds) closeQuietly(fd);
          this.reject('fd sent before a complete command line');
        }
        return;
      }
      if (result.command.kind === 'connect') {
        if (fds.length > 0) {
          for (const fd of fds) closeQuietly(fd);
          this.reject('fd sent with CONNECT');
          return;
        }
        this.phase = 'done';
        this.finish();
        const socketFd = this.channel.release();
        this.handler.connect(result.command.port, socketFd, Buffer.from(result.rest));
        return;
      }
      this.phase = 'payload';
      bytes = result.rest;
      if (bytes.length === 0 && fds.length === 0) return;
    }
    if (this.phase === 'payload') {
      if (fds.length === 0) {
        this.reject(
          `no fd: passfd payload ${JSON.stringify(bytes.toString('latin1').slice(0, 40))} came without one`,
        );
        return;
      }
      this.payload = Buffer.concat([this.payload, bytes]);
      const fd = fds[0]!;
      let parsed: { port: number; keep: boolean };
      try {
        if (this.payload.length > HYBRID_MAX_PASSFD_PAYLOAD) throw new Error('passfd payload over 32 bytes');
        parsed = parsePassfdPayload(this.payload);
      } catch (err) {
        closeQuietly(fd);
        this.reject((err as Error).message);
        return;
      }
      this.phase = 'waiting';
      clearTimeout(this.timer);
      this.channel.pause();
      this.handler.passfd(parsed.port, fd, parsed.keep, {
        ok: (okLine) => {
          // The socket stays open while the connection lives; its EOF tells the
          // passer the device is done with the fd (see module comment).
          this.channel.send(okLine);
          this.phase = 'linger';
          this.channel.resume();
        },
        // "ERR <reason>" first (extension): Kata clients treat any line but OK as a failure.
        // The line is small and the socket otherwise unused: one write goes through.
        fail: (reason) => {
          this.channel.send(encodeErr(reason));
          this.close();
        },
        connectionClosed: () => this.close(),
      });
      return;
    }
    // Bytes after the request: the socket is otherwise unused; ignore them.
    for (const fd of fds) closeQuietly(fd);
  }

  private reject(reason: string): void {
    if (this.phase === 'done') return;
    const waiting = this.phase === 'waiting' || this.phase === 'linger';
    this.phase = 'done';
    this.channel.close();
    this.finish();
    // A client that hangs up while its passfd is in flight is not invalid: the pass goes on.
    if (!waiting) this.handler.invalid(reason);
  }

  private finish(): void {
    clearTimeout(this.timer);
    this.onDone(this);
  }

  close(): void {
    if (this.phase !== 'done') {
      this.phase = 'done';
      this.channel.close();
      this.finish();
    }
  }
}
