/**
 * Properties of Kata's AgentService messages as the agent and the broker
 * encode them (protobuf-es, fast-check): the request and response of every
 * rpc round-trip; fields this subset does not mirror (Kata's storages,
 * shared mounts, anything newer) survive decode and re-encode; decoding
 * arbitrary bytes gives a message or an Error, never a crash of another kind.
 */
import { equals, fromBinary, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { agentMethods, CreateContainerRequestSchema } from '../../src/protocol/agent-api.js';
import { bytesArb, propParams, thrown } from '../support/prop.js';
import { messageArb } from '../support/proto-arbitrary.js';

const methods = Object.values(agentMethods);

/** Encodes an unknown length-delimited field: tag (number << 3 | 2), length, bytes. */
function unknownField(number: number, body: Uint8Array): Buffer {
  const varint = (n: number) => {
    const out: number[] = [];
    while (n > 0x7f) {
      out.push((n & 0x7f) | 0x80);
      n >>>= 7;
    }
    out.push(n);
    return out;
  };
  return Buffer.from([...varint((number << 3) | 2), ...varint(body.length), ...body]);
}

describe('AgentService message properties', () => {
  it.each(methods.map((m) => [m.name, m] as const))('%s request and response round-trip', (_name, m) => {
    fc.assert(
      fc.property(messageArb(m.input), messageArb(m.output), (req, res) => {
        expect(equals(m.input, fromBinary(m.input, toBinary(m.input, req)), req)).toBe(true);
        expect(equals(m.output, fromBinary(m.output, toBinary(m.output, res)), res)).toBe(true);
      }),
      propParams({ numRuns: 100 }),
    );
  });

  it("keeps fields it does not mirror across decode and re-encode (Kata's storages = 5, shared_mounts = 8)", () => {
    fc.assert(
      fc.property(
        messageArb(CreateContainerRequestSchema),
        fc.constantFrom(5, 8, 12, 100),
        fc.uint8Array({ maxLength: 24 }),
        (msg, number, body) => {
          const extra = unknownField(number, body);
          const wire = Buffer.concat([toBinary(CreateContainerRequestSchema, msg), extra]);
          const again = Buffer.from(
            toBinary(CreateContainerRequestSchema, fromBinary(CreateContainerRequestSchema, wire)),
          );
          expect(again.includes(extra)).toBe(true);
          expect(
            equals(CreateContainerRequestSchema, fromBinary(CreateContainerRequestSchema, again), msg),
          ).toBe(true);
        },
      ),
      propParams(),
    );
  });

  it('decoding arbitrary bytes as any request gives a message or an Error', () => {
    fc.assert(
      fc.property(bytesArb(128), (bytes) => {
        for (const m of methods) {
          const err = thrown(() => fromBinary(m.input, bytes));
          if (err !== undefined) expect(err).toBeInstanceOf(Error);
        }
      }),
      propParams(),
    );
  });
});
