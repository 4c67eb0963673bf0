/**
 * Properties of the vhost-user message codec (fast-check), pure: no socket.
 * Message streams round-trip however they are read, each message gets
 * exactly the fds that arrived within its bytes, a reader that reads
 * `bytesWanted()` at a time never spans two messages, arbitrary bytes give
 * only VhostUserProtocolError and no fd is lost or duplicated, and every
 * payload codec round-trips and refuses malformed payloads with
 * VhostUserProtocolError.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
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
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  HEADER_SIZE,
  MAX_CONFIG_SIZE,
  MAX_FDS_PER_MESSAGE,
  MAX_MEM_REGIONS,
  MAX_PAYLOAD_SIZE,
  MessageDecoder,
  VHOST_USER_VERSION,
  type VhostUserMessage,
  VhostUserProtocolError,
} from '../../../src/device/transport/vhost-user/messages.js';
import { vsockConfigSpace } from '../../../src/device/transport/vhost-user/vsock-device.js';
import { bytesArb, cutsArb, propParams, splitAt, thrown } from '../../support/prop.js';

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

interface Sent {
  request: number;
  flags: number;
  payload: Buffer;
  fds: number[];
}

/** Valid messages (version 1), each with up to 3 fds; fd numbers are labels here, never opened. */
const messagesArb: fc.Arbitrary<Sent[]> = fc
  .array(
    fc.record({
      request: fc.integer({ min: 0, max: 60 }),
      flags: u32.map((f) => ((f & ~0x3) | VHOST_USER_VERSION) >>> 0),
      payload: fc.oneof(
        bytesArb(64),
        fc.integer({ min: 0, max: MAX_PAYLOAD_SIZE }).map((n) => Buffer.alloc(n, 1)),
      ),
      fdCount: fc.integer({ min: 0, max: 3 }),
    }),
    { maxLength: 6 },
  )
  .map((ms) => {
    let nextFd = 100;
    return ms.map(({ fdCount, ...m }) => ({ ...m, fds: Array.from({ length: fdCount }, () => nextFd++) }));
  });

function drain(d: MessageDecoder, into: VhostUserMessage[]): void {
  for (let m = d.next(); m !== null; m = d.next()) into.push(m);
}

const shape = (m: VhostUserMessage | Sent) => ({
  request: m.request,
  flags: m.flags,
  payload: m.payload.toString('base64'),
  fds: m.fds,
});

describe('MessageDecoder properties', () => {
  it('a reader taking bytesWanted() at a time gets every message with its own fds and never spans two', () => {
    fc.assert(
      fc.property(messagesArb, fc.array(fc.integer({ min: 1, max: 5000 })), (sent, limits) => {
        const d = new MessageDecoder();
        const got: VhostUserMessage[] = [];
        let read = 0;
        let k = 0;
        for (const m of sent) {
          const wire = encodeMessage(m.request, m.flags, m.payload);
          let off = 0;
          while (off < wire.length) {
            // Like recvmsg with a buffer of bytesWanted() bytes, sometimes returning fewer.
            const want = d.bytesWanted();
            expect(want).toBeGreaterThan(0);
            expect(want).toBeLessThanOrEqual(wire.length - off); // a read of `want` bytes stays in this message
            const n = Math.min(want, limits.length ? limits[k++ % limits.length]! : want);
            d.push(wire.subarray(off, off + n), off === 0 ? m.fds : []);
            off += n;
            read += n;
            drain(d, got);
          }
        }
        expect(got.map(shape)).toEqual(sent.map(shape));
        expect(d.buffered).toBe(0);
        expect(d.takeFds()).toEqual([]);
        expect(read).toBe(sent.reduce((s, m) => s + HEADER_SIZE + m.payload.length, 0));
      }),
      propParams({ numRuns: 150 }),
    );
  });

  it('arbitrary chunking gives the same messages, with fds keyed by the offset they arrived at', () => {
    fc.assert(
      fc.property(messagesArb, cutsArb, (sent, cuts) => {
        const wire = Buffer.concat(sent.map((m) => encodeMessage(m.request, m.flags, m.payload)));
        const starts: number[] = [];
        let at = 0;
        for (const m of sent) {
          starts.push(at);
          at += HEADER_SIZE + m.payload.length;
        }
        const d = new MessageDecoder();
        const got: VhostUserMessage[] = [];
        let off = 0;
        for (const chunk of splitAt(wire, [...cuts, ...starts])) {
          const i = starts.indexOf(off);
          // Each message's fds come with the chunk that starts at its first byte (starts are cut points).
          d.push(chunk, i !== -1 && chunk.length > 0 ? sent[i]!.fds : []);
          off += chunk.length;
          drain(d, got);
        }
        expect(got.map(shape)).toEqual(sent.map(shape));
      }),
      propParams({ numRuns: 150 }),
    );
  });

  it('arbitrary bytes and fds: messages or VhostUserProtocolError, and every fd is handed out exactly once', () => {
    const chunk = fc.record({ bytes: bytesArb(40), fds: fc.integer({ min: 0, max: 9 }) });
    fc.assert(
      fc.property(fc.array(chunk, { maxLength: 8 }), (chunks) => {
        const d = new MessageDecoder();
        const got: VhostUserMessage[] = [];
        let nextFd = 3;
        const pushed: number[] = [];
        let error: unknown;
        for (const c of chunks) {
          const fds = Array.from({ length: c.fds }, () => nextFd++);
          pushed.push(...fds);
          d.push(c.bytes, fds);
          error = thrown(() => drain(d, got));
          if (error !== undefined) break;
        }
        if (error !== undefined) {
          expect(error).toBeInstanceOf(VhostUserProtocolError);
          expect(thrown(() => d.next())).toBe(error); // the decoder stays failed
        }
        for (const m of got) {
          expect(m.fds.length).toBeLessThanOrEqual(MAX_FDS_PER_MESSAGE);
          expect(m.payload.length).toBeLessThanOrEqual(MAX_PAYLOAD_SIZE);
        }
        const handedOut = [...got.flatMap((m) => m.fds), ...d.takeFds()].sort((a, b) => a - b);
        expect(handedOut).toEqual(pushed);
      }),
      propParams(),
    );
  });

  it('a declared payload over the limit fails before the payload is buffered', () => {
    fc.assert(
      fc.property(
        u32.filter((s) => s > MAX_PAYLOAD_SIZE),
        (size) => {
          const head = Buffer.alloc(HEADER_SIZE);
          head.writeUInt32LE(1, 0);
          head.writeUInt32LE(VHOST_USER_VERSION, 4);
          head.writeUInt32LE(size, 8);
          const d = new MessageDecoder();
          d.push(head);
          expect(d.bytesWanted()).toBeLessThanOrEqual(MAX_PAYLOAD_SIZE);
          expect(thrown(() => d.next())).toBeInstanceOf(VhostUserProtocolError);
        },
      ),
      propParams({ numRuns: 50 }),
    );
  });
});

describe('payload codec properties', () => {
  it('u64, vring fd, vring state and vring address round-trip', () => {
    const addr = fc.record({
      index: u32,
      flags: u32,
      descUserAddr: u64,
      usedUserAddr: u64,
      availUserAddr: u64,
      logGuestAddr: u64,
    });
    fc.assert(
      fc.property(
        u64,
        fc.integer({ min: 0, max: 255 }),
        fc.boolean(),
        u32,
        u32,
        addr,
        (v, index, noFd, i, num, a) => {
          expect(decodeU64(encodeU64(v))).toBe(v);
          expect(decodeVringFd(encodeVringFd({ index, noFd }))).toEqual({ index, noFd });
          expect(decodeVringState(encodeVringState({ index: i, num }))).toEqual({ index: i, num });
          expect(decodeVringAddr(encodeVringAddr(a))).toEqual(a);
        },
      ),
      propParams(),
    );
  });

  it('memory tables of 0..8 regions and config spaces of 0..256 bytes round-trip', () => {
    const region = fc.record({ guestPhysAddr: u64, memorySize: u64, userspaceAddr: u64, mmapOffset: u64 });
    const config = fc.record({ offset: u32, flags: u32, payload: bytesArb(MAX_CONFIG_SIZE) });
    fc.assert(
      fc.property(fc.array(region, { maxLength: MAX_MEM_REGIONS }), config, (regions, cfg) => {
        expect(decodeMemoryTable(encodeMemoryTable(regions))).toEqual(regions);
        const back = decodeConfig(encodeConfig(cfg));
        expect(back).toEqual({ ...cfg, size: cfg.payload.length });
      }),
      propParams(),
    );
  });

  it('every payload decoder refuses arbitrary bytes with VhostUserProtocolError only', () => {
    const decoders = [
      decodeU64,
      decodeVringFd,
      decodeVringState,
      decodeVringAddr,
      decodeMemoryTable,
      decodeConfig,
    ];
    const payload = fc.oneof(
      bytesArb(300),
      // A memory table or config header that claims more than follows.
      fc.tuple(u32, bytesArb(80)).map(([n, rest]) => {
        const h = Buffer.alloc(8);
        h.writeUInt32LE(n % 12, 0);
        return Buffer.concat([h, rest]);
      }),
    );
    fc.assert(
      fc.property(payload, (bytes) => {
        for (const decode of decoders) {
          const err = thrown(() => decode(bytes));
          if (err !== undefined) expect(err).toBeInstanceOf(VhostUserProtocolError);
        }
      }),
      propParams(),
    );
  });

  it('GET_CONFIG replies carry the requested window of the guest CID, or an empty payload outside it', () => {
    fc.assert(
      fc.property(u32, u32, u64, (offset, size, cid) => {
        const reply = encodeConfigReply(
          { offset, size, flags: 0, payload: Buffer.alloc(0) },
          vsockConfigSpace(cid),
        );
        const d = new MessageDecoder();
        d.push(reply);
        const cfg = decodeConfig(d.next()!.payload);
        const space = encodeU64(cid);
        if (offset + size <= 8) expect(cfg.payload).toEqual(space.subarray(offset, offset + size));
        else expect(cfg.size).toBe(0);
      }),
      propParams(),
    );
  });
});
