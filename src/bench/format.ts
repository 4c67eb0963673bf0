/**
 * Number formatting shared by the terminal table and the Markdown report:
 * three significant figures (enough for medians of a few repetitions), "n/a"
 * for a figure that was not measured, ratios as "×", fractions as "%".
 */

export function fmt(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return 'n/a';
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1000) return Math.round(v).toString();
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 0.1) return v.toFixed(2);
  return v.toPrecision(2);
}

export function fmtRatio(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? 'n/a' : `${fmt(v)}×`;
}

export function fmtPct(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '' : `${(v * 100).toFixed(0)} %`;
}

/** The cells of one summary row, in table order. */
export const COLUMNS = [
  'metric',
  'unit',
  'passfd',
  'rpc-copy',
  'passfd/rpc',
  'passfd % ceiling',
  'rpc % ceiling',
];
