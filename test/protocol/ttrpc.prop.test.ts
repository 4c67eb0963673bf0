/**
 * Properties of the ttrpc frame codec and envelopes (fast-check): frame
 * sequences round-trip however the byte stream is split; arbitrary bytes
 * give the frames of the protocol restated (10-byte header, length counts
 * the payload), the same error whatever the split, and nothing but
 * TtrpcProtocolError; the 4 MiB cap holds in both directions; the
 * Request/Response envelopes round-trip through protobuf-es.
 */
import { equals, fromBinary, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeFrame,
  encodeFrameHeader,
  RequestSchema,
  ResponseSchema,
  TTRPC_HEADER_SIZE,
  TTRPC_MAX_PAYLOAD,
  type TtrpcFrame,
  TtrpcFrameDecoder,
  TtrpcProtocolError,
} from '../../src/protocol/ttrpc.js';
import { bytesArb, cutsArb, propParams, splitAt, thrown } from '../support/prop.js';
import { messageArb } from '../support/proto-arbitrary.js';

const frameArb: fc.Arbitrary<TtrpcFrame> = fc.record({
  streamId: fc.integer({ min: 0, max: 0xffff_ffff }),
  type: fc.integer({ min: 0, max: 255 }),
  flags: fc.integer({ min: 0, max: 255 }),
  payload: fc.oneof(
    { weight: 4, arbitrary: bytesArb(64) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 70_000 }).map((n) => Buffer.alloc(n, n & 0xff)) },
  ),
});

interface Decoded {
  /** Payloads as base64: cheap to compare when they are tens of KiB. */
  frames: { streamId: number; type: number; flags: number; payload: string }[];
  /** 'frame-too-large' from a push, 'truncated' from end(), or none. */
  error?: string;
  errorStream?: number | undefined;
}

/** Pushes `chunks`, then ends. */
function decodeAll(chunks: Buffer[]): Decoded {
  const d = new TtrpcFrameDecoder();
  const frames: Decoded['frames'] = [];
  try {
    for (const c of chunks) {
      for (const f of d.push(c)) frames.push({ ...f, payload: f.payload.toString('base64') });
      expect(d.buffered).toBeLessThanOrEqual(TTRPC_HEADER_SIZE + TTRPC_MAX_PAYLOAD);
    }
    d.end();
  } catch (err) {
    if (!(err instanceof TtrpcProtocolError)) throw err;
    expect(thrown(() => d.push(Buffer.alloc(1)))).toBe(err); // poisoned
    return { frames, error: err.code, errorStream: err.streamId };
  }
  return { frames };
}

/** The protocol restated: frames one after another; a header over 4 MiB is an error; a cut frame is 'truncated'. */
function modelDecode(input: Buffer): Decoded {
  const frames: Decoded['frames'] = [];
  let pos = 0;
  while (input.length - pos >= TTRPC_HEADER_SIZE) {
    const length = input.readUInt32BE(pos);
    const streamId = input.readUInt32BE(pos + 4);
    if (length > TTRPC_MAX_PAYLOAD) return { frames, error: 'frame-too-large', errorStream: streamId };
    if (input.length - pos - TTRPC_HEADER_SIZE < length) break;
    frames.push({
      streamId,
      type: input[pos + 8]!,
      flags: input[pos + 9]!,
      payload: input.toString('base64', pos + TTRPC_HEADER_SIZE, pos + TTRPC_HEADER_SIZE + length),
    });
    pos += TTRPC_HEADER_SIZE + length;
  }
  return pos === input.length ? { frames } : { frames, error: 'truncated', errorStream: undefined };
}

/**
 * Frames that complete in the same push as an oversized header are not
 * returned (the push throws): the decoded frames are then a prefix of the
 * model's. Without an error they are exactly the model's.
 */
function expectMatchesModel(got: Decoded, want: Decoded): void {
  expect(got.error).toBe(want.error);
  if (want.error === 'frame-too-large') {
    expect(got.errorStream).toBe(want.errorStream);
    expect(want.frames.slice(0, got.frames.length)).toEqual(got.frames);
  } else {
    expect(got.frames).toEqual(want.frames);
  }
}

describe('ttrpc frame properties', () => {
  it('a sequence of frames round-trips however the stream is split', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 8 }), cutsArb, (frames, cuts) => {
        const wire = Buffer.concat(frames.map((f) => encodeFrame(f.streamId, f.type, f.payload, f.flags)));
        const want = frames.map((f) => ({ ...f, payload: f.payload.toString('base64') }));
        expect(decodeAll(splitAt(wire, cuts))).toEqual({ frames: want });
      }),
      propParams({ numRuns: 150 }),
    );
  });

  it('arbitrary bytes decode as the protocol says, with the same error whatever the split', () => {
    // Frame-shaped noise: headers with small or huge lengths followed by some bytes.
    const header = fc
      .tuple(
        fc.oneof(
          fc.integer({ min: 0, max: 40 }),
          fc.integer({ min: TTRPC_MAX_PAYLOAD - 2, max: 0xffff_ffff }),
        ),
        fc.integer({ min: 0, max: 0xffff_ffff }),
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 255 }),
      )
      .map(([len, id, type, flags]) => {
        const h = Buffer.alloc(TTRPC_HEADER_SIZE);
        h.writeUInt32BE(len, 0);
        h.writeUInt32BE(id, 4);
        h[8] = type;
        h[9] = flags;
        return h;
      });
    const noise = fc
      .array(fc.oneof(header, bytesArb(48)), { maxLength: 6 })
      .map((parts) => Buffer.concat(parts));
    fc.assert(
      fc.property(fc.oneof(noise, bytesArb(128)), cutsArb, (input, cuts) => {
        expectMatchesModel(decodeAll(splitAt(input, cuts)), modelDecode(input));
      }),
      propParams(),
    );
  });

  it('refuses to encode a payload over 4 MiB; 4 MiB exactly decodes', () => {
    const max = Buffer.alloc(TTRPC_MAX_PAYLOAD, 7);
    expect(thrown(() => encodeFrame(1, 1, Buffer.alloc(TTRPC_MAX_PAYLOAD + 1)))).toMatchObject({
      code: 'frame-too-large',
    });
    expect(thrown(() => encodeFrameHeader(TTRPC_MAX_PAYLOAD + 1, 3, 1))).toBeInstanceOf(TtrpcProtocolError);
    const wire = encodeFrame(5, 1, max);
    const got = decodeAll(splitAt(wire, [1, 9, 1000, 3_000_000]));
    expect(got.frames).toHaveLength(1);
    expect(got.frames[0]!.payload).toBe(max.toString('base64'));
  });

  it('encoders refuse a stream id, type or flags out of range with RangeError', () => {
    const bad = fc.oneof(fc.integer({ min: -1000, max: -1 }), fc.double({ noInteger: true, noNaN: true }));
    fc.assert(
      fc.property(bad, fc.integer({ min: 256, max: 100_000 }), (x, big) => {
        expect(thrown(() => encodeFrame(x, 1, Buffer.alloc(0)))).toBeInstanceOf(RangeError);
        expect(thrown(() => encodeFrame(1, big, Buffer.alloc(0)))).toBeInstanceOf(RangeError);
        expect(thrown(() => encodeFrame(1, 1, Buffer.alloc(0), big))).toBeInstanceOf(RangeError);
      }),
      propParams({ numRuns: 100 }),
    );
  });
});

describe('ttrpc envelope properties', () => {
  it('Request and Response round-trip through the wire format', () => {
    fc.assert(
      fc.property(messageArb(RequestSchema), messageArb(ResponseSchema), (req, res) => {
        expect(equals(RequestSchema, fromBinary(RequestSchema, toBinary(RequestSchema, req)), req)).toBe(
          true,
        );
        expect(equals(ResponseSchema, fromBinary(ResponseSchema, toBinary(ResponseSchema, res)), res)).toBe(
          true,
        );
      }),
      propParams(),
    );
  });

  it('decoding arbitrary bytes as a Request returns a message or throws an Error', () => {
    fc.assert(
      fc.property(bytesArb(96), (bytes) => {
        const err = thrown(() => fromBinary(RequestSchema, bytes));
        if (err !== undefined) expect(err).toBeInstanceOf(Error);
      }),
      propParams(),
    );
  });
});
