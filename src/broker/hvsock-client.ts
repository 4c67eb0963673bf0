/**
 * Client side of the hybrid-vsock Unix socket, as a Kata runtime speaks it:
 *
 * - `passFd`: `passfd\n`, then one sendmsg of `<port>[ keep]` carrying exactly
 *   one fd (SCM_RIGHTS), then read `OK <hostport>\n`. The device closing the
 *   socket without OK means it refused (unknown port, table full, bad fd);
 *   this device says why first, in an `ERR <reason>\n` line.
 * - `hybridConnect`: `CONNECT <port>\n`, read `OK <hostport>\n`; the socket
 *   then carries the stream.
 *
 * `passFd` sends a duplicate of the caller's fd, so the caller keeps its own.
 */
import net from 'node:net';
import { closeQuietly, connectUnix, dupFd } from '../../native-bindings/index.js';
import { FdChannel } from '../net/fd-channel.js';
import {
  encodeConnect,
  encodePassfd,
  encodePassfdPayload,
  HybridProtocolError,
  OkReplyParser,
} from '../protocol/hybrid-vsock.js';
import { errnoText } from '../util/errno-text.js';

/**
 * The device could not be reached, refused, or broke the protocol. `cause`
 * is the error underneath; `code` is its errno name (`ENOENT`: no socket at
 * that path, `ECONNREFUSED`: nobody serving it, ...) when a system call
 * failed, undefined for a refusal or a protocol error.
 */
export class HvsockError extends Error {
  readonly code: string | undefined;

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'HvsockError';
    const code = (options?.cause as { code?: unknown } | undefined)?.code;
    this.code = typeof code === 'string' ? code : undefined;
  }
}

/** A socket error with the likely cause: "ENOENT (no such file or directory): is the vmm running?". */
function socketErrorText(err: unknown): string {
  const code = (err as { code?: string }).code;
  const hint = code === 'ENOENT' || code === 'ECONNREFUSED' ? ': is the vmm running?' : '';
  return `${errnoText(err)}${hint}`;
}

function unreachable(hvsockPath: string, err: unknown): HvsockError {
  return new HvsockError(`cannot reach the hybrid-vsock socket ${hvsockPath}: ${socketErrorText(err)}`, {
    cause: err,
  });
}

export interface PassFdOptions {
  keep?: boolean;
  timeoutMs?: number;
}

/** A passed fd whose connection is still being tracked. */
export interface PassedFd {
  hostPort: number;
  /**
   * Resolves when the device closes the control socket: the connection has
   * ended and the device has closed its copy of the fd, so every byte it
   * carried has been delivered (or the connection was reset).
   */
  closed: Promise<void>;
  /** Stops tracking (closes our end of the control socket). */
  release(): void;
}

/** Passes `fd` to the device as the host end of a connection to guest `port`; resolves the host port. */
export async function passFd(
  hvsockPath: string,
  fd: number,
  port: number,
  opts: PassFdOptions = {},
): Promise<number> {
  const passed = await passFdTracked(hvsockPath, fd, port, opts);
  passed.release();
  return passed.hostPort;
}

/**
 * Like `passFd`, but keeps the control socket open to learn when the device is
 * done with the fd (this device's extension; Dragonball just leaves it unused).
 */
export function passFdTracked(
  hvsockPath: string,
  fd: number,
  port: number,
  opts: PassFdOptions = {},
): Promise<PassedFd> {
  return new Promise((resolve, reject) => {
    let sock: number;
    try {
      sock = connectUnix(hvsockPath);
    } catch (err) {
      reject(unreachable(hvsockPath, err));
      return;
    }
    const parser = new OkReplyParser();
    let hostPort = -1;
    let markClosed: () => void = () => {};
    const closed = new Promise<void>((r) => {
      markClosed = r;
    });
    const fail = (err: Error) => {
      clearTimeout(timer);
      channel.close();
      markClosed();
      if (hostPort < 0) reject(err);
    };
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const timer = setTimeout(
      () => fail(new HvsockError(`passfd to guest port ${port}: no reply within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const channel = new FdChannel(sock, {
      onData: (bytes, fds) => {
        for (const f of fds) closeQuietly(f);
        if (hostPort >= 0) return;
        try {
          const ok = parser.push(Buffer.from(bytes));
          if (!ok) return;
          hostPort = ok.port;
          clearTimeout(timer);
          resolve({
            hostPort,
            closed,
            release: () => {
              channel.close();
              markClosed();
            },
          });
        } catch (err) {
          const refused = err instanceof HybridProtocolError && err.code === 'refused';
          fail(
            new HvsockError(
              `passfd to guest port ${port}${refused ? ' refused' : ''}: ${(err as Error).message}`,
              { cause: err },
            ),
          );
        }
      },
      onEnd: () =>
        fail(
          new HvsockError(`passfd to guest port ${port} refused: the device closed the socket without OK`),
        ),
      onError: (err) => fail(new HvsockError(`passfd to guest port ${port}: ${err.message}`, { cause: err })),
    });
    let copy: number;
    try {
      copy = dupFd(fd);
    } catch (err) {
      fail(err as Error);
      return;
    }
    channel.send(encodePassfd());
    channel.send(encodePassfdPayload(port, opts.keep ?? false), copy);
  });
}

export interface HybridStream {
  socket: net.Socket;
  hostPort: number;
}

/** `CONNECT <port>`: a stream to guest `port` through the device. */
export function hybridConnect(hvsockPath: string, port: number, timeoutMs = 10_000): Promise<HybridStream> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(hvsockPath);
    const parser = new OkReplyParser();
    const fail = (msg: string, cause?: unknown) => {
      cleanup();
      socket.destroy();
      reject(new HvsockError(`CONNECT ${port} via ${hvsockPath}: ${msg}`, cause ? { cause } : undefined));
    };
    const timer = setTimeout(() => fail(`no reply within ${timeoutMs} ms`), timeoutMs);
    const onData = (chunk: Buffer) => {
      let ok: ReturnType<OkReplyParser['push']>;
      try {
        ok = parser.push(chunk);
      } catch (err) {
        fail((err as Error).message, err);
        return;
      }
      if (!ok) return;
      cleanup();
      socket.pause();
      if (ok.rest.length > 0) socket.unshift(Buffer.from(ok.rest));
      resolve({ socket, hostPort: ok.port });
    };
    const onEnd = () =>
      fail('refused: the device closed the connection (nobody listening on that guest port?)');
    const onError = (err: Error) => fail(socketErrorText(err), err);
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
    socket.write(encodeConnect(port));
  });
}
