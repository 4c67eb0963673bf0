import { SOAK_SETTLE_MS, type SoakResult } from './soak.js';
import type { StartupRow } from './startup.js';

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

/** The start-up table's columns. */
export const STARTUP_COLUMNS = ['probe', 'until', 'wall p50 ms', 'wall p90 ms', 'CPU p50 ms', '× node -e 0'];

/** The cells of one start-up row, in STARTUP_COLUMNS order. */
export function startupCells(r: StartupRow): string[] {
  return [
    r.label,
    r.until === 'ready' ? 'READY=1' : 'exit',
    fmt(r.wallP50Ms),
    fmt(r.wallP90Ms),
    fmt(r.cpuP50Ms),
    fmtRatio(r.vsNode),
  ];
}

/** What the start-up figures are, in one line (both renderers). */
export function startupNote(rows: StartupRow[]): string {
  return (
    `p50 of ${rows[0]?.n ?? 0} runs each, probes interleaved; wall: spawn → exit or READY=1; ` +
    'CPU: the process and what it reaped (run: its vmm and agent too), in 10 ms ticks'
  );
}

export const SOAK_COLUMNS = ['vmm', 'RSS MiB', 'fds'];

/** The soak scenario's rows, in SOAK_COLUMNS order: each phase, then the cost of one connection and what was left. */
export function soakCells(s: SoakResult): string[][] {
  const row = (label: string, p: { rssMiB: number; fds: number }) => [label, fmt(p.rssMiB), String(p.fds)];
  return [
    row('baseline (warmed up)', s.baseline),
    ['storm peak', fmt(s.stormPeakMiB), ''],
    row('settled after the storm', s.settled),
    row(`${s.held} connections open`, s.holding),
    row('after release', s.after),
    ['per open connection', `${fmt(s.perConnectionKiB)} KiB`, fmt(s.perConnectionFds)],
    ['left behind (after − baseline)', fmt(s.leftMiB), String(s.leftFds)],
  ];
}

/** What the soak figures are, in one line (both renderers). */
export function soakNote(s: SoakResult): string {
  return (
    `${s.cycles} CONNECT/close cycles to the agent's port (16 at a time), then ${s.held} connections held ` +
    `open and released; ${SOAK_SETTLE_MS / 1000} s of quiet before each settled figure`
  );
}
