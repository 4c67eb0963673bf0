import { describe, expect, it } from 'vitest';
import {
  DEFAULT_GUEST_CID,
  decodeHeader,
  decodeHeaderRaw,
  decodePacket,
  encodeHeader,
  encodePacket,
  HOST_CID,
  isVsockOp,
  makeHeader,
  makeReplyHeader,
  type RawVsockHeader,
  SHUTDOWN_BOTH,
  ShutdownFlag,
  VSOCK_HDR_SIZE,
  VSOCK_MAX_PKT_PAYLOAD,
  VSOCK_TYPE_STREAM,
  type VsockHeader,
  VsockOp,
  VsockPacketError,
  type VsockPacketErrorCode,
  validatePacket,
  vsockOpName,
} from '../../src/protocol/vsock-packet.js';

function expectCode(fn: () => unknown, code: VsockPacketErrorCode): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(VsockPacketError);
    expect((e as VsockPacketError).code).toBe(code);
    return;
  }
  throw new Error(`expected VsockPacketError ${code}, nothing thrown`);
}

// src_cid=2, dst_cid=3, src_port=2^30, dst_port=1024, len=5, type=STREAM,
// op=RW, flags=0, buf_alloc=65536, fwd_cnt=0x12345678 (all little-endian).
const RW_HEX =
  '0200000000000000' + // src_cid
  '0300000000000000' + // dst_cid
  '00000040' + // src_port
  '00040000' + // dst_port
  '05000000' + // len
  '0100' + // type
  '0500' + // op
  '00000000' + // flags
  '00000100' + // buf_alloc
  '78563412'; // fwd_cnt

const RW_HDR: VsockHeader = {
  srcCid: HOST_CID,
  dstCid: DEFAULT_GUEST_CID,
  srcPort: 2 ** 30,
  dstPort: 1024,
  len: 5,
  type: VSOCK_TYPE_STREAM,
  op: VsockOp.RW,
  flags: 0,
  bufAlloc: 65536,
  fwdCnt: 0x12345678,
};

function raw(overrides: Partial<RawVsockHeader>): Buffer {
  return encodeHeader({ ...RW_HDR, ...overrides });
}

describe('constants', () => {
  it('match the virtio spec', () => {
    expect(VSOCK_HDR_SIZE).toBe(44);
    expect(VSOCK_TYPE_STREAM).toBe(1);
    expect(HOST_CID).toBe(2);
    expect(VsockOp).toEqual({
      REQUEST: 1,
      RESPONSE: 2,
      RST: 3,
      SHUTDOWN: 4,
      RW: 5,
      CREDIT_UPDATE: 6,
      CREDIT_REQUEST: 7,
    });
    expect(ShutdownFlag).toEqual({ RCV: 1, SEND: 2 });
    expect(SHUTDOWN_BOTH).toBe(3);
    expect(vsockOpName(VsockOp.CREDIT_UPDATE)).toBe('CREDIT_UPDATE');
    expect(vsockOpName(42)).toBe('op 42');
    expect(isVsockOp(0)).toBe(false);
    expect(isVsockOp(7)).toBe(true);
    expect(isVsockOp(8)).toBe(false);
  });
});

describe('encodeHeader / decodeHeader', () => {
  it('encodes the exact 44-byte layout', () => {
    const buf = encodeHeader(RW_HDR);
    expect(buf.length).toBe(44);
    expect(buf.toString('hex')).toBe(RW_HEX);
  });

  it('decodes a hand-written header', () => {
    expect(decodeHeader(Buffer.from(RW_HEX, 'hex'))).toEqual(RW_HDR);
  });

  it('writes into a caller buffer at an offset and decodes from there', () => {
    const target = Buffer.alloc(100, 0xee);
    const ret = encodeHeader(RW_HDR, target, 7);
    expect(ret).toBe(target);
    expect(target.subarray(7, 51).toString('hex')).toBe(RW_HEX);
    expect(target[6]).toBe(0xee);
    expect(target[51]).toBe(0xee);
    expect(decodeHeader(target, 7)).toEqual(RW_HDR);
  });

  it('round-trips every op and extreme field values', () => {
    for (const op of Object.values(VsockOp)) {
      const h = makeHeader({
        srcCid: Number.MAX_SAFE_INTEGER,
        dstCid: 0xffff_ffff,
        srcPort: 0xffff_ffff,
        dstPort: 0,
        op,
        len: op === VsockOp.RW ? VSOCK_MAX_PKT_PAYLOAD : 0,
        flags: 0xffff_ffff,
        bufAlloc: 0xffff_ffff,
        fwdCnt: 0xffff_ffff,
      });
      expect(decodeHeader(encodeHeader(h))).toEqual(h);
    }
  });

  it('encodes a CID above 2^32 as a u64', () => {
    const buf = encodeHeader({ ...RW_HDR, srcCid: 2 ** 40 + 7 });
    expect(buf.readBigUInt64LE(0)).toBe(2n ** 40n + 7n);
    expect(decodeHeader(buf).srcCid).toBe(2 ** 40 + 7);
  });

  it('rejects short buffers', () => {
    expectCode(() => decodeHeader(Buffer.alloc(43)), 'short-buffer');
    expectCode(() => decodeHeader(Buffer.alloc(0)), 'short-buffer');
    expectCode(() => decodeHeader(Buffer.alloc(50), 7), 'short-buffer');
    expectCode(() => decodeHeader(Buffer.alloc(10), 20), 'short-buffer');
    expect(() => decodeHeader(Buffer.alloc(44), -1)).toThrow(RangeError);
  });

  it('rejects CIDs that do not fit in 53 bits', () => {
    const buf = encodeHeader(RW_HDR);
    buf.writeBigUInt64LE(2n ** 53n, 0);
    expectCode(() => decodeHeader(buf), 'cid-too-large');
    const buf2 = encodeHeader(RW_HDR);
    buf2.writeBigUInt64LE(0xffff_ffff_ffff_ffffn, 8); // VMADDR_CID_ANY as u64
    expectCode(() => decodeHeaderRaw(buf2), 'cid-too-large');
    buf2.writeBigUInt64LE(2n ** 53n - 1n, 8);
    expect(decodeHeader(buf2).dstCid).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('rejects type other than STREAM', () => {
    expectCode(() => decodeHeader(raw({ type: 2 })), 'bad-type'); // SEQPACKET
    expectCode(() => decodeHeader(raw({ type: 0 })), 'bad-type');
    expectCode(() => decodeHeader(raw({ type: 0xffff })), 'bad-type');
  });

  it('rejects unknown ops', () => {
    expectCode(() => decodeHeader(raw({ op: 0, len: 0 })), 'bad-op');
    expectCode(() => decodeHeader(raw({ op: 8, len: 0 })), 'bad-op');
    expectCode(() => decodeHeader(raw({ op: 0xffff, len: 0 })), 'bad-op');
  });

  it('rejects bad lengths', () => {
    expectCode(() => decodeHeader(raw({ len: VSOCK_MAX_PKT_PAYLOAD + 1 })), 'bad-len');
    expectCode(() => decodeHeader(raw({ len: 0xffff_ffff })), 'bad-len');
    expectCode(() => decodeHeader(raw({ op: VsockOp.REQUEST, len: 1 })), 'bad-len');
    expectCode(() => decodeHeader(raw({ op: VsockOp.CREDIT_UPDATE, len: 4 })), 'bad-len');
    expect(decodeHeader(raw({ len: 0 })).len).toBe(0); // an empty RW is legal
  });

  it('decodeHeaderRaw keeps invalid fields so the packet can be answered with RST', () => {
    const h = decodeHeaderRaw(raw({ op: 99, type: 2, len: 3 }));
    expect(h).toMatchObject({ op: 99, type: 2, len: 3, srcPort: 2 ** 30, dstPort: 1024 });
    const rst = makeReplyHeader(h, VsockOp.RST);
    expect(rst).toEqual({
      srcCid: DEFAULT_GUEST_CID,
      dstCid: HOST_CID,
      srcPort: 1024,
      dstPort: 2 ** 30,
      len: 0,
      type: VSOCK_TYPE_STREAM,
      op: VsockOp.RST,
      flags: 0,
      bufAlloc: 0,
      fwdCnt: 0,
    });
  });

  it('refuses to encode out-of-range values', () => {
    expect(() => encodeHeader({ ...RW_HDR, srcCid: -1 })).toThrow(RangeError);
    expect(() => encodeHeader({ ...RW_HDR, dstCid: 2 ** 53 })).toThrow(RangeError);
    expect(() => encodeHeader({ ...RW_HDR, srcCid: 1.5 })).toThrow(RangeError);
    expect(() => encodeHeader({ ...RW_HDR, srcPort: 2 ** 32 })).toThrow(RangeError);
    expect(() => encodeHeader({ ...RW_HDR, op: 0x10000 })).toThrow(RangeError);
    expect(() => encodeHeader(RW_HDR, Buffer.alloc(43))).toThrow(RangeError);
    expect(() => encodeHeader(RW_HDR, Buffer.alloc(50), 7)).toThrow(RangeError);
  });
});

describe('makeHeader', () => {
  it('fills type and zero defaults', () => {
    expect(makeHeader({ srcCid: 2, dstCid: 3, srcPort: 5, dstPort: 1027, op: VsockOp.REQUEST })).toEqual({
      srcCid: 2,
      dstCid: 3,
      srcPort: 5,
      dstPort: 1027,
      len: 0,
      type: 1,
      op: 1,
      flags: 0,
      bufAlloc: 0,
      fwdCnt: 0,
    });
  });

  it('builds a SHUTDOWN with flags', () => {
    const h = makeHeader({
      srcCid: 3,
      dstCid: 2,
      srcPort: 1,
      dstPort: 2,
      op: VsockOp.SHUTDOWN,
      flags: SHUTDOWN_BOTH,
    });
    const buf = encodeHeader(h);
    expect(buf.readUInt16LE(30)).toBe(4);
    expect(buf.readUInt32LE(32)).toBe(3);
    expect(decodeHeader(buf)).toEqual(h);
  });
});

describe('packets', () => {
  it('validates RW data length', () => {
    const data = Buffer.from('hello');
    expect(() => validatePacket({ hdr: RW_HDR, data })).not.toThrow();
    expectCode(() => validatePacket({ hdr: RW_HDR }), 'data-mismatch');
    expectCode(() => validatePacket({ hdr: RW_HDR, data: Buffer.from('hell') }), 'data-mismatch');
    expectCode(() => validatePacket({ hdr: RW_HDR, data: Buffer.from('hello!') }), 'data-mismatch');
    expect(() => validatePacket({ hdr: { ...RW_HDR, len: 0 }, data: Buffer.alloc(0) })).not.toThrow();
    expectCode(() => validatePacket({ hdr: { ...RW_HDR, len: 0 } }), 'data-mismatch');
  });

  it('rejects data on non-RW packets', () => {
    const req = makeHeader({ srcCid: 2, dstCid: 3, srcPort: 1, dstPort: 2, op: VsockOp.REQUEST });
    expect(() => validatePacket({ hdr: req })).not.toThrow();
    expect(() => validatePacket({ hdr: req, data: Buffer.alloc(0) })).not.toThrow();
    expectCode(() => validatePacket({ hdr: req, data: Buffer.from('x') }), 'data-mismatch');
  });

  it('validatePacket checks the header too', () => {
    expectCode(() => validatePacket({ hdr: { ...RW_HDR, op: 9 } }), 'bad-op');
    expectCode(() => validatePacket({ hdr: { ...RW_HDR, type: 3 } }), 'bad-type');
  });

  it('encodePacket / decodePacket round-trip, data as a view', () => {
    const data = Buffer.from('hello');
    const buf = encodePacket({ hdr: RW_HDR, data });
    expect(buf.toString('hex')).toBe(RW_HEX + data.toString('hex'));
    const { pkt, size } = decodePacket(Buffer.concat([buf, Buffer.from('next')]));
    expect(size).toBe(49);
    expect(pkt.hdr).toEqual(RW_HDR);
    expect(pkt.data).toEqual(data);

    const credit = makeHeader({ srcCid: 3, dstCid: 2, srcPort: 1, dstPort: 2, op: VsockOp.CREDIT_UPDATE });
    const cbuf = encodePacket({ hdr: credit }, Buffer.alloc(60), 10);
    const got = decodePacket(cbuf, 10);
    expect(got).toEqual({ pkt: { hdr: credit }, size: 44 });
  });

  it('decodePacket rejects a truncated payload', () => {
    const buf = encodePacket({ hdr: RW_HDR, data: Buffer.from('hello') });
    expectCode(() => decodePacket(buf.subarray(0, 48)), 'short-buffer');
    expect(() => encodePacket({ hdr: RW_HDR, data: Buffer.from('hello') }, Buffer.alloc(48))).toThrow(
      RangeError,
    );
  });
});
