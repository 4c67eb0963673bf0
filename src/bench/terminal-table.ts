/**
 * The summary as a plain-text table for the terminal: one block per
 * section, columns padded to width, numbers right-aligned.
 */
import { COLUMNS, fmt } from './format.js';
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
  const widths = COLUMNS.map((c, i) =>
    Math.max(c.length, ...rows.filter((r) => Array.isArray(r)).map((r) => (r as string[])[i]!.length)),
  );
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [
    `mode: ${modeSummary(report.meta)}`,
    line(COLUMNS),
    widths.map((w) => '─'.repeat(w)).join('  '),
  ];
  for (const r of rows) out.push(typeof r === 'string' ? `[${r}]` : line(r));
  const where = report.meta.mode === 'qemu' ? ' (measured on the host)' : '';
  out.push('', `kernel pipe-relay ceiling${where}: ${fmt(report.ceilingMiBps)} MiB/s`);
  for (const e of report.errors) out.push(`FAILED ${e.scenario} ${e.path} rep ${e.rep}: ${e.message}`);
  return out.join('\n');
}
