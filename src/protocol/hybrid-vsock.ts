// Hybrid-vsock Unix-socket command codec (Dragonball / Firecracker / Cloud
// Hypervisor "hybrid vsock").
//
// What: the text protocol a host process speaks on the VMM's hybrid-vsock Unix
// socket before the socket (or a passed fd) becomes one end of a vsock stream:
//
//   host -> device   "CONNECT <port>\n"   connect to guest port <port>; after
//                                         "OK <hostport>\n" the same socket
//                                         carries the stream.
//   host -> device   "passfd\n"           then ONE sendmsg whose data is
//                                         "<port>" or "<port> keep" and whose
//                                         SCM_RIGHTS carries exactly one fd.
//   device -> host   "OK <hostport>\n"    success; <hostport> is the host-side
//                                         vsock port the device allocated.
//
// Why: the device (VMM side) and the broker (runtime side) both need to parse
// and produce these lines, and stream sockets deliver bytes split anywhere, so
// the parsers here are incremental and never read past the newline: bytes
// after it are handed back untouched (`rest`), because after CONNECT they are
// already stream data. This module is pure: no sockets, no fds, no timers.
// Receiving the passfd payload together with its fd (recvmsg) is the
// caller's job; `parsePassfdPayload` only validates the text.
//
// Decisions (Dragonball's parser, dbs_virtio_devices vsock/muxer/muxer_impl.rs,
// is the reference; ours is stricter where Dragonball is sloppy):
// - A command line, newline included, must fit in 32 bytes, the size of
//   Dragonball's read buffer; otherwise 'line-too-long'. The limit is checked
//   on the byte stream, so the outcome does not depend on how it was split.
// - Keywords are ASCII case-insensitive ("CONNECT", "connect", "Passfd").
//   Exactly one space between keyword and port; no leading/trailing blanks.
// - One "\r" right before the "\n" is tolerated ("CONNECT 1024\r\n"), so
//   humans using socat/nc with CRLF line endings work; Dragonball tolerates it
//   too (it splits on whitespace). Any other whitespace is an error.
// - Ports are decimal u32 without sign, leading zeros or blanks ("0" itself
//   is accepted). Dragonball's `u32::parse` would also accept "+1" and "01";
//   we reject them as 'bad-port'.
// - The passfd payload is "<port>" or "<port> keep", optionally followed by a
//   single "\n", at most 32 bytes (Dragonball's recv buffer). Anything else
//   ("1027 kept", "1027 keep extra", "") is an error; Dragonball would
//   silently treat an unknown second word as "not keep".
// - The OK reply keyword is case-sensitive ("OK"), as Dragonball writes it and
//   Kata runtime-rs checks it.
// - Parsers throw HybridProtocolError for bad peer input. Encoders throw
//   RangeError for bad arguments (a caller bug, not a peer misbehaving).
// - A parser that has thrown is poisoned: every later push rethrows the same
//   error. A parser that has produced its result must not be pushed again.

import { LineReader } from './line-reader.js';

/** Maximum length of a command line or OK reply line, newline included. */
export const HYBRID_MAX_LINE = 32;
/**
 * Maximum length of an `ERR <reason>` reply line, newline included (this
 * device's extension: Kata clients read any line and treat all but OK as a
 * failure).
 */
export const HYBRID_MAX_ERR_LINE = 256;
/** Maximum length of the passfd payload (the text sent with the fd). */
export const HYBRID_MAX_PASSFD_PAYLOAD = 32;
/** Largest vsock port value (ports are u32). */
export const VSOCK_PORT_MAX = 0xffff_ffff;

export type HybridProtocolErrorCode =
  /** No newline within the first HYBRID_MAX_LINE bytes (or payload too long). */
  | 'line-too-long'
  /** First word is neither CONNECT nor passfd. */
  | 'unknown-command'
  /** Port is not a canonical decimal u32. */
  | 'bad-port'
  /** Right keyword, wrong shape (missing port, extra words, bad separators). */
  | 'malformed'
  /** Reply line is not "OK <port>". */
  | 'bad-reply'
  /** Reply line is "ERR <reason>": the device refused; the message is the reason. */
  | 'refused'
  /** The stream ended before a complete line arrived. */
  | 'unexpected-eof';

export class HybridProtocolError extends Error {
  override readonly name = 'HybridProtocolError';
  constructor(
    readonly code: HybridProtocolErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export type HybridCommand = { kind: 'connect'; port: number } | { kind: 'passfd' };

export interface HybridCommandResult {
  command: HybridCommand;
  /**
   * Bytes that followed the newline in the chunk that completed the line
   * (a view, possibly empty). After CONNECT they are the
   * first bytes of the stream, destined for the guest. After passfd they
   * would be the start of the payload; clients send the payload in its own
   * sendmsg together with the fd, so `rest` is normally empty there, and a
   * device may treat non-empty `rest` after passfd as an invalid request.
   */
  rest: Buffer;
}

export interface OkReply {
  /** Host-side vsock port the device allocated for the connection. */
  port: number;
  /** Bytes after the newline (a view, possibly empty). */
  rest: Buffer;
}

export interface PassfdPayload {
  port: number;
  keep: boolean;
}

const PORT_RE = /^(?:0|[1-9][0-9]{0,9})$/;
const CONNECT_RE = /^connect (.*)$/is;
const PASSFD_RE = /^passfd$/i;
const OK_RE = /^OK (.*)$/s;
const PASSFD_PAYLOAD_RE = /^([^ ]*)( keep)?$/s;

/** Parse a canonical decimal u32 ("0", "1024", "4294967295"); null if not one. */
function parsePort(text: string): number | null {
  if (!PORT_RE.test(text)) return null;
  const n = Number(text);
  return n <= VSOCK_PORT_MAX ? n : null;
}

function assertPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > VSOCK_PORT_MAX) {
    throw new RangeError(`${what}: port must be an integer in [0, ${VSOCK_PORT_MAX}], got ${port}`);
  }
}

/** Printable rendering of peer bytes for error messages. */
function show(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}...` : text);
}

/** Strip one trailing "\r" (the "\n" is already gone). */
function stripCr(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}

/**
 * One line within the first `max` bytes (newline included; default
 * HYBRID_MAX_LINE), over the shared LineReader; shared by the command and
 * reply parsers. A parser that has produced its result must not be pushed
 * again.
 */
class FirstLine {
  private readonly reader: LineReader;
  private done = false;

  constructor(
    private readonly what: string,
    max = HYBRID_MAX_LINE,
  ) {
    this.reader = new LineReader(
      max - 1,
      () => new HybridProtocolError('line-too-long', `${what}: no newline within the first ${max} bytes`),
    );
  }

  /** Returns [line without "\n", rest] or null when more bytes are needed. */
  push(chunk: Buffer): [string, Buffer] | null {
    if (this.done && !this.reader.error) throw new Error(`${this.what} parser already produced its result`);
    const { lines, rest } = this.reader.push(chunk, 1);
    if (lines.length === 0) return null;
    this.done = true;
    return [lines[0]!, rest];
  }

  fail(code: HybridProtocolErrorCode, message: string): never {
    return this.reader.fail(new HybridProtocolError(code, message));
  }

  end(): void {
    if (this.reader.error) throw this.reader.error;
    if (this.done) return;
    this.fail(
      'unexpected-eof',
      `${this.what}: stream ended after ${this.buffered} byte(s) without a complete line`,
    );
  }

  get buffered(): number {
    return this.reader.buffered;
  }
}

/**
 * Device side: parses the first line a host client sends on the hybrid-vsock
 * Unix socket. Feed chunks with `push` until it returns a result.
 */
export class HybridCommandParser {
  private readonly reader: FirstLine = new FirstLine('hybrid-vsock command');

  /**
   * Feed the next chunk. Returns null while the line is incomplete, the
   * command and the bytes after the newline once it is complete.
   * @throws HybridProtocolError on malformed input (and on every later push).
   */
  push(chunk: Buffer): HybridCommandResult | null {
    const got = this.reader.push(chunk);
    if (got === null) return null;
    const [raw, rest] = got;
    const line = stripCr(raw);
    if (PASSFD_RE.test(line)) return { command: { kind: 'passfd' }, rest };
    const connect = CONNECT_RE.exec(line);
    if (connect) {
      const port = parsePort(connect[1]!);
      if (port === null) this.reader.fail('bad-port', `CONNECT: invalid port ${show(connect[1]!)}`);
      return { command: { kind: 'connect', port }, rest };
    }
    const word = line.split(/[ \t\r]/, 1)[0]!.toLowerCase();
    if (word === 'connect' || word === 'passfd') {
      this.reader.fail('malformed', `malformed ${word} command ${show(line)}`);
    }
    this.reader.fail('unknown-command', `unknown hybrid-vsock command ${show(line)}`);
  }

  /**
   * Call when the peer closed the stream. Throws 'unexpected-eof' unless a
   * complete command was already returned.
   */
  end(): void {
    this.reader.end();
  }

  /** Bytes held while waiting for the newline (always < HYBRID_MAX_LINE). */
  get buffered(): number {
    return this.reader.buffered;
  }
}

/**
 * Client side: parses the device's "OK <hostport>\n" reply. A refused
 * connection shows up as the device closing the socket (call `end()` on EOF
 * to get an 'unexpected-eof' error), or, from this device, as an
 * "ERR <reason>\n" line first (a 'refused' error carrying the reason).
 */
export class OkReplyParser {
  private readonly reader: FirstLine = new FirstLine('hybrid-vsock reply', HYBRID_MAX_ERR_LINE);

  /**
   * Feed the next chunk. Returns null while the line is incomplete.
   * @throws HybridProtocolError on malformed input (and on every later push).
   */
  push(chunk: Buffer): OkReply | null {
    const got = this.reader.push(chunk);
    if (got === null) return null;
    const [raw, rest] = got;
    const line = stripCr(raw);
    if (line.startsWith('ERR ')) this.reader.fail('refused', line.slice(4));
    if (raw.length >= HYBRID_MAX_LINE)
      this.reader.fail(
        'line-too-long',
        `hybrid-vsock reply: no newline within the first ${HYBRID_MAX_LINE} bytes`,
      );
    const ok = OK_RE.exec(line);
    if (!ok) this.reader.fail('bad-reply', `expected "OK <port>", got ${show(line)}`);
    const port = parsePort(ok[1]!);
    if (port === null) this.reader.fail('bad-port', `OK reply: invalid port ${show(ok[1]!)}`);
    return { port, rest };
  }

  /** Call on EOF. Throws 'unexpected-eof' unless the reply was complete. */
  end(): void {
    this.reader.end();
  }

  get buffered(): number {
    return this.reader.buffered;
  }
}

/**
 * Parse the data part of the passfd sendmsg: "<port>" or "<port> keep",
 * optionally followed by one "\n".
 * @throws HybridProtocolError ('line-too-long' | 'bad-port' | 'malformed')
 */
export function parsePassfdPayload(buf: Buffer): PassfdPayload {
  if (buf.length > HYBRID_MAX_PASSFD_PAYLOAD) {
    throw new HybridProtocolError(
      'line-too-long',
      `passfd payload is ${buf.length} bytes (max ${HYBRID_MAX_PASSFD_PAYLOAD})`,
    );
  }
  let text = buf.toString('latin1');
  if (text.endsWith('\n')) text = text.slice(0, -1);
  if (text.length === 0) throw new HybridProtocolError('malformed', 'empty passfd payload');
  const m = PASSFD_PAYLOAD_RE.exec(text);
  if (!m) throw new HybridProtocolError('malformed', `malformed passfd payload ${show(text)}`);
  const port = parsePort(m[1]!);
  if (port === null) throw new HybridProtocolError('bad-port', `passfd payload: invalid port ${show(m[1]!)}`);
  return { port, keep: m[2] !== undefined };
}

/** "<port>" or "<port> keep" (no newline, as Kata runtime-rs sends it). */
export function encodePassfdPayload(port: number, keep = false): Buffer {
  assertPort(port, 'encodePassfdPayload');
  return Buffer.from(keep ? `${port} keep` : `${port}`, 'latin1');
}

/** "CONNECT <port>\n" (keyword upper-case, as in Firecracker's documentation). */
export function encodeConnect(port: number): Buffer {
  assertPort(port, 'encodeConnect');
  return Buffer.from(`CONNECT ${port}\n`, 'latin1');
}

/** "passfd\n" (lower-case, as Kata runtime-rs sends it). */
export function encodePassfd(): Buffer {
  return Buffer.from('passfd\n', 'latin1');
}

/** "OK <hostPort>\n" */
export function encodeOk(hostPort: number): Buffer {
  assertPort(hostPort, 'encodeOk');
  return Buffer.from(`OK ${hostPort}\n`, 'latin1');
}

/** "ERR <reason>\n": printable ASCII only, cut to fit HYBRID_MAX_ERR_LINE. */
export function encodeErr(reason: string): Buffer {
  const text = reason.replace(/[^\x20-\x7e]/g, '?').slice(0, HYBRID_MAX_ERR_LINE - 5);
  return Buffer.from(`ERR ${text}\n`, 'latin1');
}
