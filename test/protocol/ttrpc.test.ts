import { create, equals, fromBinary, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import {
  encodeFrame,
  encodeFrameHeader,
  GrpcCode,
  KeyValueSchema,
  RequestSchema,
  ResponseSchema,
  StatusSchema,
  TTRPC_HEADER_SIZE,
  TTRPC_MAX_PAYLOAD,
  TtrpcFlag,
  type TtrpcFrame,
  TtrpcFrameDecoder,
  TtrpcMessageType,
  TtrpcProtocolError,
  type TtrpcProtocolErrorCode,
} from '../../src/protocol/ttrpc.js';

function expectCode(fn: () => unknown, code: TtrpcProtocolErrorCode): TtrpcProtocolError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TtrpcProtocolError);
    expect((e as TtrpcProtocolError).code).toBe(code);
    return e as TtrpcProtocolError;
  }
  throw new Error(`expected TtrpcProtocolError ${code}, nothing thrown`);
}

function decodeAll(chunks: Buffer[]): TtrpcFrame[] {
  const d = new TtrpcFrameDecoder();
  const frames = chunks.flatMap((c) => d.push(c));
  d.end();
  return frames.map((f) => ({ ...f, payload: Buffer.from(f.payload) }));
}

describe('constants', () => {
  it('match containerd/ttrpc', () => {
    expect(TTRPC_HEADER_SIZE).toBe(10);
    expect(TTRPC_MAX_PAYLOAD).toBe(4 * 1024 * 1024);
    expect(TtrpcMessageType).toEqual({ REQUEST: 1, RESPONSE: 2, DATA: 3 });
    expect(TtrpcFlag).toEqual({ REMOTE_CLOSED: 1, REMOTE_OPEN: 2, NO_DATA: 4 });
    expect(GrpcCode.UNIMPLEMENTED).toBe(12);
    expect(GrpcCode.RESOURCE_EXHAUSTED).toBe(8);
  });
});

describe('encodeFrame', () => {
  it('writes the exact header layout (big-endian length and stream id)', () => {
    const f = encodeFrame(1, TtrpcMessageType.REQUEST, Buffer.from('abc'));
    expect(f.toString('hex')).toBe(`00000003` + `00000001` + `01` + `00` + `616263`);
    const g = encodeFrame(
      0x01020304,
      TtrpcMessageType.DATA,
      new Uint8Array(0),
      TtrpcFlag.REMOTE_CLOSED | TtrpcFlag.NO_DATA,
    );
    expect(g.toString('hex')).toBe('00000000' + '01020304' + '03' + '05');
    const h = encodeFrame(0xffff_ffff, TtrpcMessageType.RESPONSE, Buffer.alloc(0x1234, 7));
    expect(h.subarray(0, 10).toString('hex')).toBe('00001234' + 'ffffffff' + '02' + '00');
  });

  it('writes a header into a caller buffer', () => {
    const buf = Buffer.alloc(16, 0xaa);
    encodeFrameHeader(300, 5, TtrpcMessageType.RESPONSE, 0, buf, 3);
    expect(buf.toString('hex')).toBe(`aaaaaa${'0000012c' + '00000005' + '02' + '00'}aaa`.padEnd(32, 'a'));
  });

  it('accepts exactly 4 MiB and refuses more', () => {
    expect(encodeFrame(1, 1, Buffer.alloc(TTRPC_MAX_PAYLOAD)).length).toBe(TTRPC_MAX_PAYLOAD + 10);
    const e = expectCode(() => encodeFrame(3, 1, Buffer.alloc(TTRPC_MAX_PAYLOAD + 1)), 'frame-too-large');
    expect(e.streamId).toBe(3);
    expect(e.length).toBe(TTRPC_MAX_PAYLOAD + 1);
  });

  it('refuses out-of-range header fields', () => {
    expect(() => encodeFrame(-1, 1, Buffer.alloc(0))).toThrow(RangeError);
    expect(() => encodeFrame(2 ** 32, 1, Buffer.alloc(0))).toThrow(RangeError);
    expect(() => encodeFrame(1, 256, Buffer.alloc(0))).toThrow(RangeError);
    expect(() => encodeFrame(1, 1, Buffer.alloc(0), -1)).toThrow(RangeError);
    expect(() => encodeFrameHeader(0, 1, 1, 0, Buffer.alloc(9))).toThrow(RangeError);
  });
});

describe('TtrpcFrameDecoder', () => {
  const stream = Buffer.concat([
    encodeFrame(1, TtrpcMessageType.REQUEST, Buffer.from('first')),
    encodeFrame(1, TtrpcMessageType.RESPONSE, Buffer.alloc(0)),
    encodeFrame(3, TtrpcMessageType.DATA, Buffer.from('x'.repeat(300)), TtrpcFlag.REMOTE_CLOSED),
    encodeFrame(5, 0x7f, Buffer.from([0, 1, 2])), // unknown type: passed through
  ]);
  const want: TtrpcFrame[] = [
    { streamId: 1, type: 1, flags: 0, payload: Buffer.from('first') },
    { streamId: 1, type: 2, flags: 0, payload: Buffer.alloc(0) },
    { streamId: 3, type: 3, flags: 1, payload: Buffer.from('x'.repeat(300)) },
    { streamId: 5, type: 0x7f, flags: 0, payload: Buffer.from([0, 1, 2]) },
  ];

  it('decodes several frames from one chunk', () => {
    expect(decodeAll([stream])).toEqual(want);
  });

  it('decodes the stream split at every byte position', () => {
    for (let i = 0; i <= stream.length; i++) {
      expect(decodeAll([stream.subarray(0, i), stream.subarray(i)])).toEqual(want);
    }
  });

  it('decodes the stream split at every pair of positions (three chunks)', () => {
    for (let i = 0; i <= 40; i++) {
      for (let j = i; j <= stream.length; j += 7) {
        expect(decodeAll([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)])).toEqual(want);
      }
    }
  });

  it('decodes the stream fed one byte at a time', () => {
    expect(decodeAll([...stream].map((x) => Buffer.from([x])))).toEqual(want);
  });

  it('returns views for whole frames and tracks buffered bytes', () => {
    const d = new TtrpcFrameDecoder();
    const [f] = d.push(stream.subarray(0, 15));
    expect(f!.payload.buffer).toBe(stream.buffer); // no copy
    expect(d.buffered).toBe(0);
    expect(d.push(stream.subarray(15, 20))).toEqual([]);
    expect(d.buffered).toBe(5);
  });

  it('assembles a 4 MiB frame from 64 KiB chunks', () => {
    const payload = Buffer.alloc(TTRPC_MAX_PAYLOAD);
    for (let i = 0; i < payload.length; i += 4) payload.writeUInt32LE(i, i);
    const frame = encodeFrame(7, TtrpcMessageType.REQUEST, payload);
    const d = new TtrpcFrameDecoder();
    const frames: TtrpcFrame[] = [];
    for (let i = 0; i < frame.length; i += 65536) frames.push(...d.push(frame.subarray(i, i + 65536)));
    expect(frames).toHaveLength(1);
    expect(frames[0]!.streamId).toBe(7);
    expect(frames[0]!.payload.equals(payload)).toBe(true);
  });

  it('rejects a declared length over 4 MiB and stays poisoned', () => {
    const bad = Buffer.from('00400001' + '00000009' + '01' + '00', 'hex');
    for (let i = 0; i <= bad.length; i++) {
      const d = new TtrpcFrameDecoder();
      const good = encodeFrame(1, 1, Buffer.from('ok'));
      const e = expectCode(() => {
        expect(d.push(good)).toHaveLength(1);
        d.push(bad.subarray(0, i));
        d.push(bad.subarray(i));
      }, 'frame-too-large');
      expect(e.streamId).toBe(9);
      expect(e.length).toBe(TTRPC_MAX_PAYLOAD + 1);
      expect(() => d.push(good)).toThrow(e);
      expect(() => d.end()).toThrow(e);
    }
  });

  it('reports truncation at EOF', () => {
    const d = new TtrpcFrameDecoder();
    d.push(stream.subarray(0, 4));
    expectCode(() => d.end(), 'truncated');
    const d2 = new TtrpcFrameDecoder();
    d2.push(stream.subarray(0, 12));
    const e = expectCode(() => d2.end(), 'truncated');
    expect(e.streamId).toBe(1);
    expect(() => new TtrpcFrameDecoder().end()).not.toThrow();
  });
});

describe('ttrpc envelope messages', () => {
  it('encode Request with containerd/ttrpc field numbers', () => {
    const req = create(RequestSchema, {
      service: 's',
      method: 'm',
      payload: new Uint8Array([0xaa]),
      timeoutNano: 5n,
      metadata: [create(KeyValueSchema, { key: 'k', value: 'v' })],
    });
    const bytes = Buffer.from(toBinary(RequestSchema, req));
    // 1:string "s", 2:string "m", 3:bytes [aa], 4:varint 5, 5:msg {1:"k", 2:"v"}
    expect(bytes.toString('hex')).toBe(
      '0a0173' + '12016d' + '1a01aa' + '2005' + '2a06' + '0a016b' + '120176',
    );
    expect(equals(RequestSchema, fromBinary(RequestSchema, bytes), req)).toBe(true);
  });

  it('encode Response with google.rpc.Status', () => {
    const res = create(ResponseSchema, {
      status: create(StatusSchema, { code: GrpcCode.NOT_FOUND, message: 'no' }),
      payload: new Uint8Array([1]),
    });
    const bytes = Buffer.from(toBinary(ResponseSchema, res));
    // 1:msg {1:varint 5, 2:"no"}, 2:bytes [01]
    expect(bytes.toString('hex')).toBe('0a06' + '0805' + '12026e6f' + '120101');
    expect(equals(ResponseSchema, fromBinary(ResponseSchema, bytes), res)).toBe(true);
  });

  it('rejects a malformed envelope', () => {
    expect(() => fromBinary(RequestSchema, Buffer.from('0a05ab', 'hex'))).toThrow();
  });

  it('carries a Request through a frame', () => {
    const payload = toBinary(
      RequestSchema,
      create(RequestSchema, { service: 'grpc.AgentService', method: 'WaitProcess' }),
    );
    const [frame] = decodeAll([encodeFrame(1, TtrpcMessageType.REQUEST, payload)]);
    const req = fromBinary(RequestSchema, frame!.payload);
    expect(req.service).toBe('grpc.AgentService');
    expect(req.method).toBe('WaitProcess');
  });
});
