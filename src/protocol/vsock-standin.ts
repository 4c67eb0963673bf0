/**
 * The AF_VSOCK stand-in's control protocol, spoken on `<guest-dir>/vsock.sock`
 * between a guest process and the loopback guest stack. It gives a process
 * what `listen()`/`accept()`/`connect()` on AF_VSOCK would: a connected
 * stream socket (one end of a socketpair, passed with SCM_RIGHTS) and the
 * peer's or its own port.
 *
 *   client → stack:  LISTEN <port>\n      stack → client: OK <port>\n, then per accepted
 *                                                         connection ACCEPT <peer port> <peer cid>\n + fd
 *                    CONNECT <port>\n     stack → client: OK <local port>\n + fd, or
 *                                         ERR <ERRNO> <text>\n (ECONNREFUSED, ETIMEDOUT, ...)
 *
 * A LISTEN lasts as long as its control socket. Lines are at most 128 bytes
 * (newline not counted); an ERR reason is printable ASCII, shortened so its
 * line fits. Pure codec: no I/O.
 */

import { LineReader } from './line-reader.js';

export const STANDIN_SOCKET_NAME = 'vsock.sock';
export const STANDIN_MAX_LINE = 128;

export type StandinRequest = { kind: 'listen'; port: number } | { kind: 'connect'; port: number };
export type StandinReply =
  | { kind: 'ok'; port: number }
  | { kind: 'accept'; peerPort: number; peerCid: number }
  | { kind: 'err'; code: string; message: string };

export class StandinProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StandinProtocolError';
  }
}

const U32 = /^(?:0|[1-9][0-9]{0,9})$/;

function port(text: string | undefined, what: string): number {
  if (text === undefined || !U32.test(text) || Number(text) > 0xffff_ffff) {
    throw new StandinProtocolError(`${what}: invalid port ${JSON.stringify(text)}`);
  }
  return Number(text);
}

export function encodeRequest(req: StandinRequest): Buffer {
  return Buffer.from(`${req.kind === 'listen' ? 'LISTEN' : 'CONNECT'} ${req.port}\n`);
}

export function parseRequest(line: string): StandinRequest {
  const [word, arg, extra] = line.split(' ');
  if (extra !== undefined) throw new StandinProtocolError(`malformed request ${JSON.stringify(line)}`);
  if (word === 'LISTEN') return { kind: 'listen', port: port(arg, 'LISTEN') };
  if (word === 'CONNECT') return { kind: 'connect', port: port(arg, 'CONNECT') };
  throw new StandinProtocolError(`unknown request ${JSON.stringify(line)}`);
}

export function encodeReply(reply: StandinReply): Buffer {
  switch (reply.kind) {
    case 'ok':
      return Buffer.from(`OK ${reply.port}\n`);
    case 'accept':
      return Buffer.from(`ACCEPT ${reply.peerPort} ${reply.peerCid}\n`);
    case 'err': {
      // Printable ASCII only, so that characters are bytes and the cut keeps the newline.
      const line = `ERR ${reply.code} ${reply.message}`.replace(/\s/g, ' ').replace(/[^\x20-\x7e]/g, '?');
      return Buffer.from(`${line.slice(0, STANDIN_MAX_LINE)}\n`, 'latin1');
    }
  }
}

export function parseReply(line: string): StandinReply {
  const parts = line.split(' ');
  if (parts[0] === 'OK' && parts.length === 2) return { kind: 'ok', port: port(parts[1], 'OK') };
  if (parts[0] === 'ACCEPT' && parts.length === 3) {
    return { kind: 'accept', peerPort: port(parts[1], 'ACCEPT'), peerCid: port(parts[2], 'ACCEPT cid') };
  }
  if (parts[0] === 'ERR' && parts.length >= 2) {
    return { kind: 'err', code: parts[1]!, message: parts.slice(2).join(' ') };
  }
  throw new StandinProtocolError(`unknown reply ${JSON.stringify(line)}`);
}

/** Splits the control stream into lines (without the newline) of at most STANDIN_MAX_LINE bytes (line-reader.ts). */
export class LineSplitter {
  readonly #reader = new LineReader(
    STANDIN_MAX_LINE,
    () => new StandinProtocolError(`line longer than ${STANDIN_MAX_LINE} bytes`),
  );

  push(chunk: Buffer): string[] {
    return this.#reader.push(chunk).lines;
  }

  get buffered(): number {
    return this.#reader.buffered;
  }
}
