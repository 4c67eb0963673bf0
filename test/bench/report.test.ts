import { describe, expect, it } from 'vitest';
import { renderMarkdown } from '../../src/bench/markdown.js';
import { toJson } from '../../src/bench/results.js';
import { renderTable } from '../../src/bench/terminal-table.js';
import { fixedReport } from './fixtures.js';

describe('report from fixed figures', () => {
  const report = fixedReport();

  it('summarizes medians, passfd/rpc ratios and fractions of the kernel ceiling', () => {
    const row = (key: string) => report.summary.find((r) => r.key === key)!;
    expect(report.ceilingMiBps).toBe(1100);
    const out = row('stdout.mibps');
    expect(out).toMatchObject({ passfd: 600, rpc: 100, ratio: 6, ceiling: 1100, n: [2, 2] });
    expect(out.passfdOfCeiling).toBeCloseTo(600 / 1100);
    expect(row('stdout.cpu.vmm')).toMatchObject({ passfd: 2, rpc: 9, unit: 'CPU s/GiB' });
    expect(row('stdout.cpu.broker').rpc).toBeNaN();
    expect(row('rtt.p50')).toMatchObject({ passfd: 150, rpc: 300, ratio: 0.5, unit: 'µs' });
    expect(row('conc8.mibps').passfdOfCeiling).toBeCloseTo(400 / 1100);
    expect(report.summary.some((r) => r.key === 'rtt.trips')).toBe(false);
    // Sections in reading order: throughput, latency, cpu, concurrency; CPU roles along the data path.
    expect(report.summary.map((r) => r.key)).toEqual([
      'stdout.mibps',
      'rtt.p50',
      'rtt.p99',
      'stdout.cpu.broker',
      'stdout.cpu.vmm',
      'conc8.mibps',
      'conc8.min',
      'conc8.max',
      'conc8.jain',
    ]);
  });

  it('renders Markdown tables with the figures and the failed runs', () => {
    const md = renderMarkdown(report);
    expect(md).toContain('# passfd-broker bench');
    expect(md).toContain('## Throughput');
    expect(md).toContain(
      '| metric | unit | passfd | rpc-copy | passfd/rpc | passfd % ceiling | rpc % ceiling |',
    );
    expect(md).toContain('| stdout throughput | MiB/s | 600 | 100 | 6.00× | 55 % | 9 % |');
    expect(md).toContain('| 64 B round trip p50 | µs | 150 | 300 | 0.50× |  |  |');
    expect(md).toContain('| stdout: broker (bench process) | CPU s/GiB | 0.020 | n/a | n/a |  |  |');
    expect(md).toContain('**1100 MiB/s**');
    expect(md).toContain('not done \\| within 5 ms');
  });

  it('renders the terminal table', () => {
    const t = renderTable(report);
    expect(t).toMatch(/stdout throughput\s+MiB\/s\s+600\s+100\s+6\.00×\s+55 %\s+9 %/);
    expect(t).toContain('kernel pipe-relay ceiling: 1100 MiB/s');
    expect(t).toContain('FAILED setup rpc rep 0');
  });

  it('JSON round-trips, with unmeasured figures as null', () => {
    const back = JSON.parse(toJson(report));
    expect(back.summary.find((r: { key: string }) => r.key === 'stdout.cpu.broker').rpc).toBeNull();
    expect(back.runs).toHaveLength(report.runs.length);
    expect(back.meta.cpus).toBe(2);
    expect(back.ceilingMiBps).toBe(1100);
  });

  it('summarizes start-up probes against node -e 0 and renders them in both formats', () => {
    const rows = report.startup!;
    expect(rows.map((r) => [r.key, r.wallP50Ms, r.cpuP50Ms, r.vsNode])).toEqual([
      ['node', 50, 40, 1],
      ['help', 70, 56, 1.4],
      ['agent', 100, 80, 2],
    ]);
    expect(rows[2]!.wallP90Ms).toBeCloseTo(260);
    const md = renderMarkdown(report);
    expect(md).toContain('## Start-up (beside `node -e 0`, same run)');
    expect(md).toContain('| passfd-broker --help | exit | 70.0 | 78.0 | 56.0 | 1.40× |');
    expect(md).toContain('| passfd-broker agent (to READY) | READY=1 | 100 | 260 | 80.0 | 2.00× |');
    const t = renderTable(report);
    expect(t).toContain('[startup] p50 of 3 runs each');
    expect(t).toMatch(/passfd-broker --help\s+exit\s+70\.0\s+78\.0\s+56\.0\s+1\.40×/);
  });

  it('a report of start-up alone has no passfd/rpc table and no ceiling line', () => {
    const t = renderTable({ ...report, summary: [], runs: [], errors: [], ceilingMiBps: Number.NaN });
    expect(t).not.toContain('kernel pipe-relay ceiling');
    expect(t).toContain('[startup]');
  });
});
