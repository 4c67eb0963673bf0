/**
 * Properties of the hybrid-vsock command codec (fast-check): the parsers
 * agree with a plain restatement of the protocol on inputs close to valid
 * syntax, give the same outcome however the bytes are split, hand back the
 * bytes after the newline untouched, throw nothing but HybridProtocolError
 * on arbitrary bytes, and enforce the 32-byte line and the u32 port range.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeConnect,
  encodeOk,
  encodePassfd,
  encodePassfdPayload,
  HYBRID_MAX_LINE,
  HYBRID_MAX_PASSFD_PAYLOAD,
  HybridCommandParser,
  HybridProtocolError,
  OkReplyParser,
  parsePassfdPayload,
} from '../../src/protocol/hybrid-vsock.js';
import { bytesArb, bytesNear, cutsArb, propParams, splitAt, thrown } from '../support/prop.js';

const U32_MAX = 0xffff_ffff;
const portArb = fc.oneof(fc.integer({ min: 0, max: U32_MAX }), fc.constantFrom(0, 1024, 1027, U32_MAX));
const badPortArb = fc.oneof(
  fc.integer({ min: U32_MAX + 1, max: Number.MAX_SAFE_INTEGER }),
  fc.integer({ min: Number.MIN_SAFE_INTEGER, max: -1 }),
  fc.double({ noInteger: true }),
);

type Outcome =
  | { kind: 'command'; command: unknown; rest: Buffer }
  | { kind: 'error'; code: string }
  | { kind: 'incomplete' };

/** The port rule of the protocol, restated: canonical decimal, no sign, no leading zero, ≤ 2^32 - 1. */
function modelPort(text: string): number | null {
  if (text.length === 0 || text.length > 10) return null;
  for (const ch of text) if (ch < '0' || ch > '9') return null;
  if (text.length > 1 && text[0] === '0') return null;
  const n = Number(text);
  return n <= U32_MAX ? n : null;
}

/** The first line of `input` as the device must read it (see the module comment of hybrid-vsock.ts). */
function modelCommand(input: Buffer): Outcome {
  const nl = input.indexOf(0x0a);
  if (nl === -1 || nl >= HYBRID_MAX_LINE) {
    return input.length >= HYBRID_MAX_LINE || nl !== -1
      ? { kind: 'error', code: 'line-too-long' }
      : { kind: 'incomplete' };
  }
  let line = input.toString('latin1', 0, nl);
  if (line.endsWith('\r')) line = line.slice(0, -1);
  const rest = input.subarray(nl + 1);
  if (line.toLowerCase() === 'passfd') return { kind: 'command', command: { kind: 'passfd' }, rest };
  if (line.slice(0, 8).toLowerCase() === 'connect ') {
    const port = modelPort(line.slice(8));
    return port === null
      ? { kind: 'error', code: 'bad-port' }
      : { kind: 'command', command: { kind: 'connect', port }, rest };
  }
  const word = line.split(/[ \t\r]/, 1)[0]!.toLowerCase();
  return { kind: 'error', code: word === 'connect' || word === 'passfd' ? 'malformed' : 'unknown-command' };
}

/** Feeds `chunks` to a fresh parser; the rest is the completing chunk's rest plus every later chunk. */
function runCommandParser(chunks: Buffer[]): Outcome {
  const p = new HybridCommandParser();
  for (let i = 0; i < chunks.length; i++) {
    let r: ReturnType<HybridCommandParser['push']>;
    try {
      r = p.push(chunks[i]!);
    } catch (err) {
      if (!(err instanceof HybridProtocolError)) throw err;
      expect(thrown(() => p.push(Buffer.from('x')))).toBe(err); // poisoned: the same error again
      expect(thrown(() => p.end())).toBe(err);
      return { kind: 'error', code: err.code };
    }
    expect(p.buffered).toBeLessThan(HYBRID_MAX_LINE);
    if (r !== null) {
      expect(() => p.end()).not.toThrow();
      return { kind: 'command', command: r.command, rest: Buffer.concat([r.rest, ...chunks.slice(i + 1)]) };
    }
  }
  const eof = thrown(() => p.end());
  expect(eof).toBeInstanceOf(HybridProtocolError);
  expect((eof as HybridProtocolError).code).toBe('unexpected-eof');
  return { kind: 'incomplete' };
}

/** Random ASCII case of `word`. */
function anyCase(word: string): fc.Arbitrary<string> {
  return fc
    .array(fc.boolean(), { minLength: word.length, maxLength: word.length })
    .map((up) => [...word].map((ch, i) => (up[i] ? ch.toUpperCase() : ch.toLowerCase())).join(''));
}

/** A keyword-ish word, a separator, a port-ish text, maybe CR, a newline, and stream bytes: mostly one edit from valid. */
const nearlyValidLine = fc
  .tuple(
    fc.oneof(
      anyCase('connect'),
      anyCase('passfd'),
      fc.constantFrom('conect', 'connectt', 'pass fd', '', ' connect'),
    ),
    fc.constantFrom(' ', '', '  ', '\t', ' \r'),
    fc.oneof(
      fc.nat({ max: U32_MAX }).map(String),
      fc.constantFrom('', '0', '00', '+1', '-1', '4294967296', '99999999999', '1 keep', '1\r'),
    ),
    fc.constantFrom('\n', '\r\n', '\r\r\n', '', '\n\n'),
    bytesArb(16),
  )
  .map(([kw, sep, port, end, tail]) =>
    Buffer.concat([
      Buffer.from(`${kw}${kw.toLowerCase().startsWith('passfd') ? '' : sep + port}${end}`, 'latin1'),
      tail,
    ]),
  );

describe('HybridCommandParser properties', () => {
  it('agrees with the protocol restated, however the input is split', () => {
    const near = fc.oneof(bytesNear('connectpasfdCONNECTPASFD 0123456789\r\n\t', 40), nearlyValidLine);
    fc.assert(
      fc.property(near, cutsArb, (input, cuts) => {
        expect(runCommandParser(splitAt(input, cuts))).toEqual(modelCommand(input));
      }),
      propParams(),
    );
  });

  it('throws only HybridProtocolError on arbitrary bytes, with the same outcome for every split', () => {
    fc.assert(
      fc.property(bytesArb(80), cutsArb, (input, cuts) => {
        expect(runCommandParser(splitAt(input, cuts))).toEqual(runCommandParser([input]));
      }),
      propParams(),
    );
  });

  it('CONNECT <u32> in any case, with CRLF or LF, round-trips and hands back the following bytes', () => {
    fc.assert(
      fc.property(
        portArb,
        anyCase('connect'),
        fc.boolean(),
        bytesArb(64),
        cutsArb,
        (port, kw, crlf, tail, cuts) => {
          const line = Buffer.from(`${kw} ${port}${crlf ? '\r' : ''}\n`, 'latin1');
          const out = runCommandParser(splitAt(Buffer.concat([line, tail]), cuts));
          expect(out).toEqual({ kind: 'command', command: { kind: 'connect', port }, rest: tail });
          expect(modelCommand(encodeConnect(port))).toMatchObject({ command: { kind: 'connect', port } });
        },
      ),
      propParams(),
    );
  });

  it('passfd in any case round-trips; ports past 2^32 - 1 or with a sign or leading zero are bad-port', () => {
    fc.assert(
      fc.property(anyCase('passfd'), fc.bigInt({ min: 2n ** 32n, max: 10n ** 11n }), (kw, big) => {
        expect(runCommandParser([Buffer.from(`${kw}\n`)])).toMatchObject({ command: { kind: 'passfd' } });
        for (const text of [`${big}`, `+1`, `01`, `-0`, ` 1`]) {
          expect(runCommandParser([Buffer.from(`CONNECT ${text}\n`)])).toEqual({
            kind: 'error',
            code: 'bad-port',
          });
        }
      }),
      propParams({ numRuns: 50 }),
    );
    expect(runCommandParser([encodePassfd()])).toMatchObject({ command: { kind: 'passfd' } });
  });

  it('never holds 32 bytes without a newline: line-too-long at the 32nd, however it is split', () => {
    const noNewline = fc
      .uint8Array({ minLength: HYBRID_MAX_LINE, maxLength: 200 })
      .map((u) => Buffer.from(u.map((x) => (x === 0x0a ? 0x20 : x))));
    fc.assert(
      fc.property(noNewline, cutsArb, (input, cuts) => {
        expect(runCommandParser(splitAt(input, cuts))).toEqual({ kind: 'error', code: 'line-too-long' });
      }),
      propParams(),
    );
  });
});

describe('OkReplyParser properties', () => {
  it('OK <u32> round-trips for every split, with the following bytes handed back', () => {
    fc.assert(
      fc.property(portArb, bytesArb(32), cutsArb, (port, tail, cuts) => {
        const p = new OkReplyParser();
        let got: ReturnType<OkReplyParser['push']> = null;
        const chunks = splitAt(Buffer.concat([encodeOk(port), tail]), cuts);
        let i = 0;
        while (got === null && i < chunks.length) got = p.push(chunks[i++]!);
        expect(got?.port).toBe(port);
        expect(Buffer.concat([got!.rest, ...chunks.slice(i)])).toEqual(tail);
      }),
      propParams(),
    );
  });

  it('throws only HybridProtocolError on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.oneof(bytesArb(64), bytesNear('OK 0123456789\r\n', 40)), cutsArb, (input, cuts) => {
        const p = new OkReplyParser();
        const err = thrown(() => {
          for (const c of splitAt(input, cuts)) if (p.push(c) !== null) return;
          p.end();
        });
        if (err !== undefined) expect(err).toBeInstanceOf(HybridProtocolError);
      }),
      propParams(),
    );
  });
});

describe('passfd payload properties', () => {
  it('"<port>[ keep]" with or without a newline round-trips', () => {
    fc.assert(
      fc.property(portArb, fc.boolean(), fc.boolean(), (port, keep, nl) => {
        const payload = encodePassfdPayload(port, keep);
        expect(payload.length).toBeLessThanOrEqual(HYBRID_MAX_PASSFD_PAYLOAD);
        const wire = nl ? Buffer.concat([payload, Buffer.from('\n')]) : payload;
        expect(parsePassfdPayload(wire)).toEqual({ port, keep });
      }),
      propParams(),
    );
  });

  it('arbitrary payloads parse to a u32 port or throw HybridProtocolError; over 32 bytes is line-too-long', () => {
    const payloadArb = fc.oneof(bytesArb(48), bytesNear('0123456789 keep\n', 40));
    fc.assert(
      fc.property(payloadArb, (payload) => {
        const err = thrown(() => {
          const r = parsePassfdPayload(payload);
          expect(Number.isInteger(r.port) && r.port >= 0 && r.port <= U32_MAX).toBe(true);
          const text = payload.toString('latin1').replace(/\n$/, '');
          expect(text).toBe(r.keep ? `${r.port} keep` : `${r.port}`);
        });
        if (err === undefined) return;
        expect(err).toBeInstanceOf(HybridProtocolError);
        if (payload.length > HYBRID_MAX_PASSFD_PAYLOAD)
          expect((err as HybridProtocolError).code).toBe('line-too-long');
      }),
      propParams(),
    );
  });
});

describe('encoders', () => {
  it('refuse ports outside [0, 2^32 - 1] with RangeError (a caller bug, not peer input)', () => {
    fc.assert(
      fc.property(badPortArb, (port) => {
        for (const enc of [encodeConnect, encodeOk, (p: number) => encodePassfdPayload(p, true)]) {
          expect(thrown(() => enc(port))).toBeInstanceOf(RangeError);
        }
      }),
      propParams(),
    );
  });
});
