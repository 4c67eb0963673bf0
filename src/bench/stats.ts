/**
 * Statistics the benchmark reports: median, percentiles (linear
 * interpolation between closest ranks, as numpy's default), Jain's fairness
 * index. Pure functions over plain number arrays; an empty input gives NaN
 * (the report prints it as "n/a") instead of throwing mid-run.
 */

/** The p-th percentile (0..100) of `values`, interpolating between closest ranks. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  if (p < 0 || p > 100) throw new RangeError(`percentile must be in 0..100, not ${p}`);
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = sorted[lo]!;
  const b = sorted[hi]!;
  return a + (b - a) * (rank - lo);
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

export function mean(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  return values.reduce((s, v) => s + v, 0) / values.length;
}

/**
 * Jain's fairness index (Σx)² / (n·Σx²): 1 when every share is equal, 1/n
 * when one container gets everything.
 */
export function jainIndex(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sum = values.reduce((s, v) => s + v, 0);
  const sumSq = values.reduce((s, v) => s + v * v, 0);
  if (sumSq === 0) return Number.NaN;
  return (sum * sum) / (values.length * sumSq);
}

/** a / b, or NaN when either is not a finite number or b is 0. */
export function ratio(a: number, b: number): number {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return Number.NaN;
  return a / b;
}
