/** A fixed report for the renderer tests: figures are made up, shapes are real. */
import type { BenchMode } from '../../src/bench/options.js';
import type { BenchReport, RunRecord } from '../../src/bench/results.js';
import { cpuRoleLabels, summarize } from '../../src/bench/results.js';
import { summarizeStartup } from '../../src/bench/startup.js';

/** A start-up sample whose CPU is 80 % of its wall time. */
const wallCpu = (wallMs: number) => ({ wallMs, cpuMs: wallMs * 0.8 });

export const FIXED_RUNS: RunRecord[] = [
  { scenario: 'ceiling', path: 'kernel', rep: 0, metrics: { 'ceiling.mibps': 1000 } },
  { scenario: 'ceiling', path: 'kernel', rep: 1, metrics: { 'ceiling.mibps': 1200 } },
  {
    scenario: 'throughput',
    path: 'passfd',
    rep: 0,
    metrics: { 'stdout.mibps': 500, 'stdout.cpu.vmm': 1.5, 'stdout.cpu.broker': 0.01 },
  },
  {
    scenario: 'throughput',
    path: 'passfd',
    rep: 1,
    metrics: { 'stdout.mibps': 700, 'stdout.cpu.vmm': 2.5, 'stdout.cpu.broker': 0.03 },
  },
  { scenario: 'throughput', path: 'rpc', rep: 0, metrics: { 'stdout.mibps': 100, 'stdout.cpu.vmm': 8 } },
  { scenario: 'throughput', path: 'rpc', rep: 1, metrics: { 'stdout.mibps': 100, 'stdout.cpu.vmm': 10 } },
  {
    scenario: 'latency',
    path: 'passfd',
    rep: 0,
    metrics: { 'rtt.p50': 150, 'rtt.p99': 900, 'rtt.trips': 200 },
  },
  {
    scenario: 'latency',
    path: 'rpc',
    rep: 0,
    metrics: { 'rtt.p50': 300, 'rtt.p99': 1800, 'rtt.trips': 200 },
  },
  {
    scenario: 'concurrency',
    path: 'passfd',
    rep: 0,
    metrics: { 'conc8.mibps': 400, 'conc8.jain': 0.9, 'conc8.min': 30, 'conc8.max': 70 },
  },
  {
    scenario: 'concurrency',
    path: 'rpc',
    rep: 0,
    metrics: { 'conc8.mibps': 50, 'conc8.jain': 1, 'conc8.min': 6, 'conc8.max': 6.5 },
  },
];

/** The same figures as a loopback run, or (`qemu`) as a QEMU guest run with the qemu CPU role. */
export function fixedReport(mode: BenchMode = 'loopback'): BenchReport {
  const runs =
    mode === 'qemu'
      ? FIXED_RUNS.map((r) => ({
          ...r,
          metrics: Object.fromEntries(
            Object.entries(r.metrics).map(([k, v]) => [k.replace('.cpu.vmm', '.cpu.qemu'), v]),
          ),
        }))
      : FIXED_RUNS;
  const { rows, ceilingMiBps } = summarize(runs, mode);
  return {
    meta: {
      date: '2026-01-02T03:04:05.000Z',
      host: 'testhost',
      cpus: 2,
      cpuModel: 'Test CPU',
      kernel: '6.1.0',
      node: 'v20.0.0',
      clkTck: 100,
      durationS: 42,
      mode,
      ...(mode === 'qemu'
        ? {
            vm: {
              accel: 'tcg' as const,
              cpus: 1,
              memoryMiB: 1024,
              bootS: 21.5,
              guestKernel: '6.1.0-test-amd64',
              qemu: 'QEMU emulator version 7.2.0',
            },
          }
        : {}),
      roles: cpuRoleLabels(mode),
    },
    options: { bytes: 1024, reps: 2 },
    summary: rows,
    ceilingMiBps,
    runs,
    errors: [{ scenario: 'setup', path: 'rpc', rep: 0, message: 'setup rpc: not done | within 5 ms' }],
    startup: summarizeStartup([
      { key: 'node', label: 'node -e 0', until: 'exit', samples: [40, 50, 60].map(wallCpu) },
      { key: 'help', label: 'passfd-broker --help', until: 'exit', samples: [60, 70, 80].map(wallCpu) },
      {
        key: 'agent',
        label: 'passfd-broker agent (to READY)',
        until: 'ready',
        samples: [90, 100, 300].map(wallCpu),
      },
    ]),
  };
}
