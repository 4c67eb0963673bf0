/**
 * The Markdown report (`results.md`): the mode (loopback stack or QEMU
 * guest), the summary table grouped by section, the kernel ceiling, the
 * run's machine and options, and any run that failed. Pure: report in, text
 * out.
 */
import { COLUMNS, fmt, fmtPct, fmtRatio, STARTUP_COLUMNS, startupCells, startupNote } from './format.js';
import type { BenchMeta, BenchReport, SummaryRow } from './results.js';

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

/** One line naming the mode: "loopback stack" or "QEMU guest (TCG, 1 vCPU, 1024 MiB, booted in 21 s)". */
export function modeSummary(m: BenchMeta): string {
  if (m.mode !== 'qemu' || !m.vm) return 'loopback stack (vmm + agent as host processes, no VM)';
  const v = m.vm;
  return (
    `QEMU guest (${v.accel.toUpperCase()}, ${v.cpus} vCPU, ${v.memoryMiB} MiB, ` +
    `guest kernel ${v.guestKernel}, booted in ${v.bootS.toFixed(1)} s)`
  );
}

function modeParagraph(m: BenchMeta): string {
  if (m.mode !== 'qemu' || !m.vm)
    return (
      `Mode: **loopback**: the device (\`vmm\`, with its loopback guest vsock stack), the agent and the ` +
      `container processes are host processes; no VM.`
    );
  const v = m.vm;
  const tcg =
    v.accel === 'tcg'
      ? ' Under TCG every guest instruction is emulated: compare the two paths, not absolute figures ' +
        '(they say little about the device itself).'
      : '';
  return (
    `Mode: **QEMU guest, ${v.accel.toUpperCase()}**: ${v.cpus} vCPU, ${v.memoryMiB} MiB, guest kernel ` +
    `${v.guestKernel}, ${v.qemu}; boot (QEMU start → agent answering on vsock) ${v.bootS.toFixed(1)} s, ` +
    `not included in any figure. The agent and the container processes run in the guest ` +
    `(the host's binaries, from the host root mounted read-only over 9p); the device is \`vmm --vhost-user\` ` +
    `on the host; the FIFOs and their dd/wc clients are on the host. CPU of the guest (its kernel, the agent ` +
    `and the container process) is the QEMU process's, as the host sees it.${tcg}`
  );
}

export function renderMarkdown(report: BenchReport): string {
  const m = report.meta;
  const lines: string[] = [
    `# passfd-broker bench: passfd vs RPC-copy${m.mode === 'qemu' ? ' in a QEMU guest' : ''}`,
    '',
  ];
  const where = m.mode === 'qemu' ? 'host, not the guest: ' : '';
  lines.push(
    `${m.date} · host ${m.host}: ${m.cpus} CPU (${m.cpuModel}), Linux ${m.kernel} · Node ${m.node} · ${m.durationS.toFixed(0)} s`,
    '',
    modeParagraph(m),
    '',
    `Medians over repetitions; passfd and RPC-copy alternate within each repetition. ` +
      `Kernel ceiling (${where}dd → FIFO → cat → Unix socket → wc, same bytes): **${fmt(report.ceilingMiBps)} MiB/s**.`,
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
  if (report.startup) {
    lines.push(
      '## Start-up (beside `node -e 0`, same run)',
      '',
      `${startupNote(report.startup)}.`,
      '',
      `| ${STARTUP_COLUMNS.join(' | ')} |`,
      `|${STARTUP_COLUMNS.map((_, i) => (i < 2 ? ' --- ' : ' ---: ')).join('|')}|`,
    );
    for (const r of report.startup) lines.push(`| ${startupCells(r).map(escapeCell).join(' | ')} |`);
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
