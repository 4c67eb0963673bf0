// containerd/ttrpc framing codec.
//
// What: ttrpc is gRPC without HTTP/2, used between container runtimes and the
// Kata agent (guest vsock port 1024). Every message is a frame:
//
//   0               4               8       9       10
//   | length u32 BE | stream_id u32 BE | type u8 | flags u8 | payload ...
//
// `length` counts the payload only. Frame types: 1 request (payload is a
// protobuf ttrpc.Request), 2 response (ttrpc.Response), 3 data (streaming
// RPCs, newer ttrpc). Client-initiated streams use odd stream ids. The
// envelope messages are generated from proto/ttrpc.proto and re-exported here.
//
// Why: the agent's ttrpc server and the broker's client both need framing over
// a byte stream that splits frames anywhere. This module is pure: a frame
// encoder and an incremental decoder, no sockets.
//
// Decisions:
// - Payloads above 4 MiB (ttrpc's messageLengthMax, 4 << 20) are refused in
//   both directions with TtrpcProtocolError 'frame-too-large'. The decoder is
//   then poisoned (every later push rethrows): the caller should close the
//   connection. (Go ttrpc instead discards the payload and answers
//   RESOURCE_EXHAUSTED; the error carries streamId and length so a server can
//   send that reply before closing.)
// - Unknown frame types are framed and passed up unchanged (the length still
//   keeps the stream in sync); the Go server ignores them, and dispatching is
//   the caller's business, not the codec's.
// - Decoded payloads are views into the pushed chunk when a frame arrives
//   whole, and a fresh buffer only when it spans chunks (no quadratic
//   re-concatenation for 4 MiB frames arriving in small reads).

export { type Status, StatusSchema } from './gen/google/rpc/status_pb.js';
export {
  type KeyValue,
  KeyValueSchema,
  type Request,
  RequestSchema,
  type Response,
  ResponseSchema,
  type StringList,
  StringListSchema,
} from './gen/ttrpc_pb.js';

export const TTRPC_HEADER_SIZE = 10;
/** Maximum payload length (ttrpc messageLengthMax = 4 << 20). */
export const TTRPC_MAX_PAYLOAD = 4 << 20;

export const TtrpcMessageType = {
  REQUEST: 1,
  RESPONSE: 2,
  DATA: 3,
} as const;
export type TtrpcMessageType = (typeof TtrpcMessageType)[keyof typeof TtrpcMessageType];

/** Frame flags (streaming RPCs; unary requests and responses use 0). */
export const TtrpcFlag = {
  /** No more data expected from the remote (request/data frames). */
  REMOTE_CLOSED: 0x1,
  /** Non-unary request, remote still sending (request frames). */
  REMOTE_OPEN: 0x2,
  /** The data frame carries no payload (data frames). */
  NO_DATA: 0x4,
} as const;

/** google.rpc.Code values used in Response.status.code. */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcCode = (typeof GrpcCode)[keyof typeof GrpcCode];

export interface TtrpcFrame {
  streamId: number;
  /** A TtrpcMessageType, or an unknown value passed through. */
  type: number;
  flags: number;
  payload: Buffer;
}

export type TtrpcProtocolErrorCode = 'frame-too-large' | 'truncated';

export class TtrpcProtocolError extends Error {
  override readonly name = 'TtrpcProtocolError';
  constructor(
    readonly code: TtrpcProtocolErrorCode,
    message: string,
    /** Stream id of the offending frame, when its header was read. */
    readonly streamId?: number,
    /** Declared payload length of the offending frame, when known. */
    readonly length?: number,
  ) {
    super(message);
  }
}

function checkU32(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) {
    throw new RangeError(`${what} must be a u32, got ${v}`);
  }
}

function checkU8(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`${what} must be a u8, got ${v}`);
}

/**
 * Write a 10-byte frame header at `target[offset]` (allocating when no target
 * is given). Returns the buffer written to.
 */
export function encodeFrameHeader(
  length: number,
  streamId: number,
  type: number,
  flags = 0,
  target?: Buffer,
  offset = 0,
): Buffer {
  checkU32(streamId, 'ttrpc stream id');
  checkU8(type, 'ttrpc frame type');
  checkU8(flags, 'ttrpc frame flags');
  if (!Number.isInteger(length) || length < 0 || length > TTRPC_MAX_PAYLOAD) {
    throw new TtrpcProtocolError(
      'frame-too-large',
      `ttrpc payload of ${length} bytes exceeds the ${TTRPC_MAX_PAYLOAD}-byte maximum`,
      streamId,
      length,
    );
  }
  const buf = target ?? Buffer.allocUnsafe(TTRPC_HEADER_SIZE + offset);
  if (!Number.isInteger(offset) || offset < 0 || buf.length - offset < TTRPC_HEADER_SIZE) {
    throw new RangeError(`encodeFrameHeader: need ${TTRPC_HEADER_SIZE} bytes at offset ${offset}`);
  }
  buf.writeUInt32BE(length, offset);
  buf.writeUInt32BE(streamId, offset + 4);
  buf[offset + 8] = type;
  buf[offset + 9] = flags;
  return buf;
}

/**
 * One frame: header followed by `payload`, in a single new buffer.
 * @throws TtrpcProtocolError 'frame-too-large' for payloads over 4 MiB;
 * RangeError for a stream id, type or flags out of range.
 */
export function encodeFrame(streamId: number, type: number, payload: Uint8Array, flags = 0): Buffer {
  const buf = Buffer.allocUnsafe(TTRPC_HEADER_SIZE + payload.length);
  encodeFrameHeader(payload.length, streamId, type, flags, buf, 0);
  buf.set(payload, TTRPC_HEADER_SIZE);
  return buf;
}

/**
 * Incremental frame decoder: push chunks as they are read, get back the
 * frames they complete (possibly none, possibly several).
 */
export class TtrpcFrameDecoder {
  private readonly header = Buffer.alloc(TTRPC_HEADER_SIZE);
  private headerFilled = 0;
  /** Payload of the frame being assembled across chunks, once its header is known. */
  private partial: { streamId: number; type: number; flags: number; payload: Buffer; filled: number } | null =
    null;
  private error: TtrpcProtocolError | undefined;

  /**
   * Feed the next chunk.
   * @throws TtrpcProtocolError 'frame-too-large' (and the same error on every
   * later call: the decoder is poisoned).
   */
  push(chunk: Buffer): TtrpcFrame[] {
    if (this.error) throw this.error;
    const frames: TtrpcFrame[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (this.partial !== null) {
        const p = this.partial;
        const n = Math.min(p.payload.length - p.filled, chunk.length - pos);
        chunk.copy(p.payload, p.filled, pos, pos + n);
        p.filled += n;
        pos += n;
        if (p.filled === p.payload.length) {
          frames.push({ streamId: p.streamId, type: p.type, flags: p.flags, payload: p.payload });
          this.partial = null;
        }
        continue;
      }
      let hdr: Buffer;
      let hdrAt: number;
      if (this.headerFilled === 0 && chunk.length - pos >= TTRPC_HEADER_SIZE) {
        hdr = chunk; // fast path: the whole header is in this chunk
        hdrAt = pos;
        pos += TTRPC_HEADER_SIZE;
      } else {
        const n = Math.min(TTRPC_HEADER_SIZE - this.headerFilled, chunk.length - pos);
        chunk.copy(this.header, this.headerFilled, pos, pos + n);
        this.headerFilled += n;
        pos += n;
        if (this.headerFilled < TTRPC_HEADER_SIZE) break;
        this.headerFilled = 0;
        hdr = this.header;
        hdrAt = 0;
      }
      const length = hdr.readUInt32BE(hdrAt);
      const streamId = hdr.readUInt32BE(hdrAt + 4);
      const type = hdr[hdrAt + 8]!;
      const flags = hdr[hdrAt + 9]!;
      if (length > TTRPC_MAX_PAYLOAD) {
        this.error = new TtrpcProtocolError(
          'frame-too-large',
          `ttrpc frame on stream ${streamId} declares ${length} payload bytes (max ${TTRPC_MAX_PAYLOAD})`,
          streamId,
          length,
        );
        throw this.error;
      }
      if (chunk.length - pos >= length) {
        frames.push({ streamId, type, flags, payload: chunk.subarray(pos, pos + length) });
        pos += length;
      } else {
        this.partial = { streamId, type, flags, payload: Buffer.allocUnsafe(length), filled: 0 };
      }
    }
    return frames;
  }

  /** Bytes of an incomplete frame currently held. */
  get buffered(): number {
    return this.headerFilled + (this.partial === null ? 0 : TTRPC_HEADER_SIZE + this.partial.filled);
  }

  /**
   * Call on EOF. Throws 'truncated' if the stream ended inside a frame.
   */
  end(): void {
    if (this.error) throw this.error;
    if (this.buffered === 0) return;
    this.error = new TtrpcProtocolError(
      'truncated',
      `ttrpc stream ended inside a frame (${this.buffered} bytes buffered)`,
      this.partial?.streamId,
      this.partial?.payload.length,
    );
    throw this.error;
  }
}
