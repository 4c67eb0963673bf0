/**
 * The Markdown report (`results.md`): the summary table grouped by
 * section, the kernel ceiling, the run's machine and options, and any run
 * that failed. Pure: report in, text out.
 */
import { COLUMNS, fmt, fmtPct, fmtRatio } from './format.js';
import type { BenchReport, SummaryRow } from './results.js';

const SECTION_TITLE: Record<string, string> = {
  throughput: 'Throughput',
  latency: 'Interactive latency',
  cpu: 'CPU seconds per GiB moved, by process',
  setup: 'Set-up latency (FIFOs ready → process running)',
  concurrency: 'Concurrency (containers streaming stdout at once)',
};

export function rowCells(r: SummaryRow): string[] {
  return [
    r.label,
    r.unit,
    fmt(r.passfd),
    fmt(r.rpc),
    fmtRatio(r.ratio),
    fmtPct(r.passfdOfCeiling),
    fmtPct(r.rpcOfCeiling),
  ];
}

function escapeCell(cell: string): string {
  return cell.replace(/\|/g, '\\|');
}

export function renderMarkdown(report: BenchReport): string {
  const m = report.meta;
  const lines: string[] = ['# passfd-broker bench: passfd vs RPC-copy', ''];
  lines.push(
    `${m.date} · ${m.host} · ${m.cpus} CPU (${m.cpuModel}) · Linux ${m.kernel} · Node ${m.node} · ${m.durationS.toFixed(0)} s`,
    '',
    `Medians over repetitions; passfd and RPC-copy alternate within each repetition. ` +
      `Kernel ceiling (dd → FIFO → cat → Unix socket → wc, same bytes): **${fmt(report.ceilingMiBps)} MiB/s**.`,
    '',
  );
  const sections = [...new Set(report.summary.map((r) => r.section))];
  for (const s of sections) {
    lines.push(`## ${SECTION_TITLE[s] ?? s}`, '');
    lines.push(
      `| ${COLUMNS.join(' | ')} |`,
      `|${COLUMNS.map((_, i) => (i < 2 ? ' --- ' : ' ---: ')).join('|')}|`,
    );
    for (const r of report.summary.filter((x) => x.section === s))
      lines.push(`| ${rowCells(r).map(escapeCell).join(' | ')} |`);
    lines.push('');
  }
  lines.push('## Options', '', '```json', JSON.stringify(report.options, null, 2), '```', '');
  if (report.errors.length > 0) {
    lines.push('## Failed runs', '');
    for (const e of report.errors)
      lines.push(`- ${e.scenario} ${e.path} rep ${e.rep}: ${escapeCell(e.message)}`);
    lines.push('');
  }
  return lines.join('\n');
}
