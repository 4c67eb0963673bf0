/**
 * Properties of the AF_VSOCK stand-in protocol codec (fast-check): requests
 * and replies round-trip, every encoded reply is one line the other side's
 * splitter accepts, the parsers throw nothing but StandinProtocolError on
 * arbitrary input, and the line splitter yields the same lines however a
 * stream is split, refusing lines over 128 bytes.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeReply,
  encodeRequest,
  LineSplitter,
  parseReply,
  parseRequest,
  STANDIN_MAX_LINE,
  StandinProtocolError,
  type StandinReply,
} from '../../src/protocol/vsock-standin.js';
import { bytesArb, bytesNear, cutsArb, propParams, splitAt, thrown } from '../support/prop.js';

const U32_MAX = 0xffff_ffff;
const u32 = fc.oneof(fc.integer({ min: 0, max: U32_MAX }), fc.constantFrom(0, 1024, U32_MAX));
const errnoName = fc.stringMatching(/^E[A-Z]{1,14}$/);

const replyArb: fc.Arbitrary<StandinReply> = fc.oneof(
  u32.map((port) => ({ kind: 'ok' as const, port })),
  fc.tuple(u32, u32).map(([peerPort, peerCid]) => ({ kind: 'accept' as const, peerPort, peerCid })),
  fc
    .tuple(errnoName, fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'binary', maxLength: 200 })))
    .map(([code, message]) => ({ kind: 'err' as const, code, message })),
);

/** Feeds `chunks` to one splitter; the lines it yielded, and whether it refused the stream. */
function splitLines(chunks: Buffer[]): { lines: string[]; refused: boolean } {
  const s = new LineSplitter();
  const lines: string[] = [];
  // An empty push at the end asks whether the splitter has refused the stream meanwhile.
  for (const c of [...chunks, Buffer.alloc(0)]) {
    let got: string[];
    try {
      got = s.push(c);
    } catch (err) {
      expect(err).toBeInstanceOf(StandinProtocolError);
      return { lines, refused: true };
    }
    expect(s.buffered).toBeLessThanOrEqual(STANDIN_MAX_LINE);
    lines.push(...got);
  }
  return { lines, refused: false };
}

/** The stream's lines as the protocol defines them: up to the first line (complete or not) over 128 bytes. */
function modelLines(input: Buffer): { lines: string[]; refused: boolean } {
  const parts = input.toString('latin1').split('\n');
  const pending = parts.pop()!;
  const bad = parts.findIndex((l) => l.length > STANDIN_MAX_LINE);
  if (bad !== -1) return { lines: parts.slice(0, bad), refused: true };
  return { lines: parts, refused: pending.length > STANDIN_MAX_LINE };
}

describe('stand-in requests', () => {
  it('LISTEN/CONNECT <u32> round-trip as one line', () => {
    fc.assert(
      fc.property(fc.constantFrom('listen' as const, 'connect' as const), u32, (kind, port) => {
        const wire = encodeRequest({ kind, port });
        expect(wire.at(-1)).toBe(0x0a);
        expect(parseRequest(wire.subarray(0, -1).toString('latin1'))).toEqual({ kind, port });
      }),
      propParams(),
    );
  });

  it('arbitrary lines parse to a canonical request or throw StandinProtocolError', () => {
    const lineArb = fc.oneof(
      bytesNear('LISTENCONNECT listenconnect 0123456789', 40).map((b) => b.toString('latin1')),
      fc.string({ maxLength: 60 }),
    );
    fc.assert(
      fc.property(lineArb, (line) => {
        const err = thrown(() => {
          const req = parseRequest(line);
          expect(encodeRequest(req).toString('latin1')).toBe(`${line}\n`);
        });
        if (err !== undefined) expect(err).toBeInstanceOf(StandinProtocolError);
      }),
      propParams(),
    );
  });
});

describe('stand-in replies', () => {
  it('every encoded reply is one line of at most 128 bytes that parses back', () => {
    fc.assert(
      fc.property(replyArb, (reply) => {
        const wire = encodeReply(reply);
        expect(wire.at(-1)).toBe(0x0a);
        expect(wire.indexOf(0x0a)).toBe(wire.length - 1);
        expect(wire.length - 1).toBeLessThanOrEqual(STANDIN_MAX_LINE);
        const { lines, refused } = splitLines([wire]);
        expect(refused).toBe(false);
        expect(lines).toHaveLength(1);
        const back = parseReply(lines[0]!);
        if (reply.kind !== 'err') {
          expect(back).toEqual(reply);
          return;
        }
        expect(back).toMatchObject({ kind: 'err', code: reply.code });
        // The reason travels as printable ASCII, shortened to fit the line; what is kept is its start.
        const sent = reply.message.replace(/\s/g, ' ').replace(/[^\x20-\x7e]/g, '?');
        const kept = (back as { message: string }).message;
        if (`ERR ${reply.code} ${sent}`.length <= STANDIN_MAX_LINE) expect(kept).toBe(sent);
        else expect(sent.startsWith(kept)).toBe(true);
      }),
      propParams(),
    );
  });

  it('arbitrary lines parse to a reply or throw StandinProtocolError', () => {
    const lineArb = bytesNear('OK ACCEPT ERR 0123456789 ECONNREFUSED', 60).map((b) => b.toString('latin1'));
    fc.assert(
      fc.property(lineArb, (line) => {
        const err = thrown(() => parseReply(line));
        if (err !== undefined) expect(err).toBeInstanceOf(StandinProtocolError);
      }),
      propParams(),
    );
  });
});

describe('LineSplitter', () => {
  it('yields the same lines however the stream is split, and refuses a line over 128 bytes', () => {
    const line = fc.oneof(
      { weight: 4, arbitrary: bytesArb(40).map((b) => b.toString('latin1').replace(/\n/g, '')) },
      { weight: 1, arbitrary: fc.integer({ min: 120, max: 300 }).map((n) => 'x'.repeat(n)) },
    );
    const stream = fc
      .tuple(fc.array(line, { maxLength: 6 }), fc.boolean(), bytesArb(8))
      .map(([lines, endsInNewline, noise]) =>
        Buffer.concat([Buffer.from(lines.join('\n') + (endsInNewline ? '\n' : ''), 'latin1'), noise]),
      );
    fc.assert(
      fc.property(stream, cutsArb, (input, cuts) => {
        expect(splitLines(splitAt(input, cuts))).toEqual(modelLines(input));
      }),
      propParams(),
    );
  });

  it('a refused stream stays refused', () => {
    const s = new LineSplitter();
    const first = thrown(() => s.push(Buffer.alloc(STANDIN_MAX_LINE + 1, 0x41)));
    expect(first).toBeInstanceOf(StandinProtocolError);
    expect(thrown(() => s.push(Buffer.from('LISTEN 1\n')))).toBe(first);
  });
});
