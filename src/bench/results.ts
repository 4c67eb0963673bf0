/**
 * The report model: raw per-repetition records as measured, and the summary
 * rows every renderer (terminal table, Markdown, chart, JSON) shares.
 *
 * A record is one scenario × path × repetition with flat named metrics
 * (`stdout.mibps`, `stdout.cpu.vmm`, `rtt.p50`, `conc8.jain`, …). A summary
 * row is the median of one metric across repetitions for passfd, for
 * RPC-copy, their ratio passfd/rpc, and for throughput figures the fraction
 * of the kernel pipe-relay ceiling measured in the same run.
 */
import os from 'node:os';
import type { BenchMode } from './options.js';
import type { SoakResult } from './soak.js';
import type { StartupRow } from './startup.js';
import { median, ratio } from './stats.js';

/** What a record measured: one IO path, the kernel alone (ceiling), the CLI's start-up, or the vmm alone (soak). */
export type Path = 'passfd' | 'rpc' | 'kernel' | 'cli' | 'vmm';

export interface RunRecord {
  scenario: string;
  path: Path;
  rep: number;
  metrics: Record<string, number>;
}

export interface RunError {
  scenario: string;
  path: Path;
  rep: number;
  message: string;
}

export interface SummaryRow {
  section: string;
  key: string;
  label: string;
  unit: string;
  /** Which direction is better, for the reader. */
  better: 'higher' | 'lower';
  passfd: number;
  rpc: number;
  /** passfd / rpc. */
  ratio: number;
  /** Kernel ceiling median (throughput rows only). */
  ceiling?: number;
  passfdOfCeiling?: number;
  rpcOfCeiling?: number;
  /** Repetitions that produced the metric (passfd, rpc). */
  n: [number, number];
}

/** The QEMU guest of a `--vm qemu` run. */
export interface VmMeta {
  accel: 'tcg' | 'kvm';
  /** Guest vCPUs and memory. */
  cpus: number;
  memoryMiB: number;
  /** QEMU start → the guest agent answered on vsock, seconds. */
  bootS: number;
  guestKernel: string;
  /** `qemu-system-x86_64 --version`'s first line. */
  qemu: string;
}

/** When and where a bench ran: the part every report (the stack's, containerd's) starts with. */
export interface HostMeta {
  date: string;
  host: string;
  /** Host CPUs, model and kernel (the kernel ceiling is always measured here). */
  cpus: number;
  cpuModel: string;
  kernel: string;
  node: string;
}

/** HostMeta of this machine, now. */
export function hostMeta(): HostMeta {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    host: os.hostname(),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    kernel: os.release(),
    node: process.version,
  };
}

export interface BenchMeta extends HostMeta {
  clkTck: number;
  durationS: number;
  /** loopback: vmm + agent as host processes; qemu: agent and container processes in a QEMU guest. */
  mode: BenchMode;
  vm?: VmMeta;
  /** CPU role key (as in `stdout.cpu.<role>`) → what that process is in this mode. */
  roles: Record<string, string>;
}

export interface BenchReport {
  meta: BenchMeta;
  options: Record<string, unknown>;
  summary: SummaryRow[];
  /** The kernel pipe-relay ceiling's median, MiB/s (NaN if not measured). */
  ceilingMiBps: number;
  runs: RunRecord[];
  errors: RunError[];
  /** The start-up scenario's rows (absent when it was not selected or failed). */
  startup?: StartupRow[];
  /** The soak scenario's figures (absent when it was not selected or failed). */
  soak?: SoakResult;
}

interface MetricInfo {
  section: string;
  label: string;
  unit: string;
  better: 'higher' | 'lower';
  ceiling?: boolean;
}

const CPU_ROLE_LABEL: Record<BenchMode, Record<string, string>> = {
  loopback: {
    broker: 'broker (bench process)',
    vmm: 'vmm (device + guest stack)',
    agent: 'agent',
    workload: 'container process',
    fifoClient: 'FIFO client (dd/wc)',
  },
  qemu: {
    broker: 'broker (bench process)',
    vmm: 'vmm (vhost-user device)',
    qemu: 'qemu (guest: kernel + agent + process)',
    fifoClient: 'FIFO client (dd/wc)',
  },
};

/** The CPU roles a mode measures, key → label, in data-path order. */
export function cpuRoleLabels(mode: BenchMode): Record<string, string> {
  return { ...CPU_ROLE_LABEL[mode] };
}

/** What a metric key means; undefined for bookkeeping keys (counts). */
export function describeMetric(key: string, mode: BenchMode = 'loopback'): MetricInfo | undefined {
  const tp = /^(stdout|stdin)\.mibps$/.exec(key);
  if (tp)
    return {
      section: 'throughput',
      label: `${tp[1]} throughput`,
      unit: 'MiB/s',
      better: 'higher',
      ceiling: true,
    };
  const cpu = /^(stdout|stdin)\.cpu\.(\w+)$/.exec(key);
  if (cpu) {
    const role = CPU_ROLE_LABEL[mode][cpu[2]!] ?? cpu[2];
    return { section: 'cpu', label: `${cpu[1]}: ${role}`, unit: 'CPU s/GiB', better: 'lower' };
  }
  const rtt = /^rtt\.(p50|p99)$/.exec(key);
  if (rtt) return { section: 'latency', label: `64 B round trip ${rtt[1]}`, unit: 'µs', better: 'lower' };
  const setup = /^setup\.(p50|p99)$/.exec(key);
  if (setup) return { section: 'setup', label: `set-up ${setup[1]}`, unit: 'ms', better: 'lower' };
  const conc = /^conc(\d+)\.(mibps|jain|min|max)$/.exec(key);
  if (conc) {
    const [, k, what] = conc;
    const section = 'concurrency';
    const n = `${k} container${k === '1' ? '' : 's'}`;
    if (what === 'mibps')
      return { section, label: `${n}: aggregate`, unit: 'MiB/s', better: 'higher', ceiling: true };
    if (what === 'jain') return { section, label: `${n}: Jain fairness`, unit: '0..1', better: 'higher' };
    return { section, label: `${n}: ${what} per container`, unit: 'MiB/s', better: 'higher' };
  }
  return undefined;
}

const SECTION_ORDER = ['throughput', 'latency', 'cpu', 'setup', 'concurrency'];
const CPU_ROLES = ['broker', 'vmm', 'agent', 'workload', 'qemu', 'fifoClient'];
const CONC_ORDER = ['mibps', 'min', 'max', 'jain'];

/** Sort key: section, then stdout before stdin / fewer containers first, then role or figure order. */
export function metricOrder(key: string): number[] {
  const section = SECTION_ORDER.indexOf(describeMetric(key)?.section ?? '');
  const dir = /^(stdout|stdin)\.(?:cpu\.(\w+)|mibps)$/.exec(key);
  if (dir) return [section, dir[1] === 'stdout' ? 0 : 1, dir[2] ? CPU_ROLES.indexOf(dir[2]) : -1];
  const conc = /^conc(\d+)\.(\w+)$/.exec(key);
  if (conc) return [section, Number(conc[1]), CONC_ORDER.indexOf(conc[2]!)];
  return [section, 0, 0];
}

function compareKeys(a: string, b: string): number {
  const oa = metricOrder(a);
  const ob = metricOrder(b);
  for (let i = 0; i < oa.length; i++) if (oa[i] !== ob[i]) return oa[i]! - ob[i]!;
  return a.localeCompare(b);
}

function values(runs: RunRecord[], path: Path, key: string): number[] {
  return runs.filter((r) => r.path === path && Number.isFinite(r.metrics[key])).map((r) => r.metrics[key]!);
}

export function summarize(
  runs: RunRecord[],
  mode: BenchMode = 'loopback',
): { rows: SummaryRow[]; ceilingMiBps: number } {
  const ceilingMiBps = median(values(runs, 'kernel', 'ceiling.mibps'));
  const keys = new Set<string>();
  for (const r of runs) if (r.path !== 'kernel') for (const k of Object.keys(r.metrics)) keys.add(k);
  const rows: SummaryRow[] = [];
  const sorted = [...keys].filter((k) => describeMetric(k)).sort(compareKeys);
  for (const key of sorted) {
    const info = describeMetric(key, mode)!;
    const pv = values(runs, 'passfd', key);
    const rv = values(runs, 'rpc', key);
    const passfd = median(pv);
    const rpc = median(rv);
    const row: SummaryRow = {
      section: info.section,
      key,
      label: info.label,
      unit: info.unit,
      better: info.better,
      passfd,
      rpc,
      ratio: ratio(passfd, rpc),
      n: [pv.length, rv.length],
    };
    if (info.ceiling && Number.isFinite(ceilingMiBps)) {
      row.ceiling = ceilingMiBps;
      row.passfdOfCeiling = ratio(passfd, ceilingMiBps);
      row.rpcOfCeiling = ratio(rpc, ceilingMiBps);
    }
    rows.push(row);
  }
  return { rows, ceilingMiBps };
}

/** JSON with NaN/Infinity as null (JSON has no NaN). */
export function toJson(report: BenchReport): string {
  return JSON.stringify(report, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2);
}
