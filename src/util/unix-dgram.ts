/**
 * Unix datagram sockets on file-system paths, the kind systemd's
 * `NOTIFY_SOCKET` names: the one place that loads the `unix-dgram` package
 * (Node has no Unix datagram sockets). Both ends of sd_notify use it:
 * sending a state (sd-notify.ts) and receiving a child's READY=1
 * (ready-child.ts). Linux abstract names (`@name`) cannot be reached with
 * it (it pads `sun_path`); native-bindings/sd-notify-abstract.ts sends to
 * those.
 *
 * What this adds to the package: types (it ships none), a refusal of paths
 * longer than `sun_path` (the package would silently truncate them and
 * address another socket), and errors shaped like Node's own: `code` is
 * the errno name (`ENOENT`), `errno` the negative number, `syscall` the
 * call, where the package reports a bare negative number (or "congestion"
 * for a full receive queue, here EAGAIN).
 *
 * The native module is loaded on first use, so importing this file costs
 * nothing for a process that never sends or receives a datagram.
 */
import type { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { errnoName } from '../../native-bindings/errno-name.js';

/** `sockaddr_un.sun_path` holds 108 bytes including the terminating NUL. */
export const MAX_PATH_BYTES = 107;

/** The part of the package's socket this file uses. */
interface PackageSocket extends EventEmitter {
  bind(path: string): void;
  send(buf: Buffer, offset: number, length: number, path: string, callback: (err?: Error) => void): void;
  close(): void;
}

let unixDgram: { createSocket(type: 'unix_dgram'): PackageSocket } | undefined;

function createSocket(): PackageSocket {
  unixDgram ??= createRequire(import.meta.url)('unix-dgram') as typeof unixDgram;
  try {
    return unixDgram!.createSocket('unix_dgram');
  } catch (err) {
    throw normalise(err, 'socket');
  }
}

/** A datagram socket error: `code` is the errno name, as on Node's errors. */
export class DatagramError extends Error {
  constructor(
    readonly code: string,
    readonly syscall: string,
    readonly errno: number | undefined,
    detail?: string,
  ) {
    super(detail ? `${code}: ${detail}` : code);
    this.name = 'DatagramError';
  }
}

function normalise(err: unknown, syscall: string): Error {
  if (!(err instanceof Error)) return new Error(String(err));
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'number' && code < 0) return new DatagramError(errnoName(-code), syscall, code);
  if (code === 1 && err.message === 'congestion')
    return new DatagramError('EAGAIN', syscall, -11, 'the socket queue is full');
  return err;
}

function checkPath(path: string, syscall: string): void {
  const bytes = Buffer.byteLength(path, 'utf8');
  if (bytes > MAX_PATH_BYTES)
    throw new DatagramError(
      'ENAMETOOLONG',
      syscall,
      undefined,
      `path is ${bytes} bytes, sun_path holds ${MAX_PATH_BYTES}`,
    );
}

/** Sends `payload` as one datagram to the socket bound at `path`, from a fresh socket. */
export async function sendDatagram(path: string, payload: Buffer): Promise<void> {
  checkPath(path, 'sendto');
  const socket = createSocket();
  try {
    await new Promise<void>((resolve, reject) => {
      socket.send(payload, 0, payload.length, path, (err) =>
        err ? reject(normalise(err, 'sendto')) : resolve(),
      );
    });
  } finally {
    socket.close();
  }
}

export interface DatagramReceiver {
  /** Closes the socket (the file at its path stays: remove it yourself). */
  close(): void;
}

/**
 * Binds a datagram socket at `path` and calls `onMessage` with each datagram.
 * Throws (a DatagramError) if it cannot bind; later socket errors go to `onError`.
 */
export function receiveDatagrams(
  path: string,
  onMessage: (msg: Buffer) => void,
  onError: (err: Error) => void,
): DatagramReceiver {
  checkPath(path, 'bind');
  const socket = createSocket();
  let bindError: Error | undefined;
  const failBind = (err: Error) => {
    bindError = normalise(err, 'bind');
  };
  socket.on('error', failBind);
  socket.bind(path); // the package reports a failed bind as a synchronous 'error' event
  socket.off('error', failBind);
  if (bindError) {
    socket.close();
    throw bindError;
  }
  socket.on('message', (msg: Buffer) => onMessage(msg));
  socket.on('error', (err: Error) => onError(normalise(err, 'recv')));
  let closed = false;
  return {
    close: () => {
      if (closed) return;
      closed = true;
      socket.close();
    },
  };
}
