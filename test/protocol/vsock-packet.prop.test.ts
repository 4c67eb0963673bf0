/**
 * Properties of the virtio-vsock header codec (fast-check): headers and
 * packets round-trip at any offset, decoding arbitrary bytes either yields a
 * header that re-encodes to the same 44 bytes or throws VsockPacketError,
 * and validation enforces the type, op and payload-length rules.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeHeader,
  decodeHeaderRaw,
  decodePacket,
  encodeHeader,
  encodePacket,
  makeReplyHeader,
  type RawVsockHeader,
  VSOCK_HDR_SIZE,
  VSOCK_MAX_PKT_PAYLOAD,
  VSOCK_TYPE_STREAM,
  type VsockHeader,
  VsockOp,
  VsockPacketError,
  validateHeader,
  validatePacket,
} from '../../src/protocol/vsock-packet.js';
import { bytesArb, propParams, thrown } from '../support/prop.js';

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const cid = fc.oneof(fc.integer({ min: 0, max: 16 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));
const op = fc.constantFrom(...Object.values(VsockOp));

const rawHeaderArb: fc.Arbitrary<RawVsockHeader> = fc.record({
  srcCid: cid,
  dstCid: cid,
  srcPort: u32,
  dstPort: u32,
  len: u32,
  type: u16,
  op: u16,
  flags: u32,
  bufAlloc: u32,
  fwdCnt: u32,
});

/** A valid packet: RW with up to 4 KiB of data (the 64 KiB bound is checked separately), other ops empty. */
const packetArb = fc.tuple(rawHeaderArb, op, fc.uint8Array({ maxLength: 4096 })).map(([h, o, data]) => {
  const hdr: VsockHeader = { ...h, type: VSOCK_TYPE_STREAM, op: o, len: o === VsockOp.RW ? data.length : 0 };
  return o === VsockOp.RW ? { hdr, data: Buffer.from(data) } : { hdr };
});

describe('virtio-vsock header properties', () => {
  it('any header round-trips through encodeHeader/decodeHeaderRaw at any offset', () => {
    fc.assert(
      fc.property(rawHeaderArb, fc.nat({ max: 64 }), (h, offset) => {
        const buf = Buffer.alloc(offset + VSOCK_HDR_SIZE + 3, 0xa5);
        encodeHeader(h, buf, offset);
        expect(buf.subarray(0, offset).every((x) => x === 0xa5)).toBe(true);
        expect(decodeHeaderRaw(buf, offset)).toEqual(h);
        expect(decodeHeaderRaw(encodeHeader(h))).toEqual(h);
      }),
      propParams(),
    );
  });

  it('arbitrary bytes decode to a header that re-encodes to the same 44 bytes, or throw VsockPacketError', () => {
    fc.assert(
      fc.property(bytesArb(100), (bytes) => {
        let raw: RawVsockHeader;
        try {
          raw = decodeHeaderRaw(bytes);
        } catch (err) {
          expect(err).toBeInstanceOf(VsockPacketError);
          expect(['short-buffer', 'cid-too-large']).toContain((err as VsockPacketError).code);
          return;
        }
        expect(encodeHeader(raw)).toEqual(bytes.subarray(0, VSOCK_HDR_SIZE));
        const err = thrown(() => decodeHeader(bytes));
        if (err !== undefined) expect(err).toBeInstanceOf(VsockPacketError);
        const perr = thrown(() => decodePacket(bytes));
        if (perr !== undefined) expect(perr).toBeInstanceOf(VsockPacketError);
      }),
      propParams(),
    );
  });

  it('validation: STREAM only, ops 1..7, len 0 except RW, RW at most 64 KiB', () => {
    fc.assert(
      fc.property(rawHeaderArb, (h) => {
        const err = thrown(() => validateHeader(h));
        const valid =
          h.type === VSOCK_TYPE_STREAM &&
          h.op >= 1 &&
          h.op <= 7 &&
          (h.op === VsockOp.RW ? h.len <= VSOCK_MAX_PKT_PAYLOAD : h.len === 0);
        if (valid) expect(err).toBeUndefined();
        else expect(err).toBeInstanceOf(VsockPacketError);
      }),
      propParams(),
    );
    // The generator rarely hits the boundaries: pin them.
    const rw = {
      srcCid: 2,
      dstCid: 3,
      srcPort: 1,
      dstPort: 2,
      type: 1,
      op: VsockOp.RW,
      flags: 0,
      bufAlloc: 0,
      fwdCnt: 0,
    };
    expect(thrown(() => validateHeader({ ...rw, len: VSOCK_MAX_PKT_PAYLOAD }))).toBeUndefined();
    expect(thrown(() => validateHeader({ ...rw, len: VSOCK_MAX_PKT_PAYLOAD + 1 }))).toMatchObject({
      code: 'bad-len',
    });
  });
});

describe('virtio-vsock packet properties', () => {
  it('valid packets round-trip through encodePacket/decodePacket at any offset, data as a view', () => {
    fc.assert(
      fc.property(packetArb, fc.nat({ max: 32 }), bytesArb(16), (pkt, offset, trailer) => {
        validatePacket(pkt);
        const body = encodePacket(pkt);
        const buf = Buffer.concat([Buffer.alloc(offset), body, trailer]);
        const { pkt: back, size } = decodePacket(buf, offset);
        expect(size).toBe(body.length);
        expect(back.hdr).toEqual(pkt.hdr);
        expect(back.data).toEqual(pkt.data);
        if (back.data) expect(back.data.buffer).toBe(buf.buffer);
      }),
      propParams(),
    );
  });

  it('a packet cut short anywhere is short-buffer, never a partial packet', () => {
    fc.assert(
      fc.property(packetArb, fc.nat(), (pkt, cut) => {
        const body = encodePacket(pkt);
        const n = cut % body.length;
        expect(thrown(() => decodePacket(body.subarray(0, n)))).toMatchObject({ code: 'short-buffer' });
      }),
      propParams(),
    );
  });

  it('data that does not match the op or len is refused by validatePacket', () => {
    fc.assert(
      fc.property(packetArb, fc.integer({ min: 1, max: 64 }), (pkt, extra) => {
        const data = Buffer.alloc((pkt.data?.length ?? 0) + extra);
        expect(thrown(() => validatePacket({ hdr: pkt.hdr, data }))).toMatchObject({ code: 'data-mismatch' });
      }),
      propParams(),
    );
  });

  it('a reply header swaps both addresses and keeps STREAM', () => {
    fc.assert(
      fc.property(rawHeaderArb, op, (h, o) => {
        const r = makeReplyHeader(h, o);
        expect([r.srcCid, r.dstCid, r.srcPort, r.dstPort]).toEqual([
          h.dstCid,
          h.srcCid,
          h.dstPort,
          h.srcPort,
        ]);
        expect(r.type).toBe(VSOCK_TYPE_STREAM);
        expect(decodeHeader(encodeHeader(r))).toEqual(r);
      }),
      propParams(),
    );
  });
});
