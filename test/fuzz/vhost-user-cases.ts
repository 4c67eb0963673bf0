/**
 * Cases for the vhost-user socket fuzzer: what a broken or hostile
 * front-end (and the guest driver behind it) can do to the backend.
 *
 * A case is QEMU 7.2's start-up sequence (as qemu-sim.ts sends it), cut
 * after `sent` messages, with up to four of those messages mutated (byte
 * edits of the encoded message, or other fds in place of the right ones:
 * none, too many, of the wrong kind, a memfd too small for its region and
 * unsealable), up to three foreign messages inserted (any request
 * code, random payload, need-reply or not), then, with the rings set up,
 * what a guest driver can do: vsock packets with random header fields
 * through the TX ring, and raw writes into the descriptor table and rings.
 * The case ends with an abrupt close of the front-end's socket.
 */
import fc from 'fast-check';
import { FD_KINDS, type FdKindName } from './support/fd-kinds.js';
import { mutated } from './support/mutate.js';

/**
 * Fds a message can carry instead of its own: the case's guest RAM (a
 * sealed memfd of the right size) or one of every kind of support/fd-kinds.ts
 * (its 'memfd' is 4 KiB and unsealable), made for the case.
 */
export type FdKind = FdKindName | 'ram';
const FD_KIND_ARB = fc.constantFrom<FdKind>('ram', ...FD_KINDS);

export interface ForeignMessage {
  /** Inserted before start-up message `at` (modulo). */
  at: number;
  request: number;
  payload: Buffer;
  needReply: boolean;
  fds: FdKind[];
}

export type GuestAction =
  | {
      kind: 'packet';
      op: number;
      type: number;
      srcPort: number;
      dstPort: number;
      dstCid: number;
      len: number;
      data: Buffer;
      contiguous: boolean;
    }
  | { kind: 'scribble'; queue: 0 | 1; area: 'desc' | 'avail' | 'used'; offset: number; bytes: Buffer }
  | { kind: 'rx-buffers'; count: number; size: number };

export interface VhostUserCase {
  /** How many start-up messages are sent (the whole sequence when >= its length). */
  sent: number;
  /** Mutations of start-up messages: index → edits of its bytes (applied with `mutated`) and/or its fds. */
  edits: { at: number; seed: number; fds: FdKind[] | null }[];
  foreign: ForeignMessage[];
  guest: GuestAction[];
}

const fdsArb = fc.array(FD_KIND_ARB, { maxLength: 4 });

const foreignArb: fc.Arbitrary<ForeignMessage> = fc.record({
  at: fc.nat({ max: 64 }),
  // Known requests (1..40) mostly, anything now and then.
  request: fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 0, max: 41 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }) },
  ),
  payload: fc.uint8Array({ maxLength: 96 }).map((a) => Buffer.from(a)),
  needReply: fc.boolean(),
  fds: fdsArb,
});

const u16 = fc.integer({ min: 0, max: 0xffff });

const guestActionArb: fc.Arbitrary<GuestAction> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('packet' as const),
      op: fc.integer({ min: 0, max: 8 }),
      type: fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 0xffff })),
      srcPort: fc.oneof(fc.constant(40000), fc.nat()),
      dstPort: fc.oneof(fc.constant(7001), fc.nat()),
      dstCid: fc.oneof(fc.constant(2), fc.nat()),
      len: fc.oneof(fc.constant(-1), fc.nat({ max: 1 << 20 })),
      data: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
      contiguous: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('scribble' as const),
      queue: fc.constantFrom(0 as const, 1 as const),
      area: fc.constantFrom('desc' as const, 'avail' as const, 'used' as const),
      offset: fc.nat({ max: 160 }),
      bytes: fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 16 }).map((a) => Buffer.from(a)),
        u16.map((v) => Buffer.from([v & 0xff, v >> 8])),
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('rx-buffers' as const),
      count: fc.integer({ min: 1, max: 8 }),
      size: fc.oneof(fc.constant(4096), fc.nat({ max: 70000 })),
    }),
  },
);

export const vhostUserCaseArb: fc.Arbitrary<VhostUserCase> = fc.record({
  sent: fc.oneof({ weight: 3, arbitrary: fc.constant(1000) }, { weight: 2, arbitrary: fc.nat({ max: 30 }) }),
  edits: fc.array(
    fc.record({
      at: fc.nat({ max: 64 }),
      seed: fc.nat(),
      fds: fc.option(fdsArb, { nil: null }),
    }),
    { maxLength: 4 },
  ),
  foreign: fc.array(foreignArb, { maxLength: 3 }),
  guest: fc.array(guestActionArb, { maxLength: 6 }),
});

/**
 * The byte edits of one message, reproducible from the case's `seed` (so a
 * case stays plain data that fast-check can shrink and print): half the
 * time none, else 1..4 AFL-style edits (support/mutate.ts).
 */
export function mutateMessage(template: Buffer, seed: number): Buffer {
  const [out] = fc.sample(mutated(fc.constant(template)), { seed, numRuns: 1 });
  return out!;
}
