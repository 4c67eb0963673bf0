// virtio-vsock packet header codec (virtio spec 1.2, section 5.10 "Socket
// Device", struct virtio_vsock_hdr).
//
// What: the 44-byte little-endian header that precedes every packet the
// device and the guest exchange on the virtio-vsock rx/tx queues (and, in this
// project, on the loopback and vhost-user transports):
//
//   off size field        off size field
//    0   8   src_cid       28   2   type      (1 = VIRTIO_VSOCK_TYPE_STREAM)
//    8   8   dst_cid       30   2   op        (VsockOp)
//   16   4   src_port      32   4   flags     (SHUTDOWN: ShutdownFlag bits)
//   20   4   dst_port      36   4   buf_alloc (sender's receive buffer size)
//   24   4   len           40   4   fwd_cnt   (bytes the sender has consumed)
//
// Why: the device's connection state machine works on decoded headers, and
// every byte of container IO crosses this codec, so it is kept pure and
// allocation-light: `encodeHeader` writes into a caller-provided buffer;
// `decodeHeader` reads with fixed offsets and returns one small object.
//
// Decisions:
// - CIDs are u64 on the wire but plain numbers here: real CIDs are tiny (2 for
//   the host, 3+ for guests). Decoding rejects CIDs above 2^53 - 1
//   ('cid-too-large') instead of silently losing precision.
// - `decodeHeaderRaw` decodes without validation, so a device can still answer
//   a bad packet with an RST addressed from its ports. `decodeHeader` =
//   raw decode + `validateHeader`.
// - Validation: type must be STREAM (the only type this device implements;
//   SEQPACKET is not negotiated), op must be known, len must not exceed
//   VSOCK_MAX_PKT_PAYLOAD (Firecracker's MAX_PKT_BUF_SIZE) and must be 0 for
//   every op but RW ("other ops carry no data"). Flags are not checked: the
//   Linux driver and Firecracker ignore unknown SHUTDOWN bits, and so do we.
// - Encoders do not validate op/type (tests and RST replies need to write any
//   header); out-of-range integers throw RangeError.

/** Size of struct virtio_vsock_hdr. */
export const VSOCK_HDR_SIZE = 44;
/** VIRTIO_VSOCK_TYPE_STREAM, the only socket type implemented here. */
export const VSOCK_TYPE_STREAM = 1;
/** Well-known CID of the host (VMADDR_CID_HOST). */
export const HOST_CID = 2;
/** Guest CID used when none is configured. */
export const DEFAULT_GUEST_CID = 3;
/**
 * Largest payload a single packet may carry (64 KiB, Firecracker's
 * MAX_PKT_BUF_SIZE; Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE is the same).
 */
export const VSOCK_MAX_PKT_PAYLOAD = 64 * 1024;

/** virtio-vsock operations (VIRTIO_VSOCK_OP_*). */
export const VsockOp = {
  REQUEST: 1,
  RESPONSE: 2,
  RST: 3,
  SHUTDOWN: 4,
  RW: 5,
  CREDIT_UPDATE: 6,
  CREDIT_REQUEST: 7,
} as const;
export type VsockOp = (typeof VsockOp)[keyof typeof VsockOp];

/** Flags of an OP_SHUTDOWN packet (VIRTIO_VSOCK_SHUTDOWN_*). */
export const ShutdownFlag = {
  /** The sender will receive no more data. */
  RCV: 1,
  /** The sender will send no more data. */
  SEND: 2,
} as const;
export type ShutdownFlag = (typeof ShutdownFlag)[keyof typeof ShutdownFlag];
/** Both shutdown bits: full shutdown. */
export const SHUTDOWN_BOTH = ShutdownFlag.RCV | ShutdownFlag.SEND;

/** A header as decoded from the wire, not yet validated. */
export interface RawVsockHeader {
  srcCid: number;
  dstCid: number;
  srcPort: number;
  dstPort: number;
  /** Payload length in bytes (non-zero only for RW). */
  len: number;
  type: number;
  op: number;
  flags: number;
  /** Sender's total receive buffer space for this connection. */
  bufAlloc: number;
  /** Free-running count of bytes the sender has consumed (mod 2^32). */
  fwdCnt: number;
}

/** A validated header. */
export interface VsockHeader extends RawVsockHeader {
  type: typeof VSOCK_TYPE_STREAM;
  op: VsockOp;
}

/** A header plus its payload. `data` is present (length === hdr.len) only for RW. */
export interface VsockPacket {
  hdr: VsockHeader;
  data?: Buffer;
}

export type VsockPacketErrorCode =
  | 'short-buffer'
  | 'cid-too-large'
  | 'bad-type'
  | 'bad-op'
  | 'bad-len'
  | 'data-mismatch';

export class VsockPacketError extends Error {
  override readonly name = 'VsockPacketError';
  constructor(
    readonly code: VsockPacketErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const TWO_32 = 0x1_0000_0000;
/** Highest allowed value of a CID's upper 32-bit word (2^53 - 1 >> 32). */
const CID_HI_MAX = 0x1f_ffff;

const OP_NAMES: Record<number, string> = {
  1: 'REQUEST',
  2: 'RESPONSE',
  3: 'RST',
  4: 'SHUTDOWN',
  5: 'RW',
  6: 'CREDIT_UPDATE',
  7: 'CREDIT_REQUEST',
};

/** Human-readable name of an op ("RW", "op 9" for unknown ones). */
export function vsockOpName(op: number): string {
  return OP_NAMES[op] ?? `op ${op}`;
}

export function isVsockOp(op: number): op is VsockOp {
  return Number.isInteger(op) && op >= VsockOp.REQUEST && op <= VsockOp.CREDIT_REQUEST;
}

function writeCid(buf: Buffer, cid: number, at: number, what: string): void {
  if (!Number.isSafeInteger(cid) || cid < 0) {
    throw new RangeError(`${what} must be a non-negative safe integer, got ${cid}`);
  }
  buf.writeUInt32LE(cid % TWO_32, at);
  buf.writeUInt32LE(Math.floor(cid / TWO_32), at + 4);
}

function readCid(buf: Buffer, at: number, what: string): number {
  const hi = buf.readUInt32LE(at + 4);
  if (hi > CID_HI_MAX) {
    throw new VsockPacketError(
      'cid-too-large',
      `${what} 0x${buf.readBigUInt64LE(at).toString(16)} does not fit in 53 bits`,
    );
  }
  return hi * TWO_32 + buf.readUInt32LE(at);
}

/**
 * Write `h` as 44 bytes at `target[offset]` (allocating a buffer when no
 * target is given). Returns the buffer written to.
 * @throws RangeError if the target is too small or a field is out of range.
 */
export function encodeHeader(h: RawVsockHeader, target?: Buffer, offset = 0): Buffer {
  const buf = target ?? Buffer.allocUnsafe(VSOCK_HDR_SIZE + offset);
  if (!Number.isInteger(offset) || offset < 0 || buf.length - offset < VSOCK_HDR_SIZE) {
    throw new RangeError(
      `encodeHeader: need ${VSOCK_HDR_SIZE} bytes at offset ${offset}, buffer has ${buf.length}`,
    );
  }
  writeCid(buf, h.srcCid, offset, 'src_cid');
  writeCid(buf, h.dstCid, offset + 8, 'dst_cid');
  buf.writeUInt32LE(h.srcPort, offset + 16);
  buf.writeUInt32LE(h.dstPort, offset + 20);
  buf.writeUInt32LE(h.len, offset + 24);
  buf.writeUInt16LE(h.type, offset + 28);
  buf.writeUInt16LE(h.op, offset + 30);
  buf.writeUInt32LE(h.flags, offset + 32);
  buf.writeUInt32LE(h.bufAlloc, offset + 36);
  buf.writeUInt32LE(h.fwdCnt, offset + 40);
  return buf;
}

/**
 * Decode the 44 header bytes at `buf[offset]` without checking type, op or
 * len. Only too-short buffers and CIDs over 2^53 - 1 are errors.
 * @throws VsockPacketError ('short-buffer' | 'cid-too-large')
 */
export function decodeHeaderRaw(buf: Buffer, offset = 0): RawVsockHeader {
  if (!Number.isInteger(offset) || offset < 0) {
    throw new RangeError(`decodeHeader: bad offset ${offset}`);
  }
  if (buf.length - offset < VSOCK_HDR_SIZE) {
    throw new VsockPacketError(
      'short-buffer',
      `vsock header needs ${VSOCK_HDR_SIZE} bytes, got ${Math.max(0, buf.length - offset)}`,
    );
  }
  return {
    srcCid: readCid(buf, offset, 'src_cid'),
    dstCid: readCid(buf, offset + 8, 'dst_cid'),
    srcPort: buf.readUInt32LE(offset + 16),
    dstPort: buf.readUInt32LE(offset + 20),
    len: buf.readUInt32LE(offset + 24),
    type: buf.readUInt16LE(offset + 28),
    op: buf.readUInt16LE(offset + 30),
    flags: buf.readUInt32LE(offset + 32),
    bufAlloc: buf.readUInt32LE(offset + 36),
    fwdCnt: buf.readUInt32LE(offset + 40),
  };
}

/**
 * Check type, op and len of a decoded header (see the module comment).
 * @throws VsockPacketError ('bad-type' | 'bad-op' | 'bad-len')
 */
export function validateHeader(h: RawVsockHeader): asserts h is VsockHeader {
  if (h.type !== VSOCK_TYPE_STREAM) {
    throw new VsockPacketError('bad-type', `unsupported vsock socket type ${h.type} (only STREAM=1)`);
  }
  if (!isVsockOp(h.op)) {
    throw new VsockPacketError('bad-op', `unknown vsock op ${h.op}`);
  }
  if (h.op === VsockOp.RW) {
    if (h.len > VSOCK_MAX_PKT_PAYLOAD) {
      throw new VsockPacketError(
        'bad-len',
        `RW packet len ${h.len} exceeds the ${VSOCK_MAX_PKT_PAYLOAD}-byte maximum`,
      );
    }
  } else if (h.len !== 0) {
    throw new VsockPacketError('bad-len', `${vsockOpName(h.op)} packet must have len 0, has ${h.len}`);
  }
}

/**
 * Decode and validate the header at `buf[offset]`.
 * @throws VsockPacketError on short buffers, CIDs over 2^53 - 1, type other
 * than STREAM, unknown op, or a len that does not fit the op.
 */
export function decodeHeader(buf: Buffer, offset = 0): VsockHeader {
  const h = decodeHeaderRaw(buf, offset);
  validateHeader(h);
  return h;
}

/**
 * Check a whole packet: a valid header; for RW, `data` present with exactly
 * `hdr.len` bytes; for other ops, no data (absent or empty).
 * @throws VsockPacketError
 */
export function validatePacket(pkt: {
  hdr: RawVsockHeader;
  data?: Buffer | undefined;
}): asserts pkt is VsockPacket {
  validateHeader(pkt.hdr);
  const dataLen = pkt.data?.length ?? 0;
  if (pkt.hdr.op === VsockOp.RW) {
    if (pkt.data === undefined || dataLen !== pkt.hdr.len) {
      throw new VsockPacketError(
        'data-mismatch',
        `RW packet has hdr.len ${pkt.hdr.len} but ${pkt.data === undefined ? 'no' : dataLen} data bytes`,
      );
    }
  } else if (dataLen !== 0) {
    throw new VsockPacketError(
      'data-mismatch',
      `${vsockOpName(pkt.hdr.op)} packet must carry no data, has ${dataLen} bytes`,
    );
  }
}

/** Fields for `makeHeader`; omitted ones default to 0. */
export interface HeaderInit {
  srcCid: number;
  dstCid: number;
  srcPort: number;
  dstPort: number;
  op: VsockOp;
  len?: number;
  flags?: number;
  bufAlloc?: number;
  fwdCnt?: number;
}

/** Build a STREAM header, defaulting len/flags/bufAlloc/fwdCnt to 0. */
export function makeHeader(init: HeaderInit): VsockHeader {
  return {
    srcCid: init.srcCid,
    dstCid: init.dstCid,
    srcPort: init.srcPort,
    dstPort: init.dstPort,
    len: init.len ?? 0,
    type: VSOCK_TYPE_STREAM,
    op: init.op,
    flags: init.flags ?? 0,
    bufAlloc: init.bufAlloc ?? 0,
    fwdCnt: init.fwdCnt ?? 0,
  };
}

/**
 * Build the header of a packet sent back to the sender of `to` (source and
 * destination swapped), e.g. a RESPONSE to a REQUEST or an RST to a bad
 * packet. Takes a raw header so that even an invalid packet can be answered.
 */
export function makeReplyHeader(
  to: Pick<RawVsockHeader, 'srcCid' | 'dstCid' | 'srcPort' | 'dstPort'>,
  op: VsockOp,
  fields: { len?: number; flags?: number; bufAlloc?: number; fwdCnt?: number } = {},
): VsockHeader {
  return makeHeader({
    srcCid: to.dstCid,
    dstCid: to.srcCid,
    srcPort: to.dstPort,
    dstPort: to.srcPort,
    op,
    ...fields,
  });
}

/** Total encoded size of a packet (header + payload). */
export function packetSize(pkt: { hdr: RawVsockHeader; data?: Buffer | undefined }): number {
  return VSOCK_HDR_SIZE + (pkt.data?.length ?? 0);
}

/**
 * Write header and payload contiguously at `target[offset]` (allocating when
 * no target is given). Does not validate; call `validatePacket` first if the
 * packet comes from untrusted code. Returns the buffer written to.
 */
export function encodePacket(
  pkt: { hdr: RawVsockHeader; data?: Buffer | undefined },
  target?: Buffer,
  offset = 0,
): Buffer {
  const size = packetSize(pkt);
  const buf = target ?? Buffer.allocUnsafe(size + offset);
  if (!Number.isInteger(offset) || offset < 0 || buf.length - offset < size) {
    throw new RangeError(`encodePacket: need ${size} bytes at offset ${offset}, buffer has ${buf.length}`);
  }
  encodeHeader(pkt.hdr, buf, offset);
  if (pkt.data !== undefined && pkt.data.length > 0) pkt.data.copy(buf, offset + VSOCK_HDR_SIZE);
  return buf;
}

/**
 * Decode a packet laid out as header + payload at `buf[offset]` and validate
 * it. `data` is a view into `buf` (no copy). Returns the packet and the
 * number of bytes consumed.
 * @throws VsockPacketError ('short-buffer' when the payload is incomplete)
 */
export function decodePacket(buf: Buffer, offset = 0): { pkt: VsockPacket; size: number } {
  const hdr = decodeHeader(buf, offset);
  const start = offset + VSOCK_HDR_SIZE;
  if (buf.length - start < hdr.len) {
    throw new VsockPacketError(
      'short-buffer',
      `RW payload needs ${hdr.len} bytes, got ${buf.length - start}`,
    );
  }
  const pkt: VsockPacket =
    hdr.op === VsockOp.RW ? { hdr, data: buf.subarray(start, start + hdr.len) } : { hdr };
  return { pkt, size: VSOCK_HDR_SIZE + hdr.len };
}
