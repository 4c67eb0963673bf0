/**
 * Shared pieces of the property-based codec tests (fast-check): a fixed seed
 * and run count so CI is reproducible (override with PASSFD_FUZZ_SEED and
 * PASSFD_PROP_RUNS for a longer or different search), and arbitraries for
 * "these bytes, split into chunks anywhere", which every streaming decoder
 * here must treat the same however a socket happens to split them.
 */
import fc from 'fast-check';

/** The seed every fuzz and property test uses unless PASSFD_FUZZ_SEED names another. */
export const DEFAULT_FUZZ_SEED = 0x5eed_f00d;

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name}=${JSON.stringify(raw)}: not an integer`);
  return n;
}

export function fuzzSeed(): number {
  return envInt('PASSFD_FUZZ_SEED', DEFAULT_FUZZ_SEED);
}

/** fast-check parameters for codec properties: the fixed seed and PASSFD_PROP_RUNS runs (default 300). */
export function propParams<T>(extra: fc.Parameters<T> = {}): fc.Parameters<T> {
  return { seed: fuzzSeed(), numRuns: envInt('PASSFD_PROP_RUNS', 300), ...extra };
}

/** `buf` cut at the given positions (taken modulo its length, sorted, duplicates give empty chunks). */
export function splitAt(buf: Buffer, cuts: readonly number[]): Buffer[] {
  const at = cuts.map((c) => (buf.length === 0 ? 0 : c % (buf.length + 1))).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of at) {
    out.push(buf.subarray(prev, c));
    prev = c;
  }
  out.push(buf.subarray(prev));
  return out;
}

/** Cut positions for `splitAt`: none (one chunk) up to many (byte-sized chunks are likely for short inputs). */
export const cutsArb: fc.Arbitrary<number[]> = fc.array(fc.nat(), { maxLength: 12 });

/** Arbitrary bytes as a Buffer. */
export function bytesArb(maxLength = 96): fc.Arbitrary<Buffer> {
  return fc.uint8Array({ maxLength }).map((u) => Buffer.from(u));
}

/** Bytes drawn mostly from `alphabet` (so that random input often comes close to valid syntax), some from anywhere. */
export function bytesNear(alphabet: string, maxLength = 48): fc.Arbitrary<Buffer> {
  const chars = [...Buffer.from(alphabet, 'latin1')];
  const byte = fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...chars) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
  );
  return fc.array(byte, { maxLength }).map((a) => Buffer.from(a));
}

/** Runs `fn`, returning what it threw (undefined when it returned). */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err;
  }
}
