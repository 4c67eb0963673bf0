/**
 * The process fuzzers' driver: fast-check generates cases from a fixed seed
 * and runs them one after another against a live process for a time budget,
 * then shrinks a failing case (replaying it, against a restarted process
 * when needed) to a minimal one, and reports the seed, the replay path and
 * that minimal input.
 *
 *   PASSFD_FUZZ_BUDGET_MS   search time of each fuzzer (default: its CI budget)
 *   PASSFD_FUZZ_SEED        seed (default: the fixed CI seed)
 *   PASSFD_FUZZ_PATH        replay one case (the path a failure printed) instead of searching
 *   PASSFD_FUZZ_SHRINK_MS   time allowed for shrinking a failure (default 60 s)
 *
 * Two phases because fast-check's time limit covers shrinking too: the
 * search stops at the first failure (no shrinking) so the budget goes to
 * finding it, and the shrink phase replays that failure's path with its own
 * time limit. A case the time limit interrupts is awaited before anything
 * else touches the process.
 */
import fc from 'fast-check';
import { fuzzSeed } from '../../support/prop.js';

export interface FuzzSettings {
  seed: number;
  budgetMs: number;
  shrinkMs: number;
  /** Replay this path only (from a failure report). */
  path: string | undefined;
}

function envMs(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new Error(`${name}=${JSON.stringify(raw)}: not a number of ms`);
  return n;
}

export function fuzzSettings(ciBudgetMs: number): FuzzSettings {
  return {
    seed: fuzzSeed(),
    budgetMs: envMs('PASSFD_FUZZ_BUDGET_MS', ciBudgetMs),
    shrinkMs: envMs('PASSFD_FUZZ_SHRINK_MS', 60_000),
    path: process.env.PASSFD_FUZZ_PATH || undefined,
  };
}

/** Time a vitest test running this fuzzer needs: search, shrink, and `extraMs` for set-up and checks. */
export function fuzzTimeout(s: FuzzSettings, extraMs = 60_000): number {
  return s.budgetMs + s.shrinkMs + extraMs;
}

/** JSON with byte buffers as latin1 strings (control bytes escaped), readable in a failure report. */
export function readable(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    const b = v as { type?: string; data?: number[] } | null;
    if (b && typeof b === 'object' && b.type === 'Buffer' && Array.isArray(b.data)) {
      return Buffer.from(b.data).toString('latin1');
    }
    return typeof v === 'bigint' ? `${v}n` : v;
  });
}

export interface FuzzResult {
  cases: number;
  elapsedMs: number;
}

/**
 * Runs `runCase` on cases from `arb` for the budget. Resolves the number of
 * cases run; rejects with a report (seed, path, minimal case, how to replay)
 * when a case failed.
 */
export async function fuzz<Case>(
  name: string,
  testFile: string,
  arb: fc.Arbitrary<Case>,
  runCase: (c: Case) => Promise<void>,
  s: FuzzSettings,
): Promise<FuzzResult> {
  let inFlight: Promise<void> = Promise.resolve();
  let cases = 0;
  const property = fc.asyncProperty(arb, (c) => {
    cases++;
    inFlight = runCase(c);
    return inFlight;
  });
  const start = Date.now();
  const search = await fc.check(property, {
    seed: s.seed,
    ...(s.path !== undefined ? { path: s.path, numRuns: 1 } : { numRuns: Number.MAX_SAFE_INTEGER }),
    endOnFailure: true,
    plugins: [fc.interruptAfterTimeLimit(s.budgetMs)],
  });
  await inFlight.catch(() => {});
  const elapsedMs = Date.now() - start;
  if (!search.failed) return { cases, elapsedMs };

  const found = search.counterexamplePath!;
  const shrunk = await fc.check(property, {
    seed: s.seed,
    path: found,
    plugins: [fc.interruptAfterTimeLimit(s.shrinkMs)],
  });
  await inFlight.catch(() => {});
  const best = shrunk.failed && shrunk.counterexample ? shrunk : search;
  const error = best.errorInstance instanceof Error ? best.errorInstance.message : String(best.errorInstance);
  throw new Error(
    [
      `${name} fuzzer: a case failed after ${cases} case(s) (seed ${s.seed}).`,
      `error: ${error}`,
      `minimal input (${best.numShrinks} shrink step(s); bytes shown as latin1 text): ${readable((best.counterexample as [Case])[0])}`,
      `replay: PASSFD_FUZZ_SEED=${s.seed} PASSFD_FUZZ_PATH=${best.counterexamplePath} npx vitest run ${testFile}`,
    ].join('\n'),
  );
}
