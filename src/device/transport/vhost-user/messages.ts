/**
 * The vhost-user wire protocol (QEMU docs/interop/vhost-user.rst): message
 * header, request numbers, payload layouts and an incremental decoder (the
 * feature bits are in features.ts). Pure: no I/O, no fds opened or closed
 * here. Generic: nothing in it is specific to one device type.
 *
 * A message is a 12-byte header `request u32, flags u32, size u32` followed by
 * `size` payload bytes, all in the host's byte order (little-endian on the
 * x86-64 machines this runs on). Flags: bits 0-1 are the version (1), bit 2
 * marks a reply (backend to QEMU), bit 3 asks for a reply (REPLY_ACK).
 *
 * File descriptors travel as SCM_RIGHTS on the `sendmsg` that carries the
 * message (QEMU writes header and payload with one sendmsg), so on the
 * receiving stream socket they are attached to the chunk holding the
 * message's first byte. `MessageDecoder.push(chunk, fds)` records each fd
 * batch at the stream offset of its chunk; a decoded message takes every fd
 * that arrived within its bytes. For that to be exact the reader must not let
 * one `recvmsg` span two messages (Linux may then return the tail of one and
 * the next one's bytes and fds together): read `bytesWanted()` bytes at a
 * time, the rest of the header and then the rest of the payload, as
 * libvhost-user does. Fds handed out in a message belong to the
 * caller; fds still inside the decoder are returned by `takeFds()` so a
 * connection that dies can close them.
 *
 * Payloads (checked against the C structs in QEMU's hw/virtio/vhost-user.c
 * and linux/vhost_types.h):
 *   u64                 8 bytes (features, queue num, vring index | NOFD bit 8)
 *   vring state        `index u32, num u32` (8 bytes)
 *   vring address      `index u32, flags u32, desc u64, used u64, avail u64,
 *                       log u64` (40 bytes; vhost-user.rst's table shows a
 *                       "size" column that the C struct does not have)
 *   memory table       `nregions u32, padding u32` then nregions (at most 8) of
 *                      `guest_phys_addr u64, memory_size u64, userspace_addr u64,
 *                       mmap_offset u64` (32 bytes each); QEMU sends only the
 *                       regions it fills: size = 8 + 32 * nregions
 *   config space       `offset u32, size u32, flags u32, payload[size]`
 *                      (header 12 bytes, payload at most 256)
 */

export const HEADER_SIZE = 12;
export const VHOST_USER_VERSION = 0x1;
export const VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** VHOST_MEMORY_BASELINE_NREGIONS: regions in one SET_MEM_TABLE, and fds in one message. */
export const MAX_MEM_REGIONS = 8;
export const MAX_FDS_PER_MESSAGE = 8;
/** VHOST_USER_MAX_CONFIG_SIZE */
export const MAX_CONFIG_SIZE = 256;
export const CONFIG_HEADER_SIZE = 12;
/** Larger than any payload QEMU sends (its union is a few hundred bytes): a bigger size means a broken stream. */
export const MAX_PAYLOAD_SIZE = 4096;
/** SET_VRING_KICK/CALL/ERR u64: bits 0-7 the queue index, bit 8 "no fd attached". */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;

/** Front-end (QEMU) request numbers, vhost-user.rst "Front-end message types". */
export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_SLAVE_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;
export type ReqName = keyof typeof Req;

const reqNames = new Map<number, ReqName>(Object.entries(Req).map(([k, v]) => [v, k as ReqName]));

/** `SET_MEM_TABLE` for 5; `UNKNOWN(99)` for numbers the spec does not define. */
export function requestName(request: number): string {
  return reqNames.get(request) ?? `UNKNOWN(${request})`;
}

/** The stream or a payload breaks the protocol: log it and drop the connection. */
export class VhostUserProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VhostUserProtocolError';
  }
}

export interface VhostUserMessage {
  request: number;
  flags: number;
  /** A copy: the caller may keep it. */
  payload: Buffer;
  /** Fds that arrived with this message, in order. The caller owns them. */
  fds: number[];
}

export interface Header {
  request: number;
  flags: number;
  size: number;
}

export function decodeHeader(buf: Buffer, off = 0): Header {
  if (buf.length - off < HEADER_SIZE) throw new VhostUserProtocolError('short vhost-user header');
  return {
    request: buf.readUInt32LE(off),
    flags: buf.readUInt32LE(off + 4),
    size: buf.readUInt32LE(off + 8),
  };
}

/**
 * Incremental decoder for the byte stream QEMU writes on the vhost-user
 * socket. A protocol error (bad version, oversized or fd-laden garbage) is
 * thrown once from `next()` and the decoder stays failed: the connection is
 * unusable after it.
 */
export class MessageDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** Stream offset of the first buffered byte. */
  #consumed = 0;
  /** Stream offset of the end of the buffered bytes. */
  #received = 0;
  /** Fd batches keyed by the stream offset of the chunk they arrived with. */
  #fds: { at: number; fds: number[] }[] = [];
  #failed: VhostUserProtocolError | null = null;

  /** Appends bytes read from the socket; `fds` are the SCM_RIGHTS fds that came with them (now owned by the decoder). */
  push(data: Buffer, fds: readonly number[] = []): void {
    if (fds.length > 0) {
      // An fd with no data byte cannot happen on a stream socket; attach it to the next byte anyway.
      this.#fds.push({ at: this.#received, fds: [...fds] });
    }
    if (data.length === 0) return;
    this.#chunks.push(data);
    this.#buffered += data.length;
    this.#received += data.length;
  }

  /**
   * How many bytes complete the current header, or the current message once
   * its header is in: read at most this many with the next recvmsg.
   */
  bytesWanted(): number {
    if (this.#buffered < HEADER_SIZE) return HEADER_SIZE - this.#buffered;
    const size = this.#peek(HEADER_SIZE).readUInt32LE(8);
    const want = HEADER_SIZE + Math.min(size, MAX_PAYLOAD_SIZE) - this.#buffered;
    return want > 0 ? want : HEADER_SIZE; // a complete message is waiting in next()
  }

  /** Bytes buffered and not yet returned as a message. */
  get buffered(): number {
    return this.#buffered;
  }

  /** The next complete message, or null when more bytes are needed. */
  next(): VhostUserMessage | null {
    if (this.#failed) throw this.#failed;
    if (this.#buffered < HEADER_SIZE) return null;
    const head = this.#peek(HEADER_SIZE);
    const hdr = decodeHeader(head);
    if ((hdr.flags & VERSION_MASK) !== VHOST_USER_VERSION) {
      return this.#fail(
        `bad vhost-user version in flags 0x${hdr.flags.toString(16)} (${requestName(hdr.request)})`,
      );
    }
    if (hdr.size > MAX_PAYLOAD_SIZE) {
      return this.#fail(
        `vhost-user payload of ${hdr.size} bytes for ${requestName(hdr.request)} is too large`,
      );
    }
    const total = HEADER_SIZE + hdr.size;
    if (this.#buffered < total) return null;
    const whole = this.#take(total);
    const start = this.#consumed;
    const end = start + total;
    this.#consumed = end;
    const fds: number[] = [];
    while (this.#fds.length > 0 && this.#fds[0]!.at < end) {
      fds.push(...this.#fds.shift()!.fds);
    }
    const msg: VhostUserMessage = {
      request: hdr.request,
      flags: hdr.flags,
      payload: Buffer.from(whole.subarray(HEADER_SIZE)),
      fds,
    };
    if (fds.length > MAX_FDS_PER_MESSAGE) {
      // Hand them back through takeFds() so the owner closes them.
      this.#fds.unshift({ at: end, fds });
      return this.#fail(`${fds.length} fds with one ${requestName(hdr.request)} message`);
    }
    return msg;
  }

  /** Removes and returns every fd the decoder still holds (for closing on teardown or after an error). */
  takeFds(): number[] {
    const out = this.#fds.flatMap((b) => b.fds);
    this.#fds = [];
    return out;
  }

  #fail(why: string): never {
    this.#failed = new VhostUserProtocolError(why);
    throw this.#failed;
  }

  #peek(n: number): Buffer {
    const first = this.#chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    return Buffer.concat(this.#chunks, this.#buffered).subarray(0, n);
  }

  #take(n: number): Buffer {
    let first = this.#chunks[0]!;
    if (first.length < n) {
      first = Buffer.concat(this.#chunks, this.#buffered);
      this.#chunks = [first];
    }
    const out = first.subarray(0, n);
    if (first.length === n) this.#chunks.shift();
    else this.#chunks[0] = first.subarray(n);
    this.#buffered -= n;
    return out;
  }
}

/** Header + payload as one buffer. */
export function encodeMessage(request: number, flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(HEADER_SIZE + payload.length);
  out.writeUInt32LE(request, 0);
  out.writeUInt32LE(flags >>> 0, 4);
  out.writeUInt32LE(payload.length, 8);
  payload.copy(out, HEADER_SIZE);
  return out;
}

/** A backend reply: version 1 with the reply bit. */
export function encodeReply(request: number, payload: Buffer): Buffer {
  return encodeMessage(request, VHOST_USER_VERSION | FLAG_REPLY, payload);
}

/** A request (what QEMU sends; for tests and tools). */
export function encodeRequest(request: number, payload?: Buffer, needReply = false): Buffer {
  return encodeMessage(request, VHOST_USER_VERSION | (needReply ? FLAG_NEED_REPLY : 0), payload);
}

export function needsReply(msg: { flags: number }): boolean {
  return (msg.flags & FLAG_NEED_REPLY) !== 0;
}

function expectSize(what: string, payload: Buffer, size: number): void {
  if (payload.length !== size) {
    throw new VhostUserProtocolError(`${what} payload is ${payload.length} bytes, expected ${size}`);
  }
}

// ---- u64 ----

export function decodeU64(payload: Buffer): bigint {
  expectSize('u64', payload, 8);
  return payload.readBigUInt64LE(0);
}

export function encodeU64(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, value));
  return b;
}

/** SET_VRING_KICK / CALL / ERR payload: which queue, and whether an fd came along. */
export interface VringFdRef {
  index: number;
  noFd: boolean;
}

export function decodeVringFd(payload: Buffer): VringFdRef {
  const v = Number(decodeU64(payload) & 0xffffn);
  return { index: v & VRING_IDX_MASK, noFd: (v & VRING_NOFD_MASK) !== 0 };
}

export function encodeVringFd(ref: VringFdRef): Buffer {
  return encodeU64(BigInt((ref.index & VRING_IDX_MASK) | (ref.noFd ? VRING_NOFD_MASK : 0)));
}

// ---- vring state ----

export interface VringState {
  index: number;
  num: number;
}

export function decodeVringState(payload: Buffer): VringState {
  expectSize('vring state', payload, 8);
  return { index: payload.readUInt32LE(0), num: payload.readUInt32LE(4) };
}

export function encodeVringState(s: VringState): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(s.index >>> 0, 0);
  b.writeUInt32LE(s.num >>> 0, 4);
  return b;
}

// ---- vring address ----

/** VHOST_VRING_F_LOG: bit 0 of the address flags (logging of used-ring writes, for migration). */
export const VRING_F_LOG = 0x1;

export interface VringAddr {
  index: number;
  flags: number;
  /** Ring addresses are QEMU user (virtual) addresses, not guest-physical. */
  descUserAddr: bigint;
  usedUserAddr: bigint;
  availUserAddr: bigint;
  logGuestAddr: bigint;
}

export const VRING_ADDR_SIZE = 40;

export function decodeVringAddr(payload: Buffer): VringAddr {
  expectSize('vring address', payload, VRING_ADDR_SIZE);
  return {
    index: payload.readUInt32LE(0),
    flags: payload.readUInt32LE(4),
    descUserAddr: payload.readBigUInt64LE(8),
    usedUserAddr: payload.readBigUInt64LE(16),
    availUserAddr: payload.readBigUInt64LE(24),
    logGuestAddr: payload.readBigUInt64LE(32),
  };
}

export function encodeVringAddr(a: VringAddr): Buffer {
  const b = Buffer.alloc(VRING_ADDR_SIZE);
  b.writeUInt32LE(a.index >>> 0, 0);
  b.writeUInt32LE(a.flags >>> 0, 4);
  b.writeBigUInt64LE(a.descUserAddr, 8);
  b.writeBigUInt64LE(a.usedUserAddr, 16);
  b.writeBigUInt64LE(a.availUserAddr, 24);
  b.writeBigUInt64LE(a.logGuestAddr, 32);
  return b;
}

// ---- memory table ----

export interface MemoryRegion {
  guestPhysAddr: bigint;
  memorySize: bigint;
  userspaceAddr: bigint;
  mmapOffset: bigint;
}

export const MEMORY_REGION_SIZE = 32;

export function decodeMemoryTable(payload: Buffer): MemoryRegion[] {
  if (payload.length < 8) throw new VhostUserProtocolError(`memory table payload of ${payload.length} bytes`);
  const n = payload.readUInt32LE(0);
  if (n > MAX_MEM_REGIONS)
    throw new VhostUserProtocolError(`memory table with ${n} regions (max ${MAX_MEM_REGIONS})`);
  // QEMU sends 8 + 32*n; a sender using the full C struct sends 8 + 32*8. Accept both.
  if (
    payload.length !== 8 + n * MEMORY_REGION_SIZE &&
    payload.length !== 8 + MAX_MEM_REGIONS * MEMORY_REGION_SIZE
  ) {
    throw new VhostUserProtocolError(`memory table of ${n} regions in ${payload.length} bytes`);
  }
  const regions: MemoryRegion[] = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + i * MEMORY_REGION_SIZE;
    regions.push({
      guestPhysAddr: payload.readBigUInt64LE(o),
      memorySize: payload.readBigUInt64LE(o + 8),
      userspaceAddr: payload.readBigUInt64LE(o + 16),
      mmapOffset: payload.readBigUInt64LE(o + 24),
    });
  }
  return regions;
}

export function encodeMemoryTable(regions: readonly MemoryRegion[]): Buffer {
  if (regions.length > MAX_MEM_REGIONS)
    throw new RangeError(`${regions.length} regions (max ${MAX_MEM_REGIONS})`);
  const b = Buffer.alloc(8 + regions.length * MEMORY_REGION_SIZE);
  b.writeUInt32LE(regions.length, 0);
  regions.forEach((r, i) => {
    const o = 8 + i * MEMORY_REGION_SIZE;
    b.writeBigUInt64LE(r.guestPhysAddr, o);
    b.writeBigUInt64LE(r.memorySize, o + 8);
    b.writeBigUInt64LE(r.userspaceAddr, o + 16);
    b.writeBigUInt64LE(r.mmapOffset, o + 24);
  });
  return b;
}

// ---- config space ----

/** Config flags: 0 = writable fields, 1 = live migration. */
export const CONFIG_FLAG_WRITABLE = 0;
export const CONFIG_FLAG_MIGRATION = 1;

export interface ConfigSpace {
  offset: number;
  size: number;
  flags: number;
  /** `size` bytes (GET_CONFIG requests carry zeros here). */
  payload: Buffer;
}

export function decodeConfig(payload: Buffer): ConfigSpace {
  if (payload.length < CONFIG_HEADER_SIZE) {
    throw new VhostUserProtocolError(`config payload of ${payload.length} bytes`);
  }
  const offset = payload.readUInt32LE(0);
  const size = payload.readUInt32LE(4);
  const flags = payload.readUInt32LE(8);
  if (size > MAX_CONFIG_SIZE || payload.length !== CONFIG_HEADER_SIZE + size) {
    throw new VhostUserProtocolError(`config of size ${size} in a payload of ${payload.length} bytes`);
  }
  return { offset, size, flags, payload: Buffer.from(payload.subarray(CONFIG_HEADER_SIZE)) };
}

export function encodeConfig(cfg: { offset: number; flags: number; payload: Buffer }): Buffer {
  if (cfg.payload.length > MAX_CONFIG_SIZE)
    throw new RangeError(`config payload of ${cfg.payload.length} bytes`);
  const b = Buffer.alloc(CONFIG_HEADER_SIZE + cfg.payload.length);
  b.writeUInt32LE(cfg.offset >>> 0, 0);
  b.writeUInt32LE(cfg.payload.length, 4);
  b.writeUInt32LE(cfg.flags >>> 0, 8);
  cfg.payload.copy(b, CONFIG_HEADER_SIZE);
  return b;
}

/**
 * The GET_CONFIG reply: the requested window (`offset`, `size`) of a
 * device's config space, or, for a window outside it, the zero-size reply
 * that vhost-user uses to signal an error.
 */
export function encodeConfigReply(request: ConfigSpace, space: Buffer): Buffer {
  const fits = request.offset + request.size <= space.length;
  const window = fits ? space.subarray(request.offset, request.offset + request.size) : Buffer.alloc(0);
  return encodeReply(
    Req.GET_CONFIG,
    encodeConfig({ offset: request.offset, flags: request.flags, payload: window }),
  );
}
