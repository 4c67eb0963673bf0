/**
 * Byte mutations for the process fuzzers, as fast-check arbitraries: a valid
 * input (a template) plus a short list of edits, the classic mutation
 * operators of AFL-style fuzzers (bit flip, interesting byte, insert, delete,
 * duplicate, truncate, case swap). Because the edits are data, fast-check
 * shrinks a failing input by dropping edits and simplifying the template, so
 * a failure is reported as a valid input and the one or two edits that matter.
 */
import fc from 'fast-check';

export type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; byte: number }
  | { op: 'insert'; at: number; bytes: number[] }
  | { op: 'delete'; at: number; len: number }
  | { op: 'duplicate'; at: number; len: number }
  | { op: 'truncate'; at: number }
  | { op: 'swapcase'; at: number; len: number };

/** Bytes that sit on the edges of text protocols and integer fields. */
const INTERESTING = [0x00, 0x0a, 0x0d, 0x20, 0x09, 0x30, 0x39, 0x2b, 0x2d, 0x41, 0x7f, 0x80, 0xff];

const pos = fc.nat({ max: 1 << 16 });
const byte = fc.oneof(fc.constantFrom(...INTERESTING), fc.integer({ min: 0, max: 255 }));

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: pos, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: pos, byte }),
  fc.record({
    op: fc.constant('insert' as const),
    at: pos,
    bytes: fc.array(byte, { minLength: 1, maxLength: 8 }),
  }),
  fc.record({ op: fc.constant('delete' as const), at: pos, len: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('duplicate' as const), at: pos, len: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: pos }),
  fc.record({ op: fc.constant('swapcase' as const), at: pos, len: fc.integer({ min: 1, max: 8 }) }),
);

/** Applies `m` to `input` (positions are taken modulo the length, so every edit applies). */
export function applyMutation(input: Buffer, m: Mutation): Buffer {
  const n = input.length;
  const at = n === 0 ? 0 : m.at % (n + (m.op === 'insert' ? 1 : 0));
  switch (m.op) {
    case 'flip': {
      if (n === 0) return input;
      const out = Buffer.from(input);
      out[at] = out[at]! ^ (1 << m.bit);
      return out;
    }
    case 'set': {
      if (n === 0) return input;
      const out = Buffer.from(input);
      out[at] = m.byte;
      return out;
    }
    case 'insert':
      return Buffer.concat([input.subarray(0, at), Buffer.from(m.bytes), input.subarray(at)]);
    case 'delete':
      return Buffer.concat([input.subarray(0, at), input.subarray(at + m.len)]);
    case 'duplicate':
      return Buffer.concat([input.subarray(0, at + m.len), input.subarray(at)]);
    case 'truncate':
      return input.subarray(0, at);
    case 'swapcase': {
      const out = Buffer.from(input);
      for (let i = at; i < Math.min(n, at + m.len); i++) {
        const c = out[i]!;
        if ((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)) out[i] = c ^ 0x20;
      }
      return out;
    }
  }
}

/**
 * A template, half of the time left valid (no edit at all, so
 * the fuzzer also drives the valid paths deep), otherwise with 1..4 edits.
 */
export function mutated(template: fc.Arbitrary<Buffer>, maxEdits = 4): fc.Arbitrary<Buffer> {
  const edits = fc.oneof(
    { weight: 1, arbitrary: fc.constant([] as Mutation[]) },
    { weight: 1, arbitrary: fc.array(mutationArb, { minLength: 1, maxLength: maxEdits }) },
  );
  return fc.tuple(template, edits).map(([t, ms]) => ms.reduce(applyMutation, t));
}
