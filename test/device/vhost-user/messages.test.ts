import { describe, expect, it } from 'vitest';
import { bits, Feature, hasBit, ProtocolFeature } from '../../../src/device/transport/vhost-user/features.js';
import {
  decodeConfig,
  decodeMemoryTable,
  decodeU64,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  encodeConfig,
  encodeConfigReply,
  encodeMemoryTable,
  encodeReply,
  encodeRequest,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  MessageDecoder,
  needsReply,
  Req,
  requestName,
  VhostUserProtocolError,
} from '../../../src/device/transport/vhost-user/messages.js';
import { vsockConfigSpace } from '../../../src/device/transport/vhost-user/vsock-device.js';

describe('vhost-user constants', () => {
  it('match vhost-user.rst', () => {
    expect(Req.GET_FEATURES).toBe(1);
    expect(Req.SET_MEM_TABLE).toBe(5);
    expect(Req.SET_VRING_ADDR).toBe(9);
    expect(Req.SET_VRING_KICK).toBe(12);
    expect(Req.GET_PROTOCOL_FEATURES).toBe(15);
    expect(Req.GET_QUEUE_NUM).toBe(17);
    expect(Req.SET_VRING_ENABLE).toBe(18);
    expect(Req.GET_CONFIG).toBe(24);
    expect(Req.GET_STATUS).toBe(40);
    expect(ProtocolFeature.CONFIG).toBe(9);
    expect(ProtocolFeature.REPLY_ACK).toBe(3);
    expect(ProtocolFeature.MQ).toBe(0);
    expect(bits(Feature.VIRTIO_F_VERSION_1, Feature.VHOST_USER_F_PROTOCOL_FEATURES)).toBe(0x1_4000_0000n);
    expect(hasBit(bits(29), Feature.VIRTIO_RING_F_EVENT_IDX)).toBe(true);
    expect(hasBit(bits(29), Feature.VIRTIO_RING_F_INDIRECT_DESC)).toBe(false);
    expect(requestName(13)).toBe('SET_VRING_CALL');
    expect(requestName(999)).toBe('UNKNOWN(999)');
  });
});

describe('payload codecs', () => {
  it('round-trip u64, vring state, vring fd refs', () => {
    expect(decodeU64(encodeU64(0xfedc_ba98_7654_3210n))).toBe(0xfedc_ba98_7654_3210n);
    expect(decodeVringState(encodeVringState({ index: 1, num: 128 }))).toEqual({ index: 1, num: 128 });
    expect(decodeVringFd(encodeU64(0x101n))).toEqual({ index: 1, noFd: true });
    expect(decodeVringFd(encodeVringFd({ index: 0, noFd: false }))).toEqual({ index: 0, noFd: false });
    expect(() => decodeU64(Buffer.alloc(4))).toThrow(VhostUserProtocolError);
  });

  it('decodes a vring address laid out as struct vhost_vring_addr (40 bytes, no size field)', () => {
    const b = Buffer.alloc(40);
    b.writeUInt32LE(1, 0);
    b.writeUInt32LE(0, 4);
    b.writeBigUInt64LE(0x7f00_0000_1000n, 8); // desc
    b.writeBigUInt64LE(0x7f00_0000_3000n, 16); // used
    b.writeBigUInt64LE(0x7f00_0000_2000n, 24); // avail
    b.writeBigUInt64LE(0n, 32); // log
    const a = decodeVringAddr(b);
    expect(a).toEqual({
      index: 1,
      flags: 0,
      descUserAddr: 0x7f00_0000_1000n,
      usedUserAddr: 0x7f00_0000_3000n,
      availUserAddr: 0x7f00_0000_2000n,
      logGuestAddr: 0n,
    });
    expect(encodeVringAddr(a)).toEqual(b);
    expect(() => decodeVringAddr(Buffer.alloc(48))).toThrow(VhostUserProtocolError);
  });

  it('decodes the two-region memory table QEMU 7.2 sends, and rejects malformed ones', () => {
    const regions = [
      { guestPhysAddr: 0n, memorySize: 0xa0000n, userspaceAddr: 0x7f12_0000_0000n, mmapOffset: 0n },
      {
        guestPhysAddr: 0xc0000n,
        memorySize: 0x3ff4_0000n,
        userspaceAddr: 0x7f12_000c_0000n,
        mmapOffset: 0xc0000n,
      },
    ];
    const p = encodeMemoryTable(regions);
    expect(p.length).toBe(8 + 2 * 32);
    expect(decodeMemoryTable(p)).toEqual(regions);
    // The full C struct (8 slots) is accepted too.
    const full = Buffer.alloc(8 + 8 * 32);
    p.copy(full);
    expect(decodeMemoryTable(full)).toEqual(regions);
    const nine = Buffer.alloc(8 + 9 * 32);
    nine.writeUInt32LE(9, 0);
    expect(() => decodeMemoryTable(nine)).toThrow(/9 regions/);
    expect(() => decodeMemoryTable(p.subarray(0, 40))).toThrow(VhostUserProtocolError);
  });

  it('decodes config space and answers GET_CONFIG with a window of the device’s space (vsock: the guest CID)', () => {
    const req = encodeConfig({ offset: 0, flags: 0, payload: Buffer.alloc(8) });
    const cfg = decodeConfig(req);
    expect(cfg).toMatchObject({ offset: 0, size: 8, flags: 0 });
    const reply = encodeConfigReply(cfg, vsockConfigSpace(3));
    const d = new MessageDecoder();
    d.push(reply);
    const msg = d.next()!;
    expect(msg.request).toBe(Req.GET_CONFIG);
    expect(msg.flags).toBe(0x1 | FLAG_REPLY);
    expect(msg.payload.length).toBe(12 + 8);
    expect(decodeConfig(msg.payload).payload.readBigUInt64LE(0)).toBe(3n);
    const bad = encodeConfigReply(
      { offset: 4, size: 8, flags: 0, payload: Buffer.alloc(8) },
      vsockConfigSpace(3),
    );
    expect(bad.readUInt32LE(8)).toBe(12); // zero-size config: vhost-user's error answer
    expect(() => decodeConfig(Buffer.concat([req, Buffer.alloc(1)]))).toThrow(VhostUserProtocolError);
  });
});

describe('MessageDecoder', () => {
  it('splits a stream at arbitrary chunk boundaries and pairs fds with their message', () => {
    const m1 = encodeRequest(Req.GET_FEATURES);
    const m2 = encodeRequest(Req.SET_VRING_CALL, encodeU64(1n), true);
    const m3 = encodeRequest(Req.SET_VRING_NUM, encodeVringState({ index: 0, num: 128 }));
    const stream = Buffer.concat([m1, m2, m3]);
    for (let cut = 1; cut < stream.length; cut++) {
      const d = new MessageDecoder();
      // The fd comes with the first byte of m2 (QEMU sends header+payload in one sendmsg).
      const pieces: [Buffer, number[]][] = [];
      const boundary = m1.length;
      const points = [...new Set([0, cut, boundary, stream.length])].sort((a, b) => a - b);
      for (let i = 0; i + 1 < points.length; i++) {
        pieces.push([stream.subarray(points[i]!, points[i + 1]!), points[i] === boundary ? [42] : []]);
      }
      const got = [];
      for (const [chunk, fds] of pieces) {
        d.push(chunk, fds);
        for (let m = d.next(); m; m = d.next()) got.push(m);
      }
      expect(got.map((m) => m.request)).toEqual([Req.GET_FEATURES, Req.SET_VRING_CALL, Req.SET_VRING_NUM]);
      expect(got.map((m) => m.fds)).toEqual([[], [42], []]);
      expect(needsReply(got[1]!)).toBe(true);
      expect(decodeVringState(got[2]!.payload)).toEqual({ index: 0, num: 128 });
      expect(d.buffered).toBe(0);
    }
  });

  it('fails on a bad version or an oversized payload and hands back held fds', () => {
    const d = new MessageDecoder();
    const bad = encodeRequest(Req.SET_OWNER);
    bad.writeUInt32LE(0x2, 4);
    d.push(bad, [7]);
    expect(() => d.next()).toThrow(/version/);
    expect(() => d.next()).toThrow(VhostUserProtocolError);
    expect(d.takeFds()).toEqual([7]);

    const d2 = new MessageDecoder();
    const huge = Buffer.alloc(12);
    huge.writeUInt32LE(Req.SET_CONFIG, 0);
    huge.writeUInt32LE(1, 4);
    huge.writeUInt32LE(1 << 20, 8);
    d2.push(huge);
    expect(() => d2.next()).toThrow(/too large/);
  });

  it('refuses more than 8 fds with one message', () => {
    const d = new MessageDecoder();
    d.push(encodeRequest(Req.SET_MEM_TABLE, encodeMemoryTable([])), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(() => d.next()).toThrow(/9 fds/);
    expect(d.takeFds()).toHaveLength(9);
  });

  it('says how many bytes to read so that one read never spans two messages', () => {
    const d = new MessageDecoder();
    const m = encodeRequest(Req.SET_VRING_NUM, encodeVringState({ index: 1, num: 256 }));
    expect(d.bytesWanted()).toBe(12);
    d.push(m.subarray(0, 5));
    expect(d.bytesWanted()).toBe(7);
    d.push(m.subarray(5, 12));
    expect(d.next()).toBeNull();
    expect(d.bytesWanted()).toBe(8);
    d.push(m.subarray(12));
    expect(d.next()!.request).toBe(Req.SET_VRING_NUM);
    expect(d.bytesWanted()).toBe(12);
  });

  it('encodes replies with the reply flag', () => {
    const r = encodeReply(Req.GET_FEATURES, encodeU64(bits(32, 30)));
    expect(r.readUInt32LE(0)).toBe(1);
    expect(r.readUInt32LE(4)).toBe(0x5);
    expect(r.readUInt32LE(8)).toBe(8);
    expect(encodeRequest(Req.SET_OWNER, undefined, true).readUInt32LE(4)).toBe(1 | FLAG_NEED_REPLY);
  });
});
