/**
 * The summary as a plain-text table for the terminal: one block per
 * section, columns padded to width, numbers right-aligned.
 */
import { COLUMNS, fmt, STARTUP_COLUMNS, startupCells, startupNote } from './format.js';
import { modeSummary, rowCells } from './markdown.js';
import type { BenchReport } from './results.js';

export function renderTable(report: BenchReport): string {
  const rows: (string[] | string)[] = [];
  let section = '';
  for (const r of report.summary) {
    if (r.section !== section) {
      section = r.section;
      rows.push(section);
    }
    rows.push(rowCells(r));
  }
  const out = [`mode: ${modeSummary(report.meta)}`];
  if (report.summary.length > 0) {
    const { line, rule } = columns(
      COLUMNS,
      rows.filter((r) => Array.isArray(r)),
    );
    out.push(line(COLUMNS), rule);
    for (const r of rows) out.push(typeof r === 'string' ? `[${r}]` : line(r));
    const where = report.meta.mode === 'qemu' ? ' (measured on the host)' : '';
    out.push('', `kernel pipe-relay ceiling${where}: ${fmt(report.ceilingMiBps)} MiB/s`);
  }
  if (report.startup) {
    const cells = report.startup.map(startupCells);
    const { line, rule } = columns(STARTUP_COLUMNS, cells);
    out.push('', `[startup] ${startupNote(report.startup)}`, line(STARTUP_COLUMNS), rule);
    for (const c of cells) out.push(line(c));
  }
  for (const e of report.errors) out.push(`FAILED ${e.scenario} ${e.path} rep ${e.rep}: ${e.message}`);
  return out.join('\n');
}

/** Column widths for `header` and `rows`: text columns (the first two) left, numbers right. */
function columns(header: string[], rows: string[][]): { line: (cells: string[]) => string; rule: string } {
  const widths = header.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i]!.length)));
  return {
    line: (cells) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '),
    rule: widths.map((w) => '─'.repeat(w)).join('  '),
  };
}
