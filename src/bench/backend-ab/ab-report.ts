/**
 * The backend A/B's figures (backend-ab.ts): per backend, medians over
 * every good boot with their spread (min–max and n), and each backend's
 * ratio to a baseline backend (the first one that is not ours, unless
 * named). Rendered as a plain-text table for the terminal and as Markdown
 * (the same table) for docs; the boots themselves go to the JSON report.
 *
 * Rows: MiB/s each way (timed at the receiving end), 64 B round trip p50
 * and p99 (per boot, then the median of those), CPU seconds per GiB of the
 * backend and of QEMU each way, the guest's virtio interrupts per 128 MiB,
 * its vsock packets per 128 MiB and their mean payload (guest tracepoints,
 * when traced), and, for backends that write `vmm --metrics`, their own
 * counters per 128 MiB: kicks read, calls signalled, credit updates sent,
 * and the system calls they count (reads, readvs, writes, writevs, interest
 * changes, kick reads and call writes).
 */
import { fmt, fmtRatio } from '../format.js';
import { median, percentile } from '../stats.js';
import type { BootRecord, TransferRecord } from './backend-ab.js';

const UNIT = 128 * 1024 * 1024;
const GiB = 1024 * 1024 * 1024;

export interface AbCell {
  median: number;
  min: number;
  max: number;
  n: number;
}

export interface AbRow {
  metric: string;
  unit: string;
  /** Backend name → cell (absent: not measured for that backend). */
  cells: Record<string, AbCell>;
  /** Higher is better (MiB/s) or lower is better (µs, CPU, calls): how ratios read. */
  better: 'higher' | 'lower';
}

export interface AbSummary {
  backends: string[];
  baseline: string | null;
  rows: AbRow[];
  failures: { backend: string; round: number; error: string; logs?: string }[];
  /** Boots that completed, per backend. */
  good: Record<string, number>;
  load: AbCell;
}

function cell(values: number[]): AbCell | undefined {
  const v = values.filter(Number.isFinite);
  if (v.length === 0) return undefined;
  return { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length };
}

type Pick = (t: TransferRecord, bytes: number) => number | undefined;

/** Syscalls the vmm counted over the transfer. */
function countedSyscalls(t: TransferRecord): number | undefined {
  if (!t.metrics) return undefined;
  const a = t.metrics.before;
  const b = t.metrics.after;
  const io = (m: typeof a) => {
    const c = m.device.counters;
    const rings = m.vhostUser?.rings ?? [];
    return (
      c.reads +
      c.readvs +
      c.writes +
      c.writevs +
      c.interestChanges +
      rings.reduce((s, r) => s + r.kicks + r.calls, 0)
    );
  };
  return io(b) - io(a);
}

function ringDelta(t: TransferRecord, f: 'kicks' | 'calls'): number | undefined {
  if (!t.metrics) return undefined;
  const sum = (m: typeof t.metrics.before) => (m.vhostUser?.rings ?? []).reduce((s, r) => s + r[f], 0);
  return sum(t.metrics.after) - sum(t.metrics.before);
}

function tracePackets(
  t: TransferRecord,
  side: 'toHost' | 'fromHost',
  op: string,
): { packets: number; bytes: number } | undefined {
  return t.trace?.[side][op];
}

export function summarizeAb(boots: BootRecord[], bytes: number, baselineName?: string): AbSummary {
  const backends = [...new Set(boots.map((b) => b.backend))];
  const good = (name: string) => boots.filter((b) => b.backend === name && b.ok);
  const rows: AbRow[] = [];
  const perTransfer = (
    metric: string,
    unit: string,
    better: AbRow['better'],
    dir: 'g2h' | 'h2g',
    pick: Pick,
  ) => {
    const cells: Record<string, AbCell> = {};
    for (const name of backends) {
      const vals = good(name)
        .flatMap((b) => b.transfers.filter((t) => t.dir === dir))
        .map((t) => pick(t, bytes))
        .filter((v): v is number => v !== undefined);
      const c = cell(vals);
      if (c) cells[name] = c;
    }
    if (Object.keys(cells).length > 0) rows.push({ metric, unit, cells, better });
  };
  const perUnit = (n: number | undefined) => (n === undefined ? undefined : (n * UNIT) / bytes);
  for (const dir of ['g2h', 'h2g'] as const) {
    const label = dir === 'g2h' ? 'guest → host' : 'host → guest';
    perTransfer(`${label} throughput`, 'MiB/s', 'higher', dir, (t) => t.mibps);
  }
  const rttCells = (p: number) => {
    const cells: Record<string, AbCell> = {};
    for (const name of backends) {
      const c = cell(good(name).map((b) => percentile(b.rtt, p)));
      if (c) cells[name] = c;
    }
    return cells;
  };
  rows.push({ metric: '64 B round trip p50', unit: 'µs', cells: rttCells(50), better: 'lower' });
  rows.push({ metric: '64 B round trip p99', unit: 'µs', cells: rttCells(99), better: 'lower' });
  for (const dir of ['g2h', 'h2g'] as const) {
    const label = dir === 'g2h' ? 'g→h' : 'h→g';
    perTransfer(`${label} CPU: backend`, 's/GiB', 'lower', dir, (t, n) => (t.cpu.backend * GiB) / n);
    perTransfer(`${label} CPU: qemu`, 's/GiB', 'lower', dir, (t, n) => (t.cpu.qemu * GiB) / n);
    perTransfer(`${label} guest virtio interrupts`, '/128 MiB', 'lower', dir, (t) =>
      perUnit(Object.values(t.interrupts).reduce((s, v) => s + v, 0)),
    );
    // The data packets of the direction, and the credit updates going the other way.
    const data = dir === 'g2h' ? 'toHost' : 'fromHost';
    const back = dir === 'g2h' ? 'fromHost' : 'toHost';
    perTransfer(`${label} guest RW packets`, '/128 MiB', 'lower', dir, (t) =>
      perUnit(tracePackets(t, data, '5')?.packets),
    );
    perTransfer(`${label} mean RW payload`, 'KiB', 'higher', dir, (t) => {
      const p = tracePackets(t, data, '5');
      return p && p.packets > 0 ? p.bytes / p.packets / 1024 : undefined;
    });
    perTransfer(`${label} credit updates (receiver → sender)`, '/128 MiB', 'lower', dir, (t) =>
      perUnit(tracePackets(t, back, '6')?.packets),
    );
    perTransfer(`${label} vmm: kicks read`, '/128 MiB', 'lower', dir, (t) => perUnit(ringDelta(t, 'kicks')));
    perTransfer(`${label} vmm: calls signalled`, '/128 MiB', 'lower', dir, (t) =>
      perUnit(ringDelta(t, 'calls')),
    );
    perTransfer(`${label} vmm: counted syscalls`, '/128 MiB', 'lower', dir, (t) =>
      perUnit(countedSyscalls(t)),
    );
  }
  const notOurs = backends.find((b) => b !== 'passfd-broker') ?? null;
  const baseline = baselineName && backends.includes(baselineName) ? baselineName : notOurs;
  return {
    backends,
    baseline,
    rows,
    failures: boots
      .filter((b) => !b.ok)
      .map((b) => ({
        backend: b.backend,
        round: b.round,
        error: b.error ?? 'unknown',
        ...(b.logs ? { logs: b.logs } : {}),
      })),
    good: Object.fromEntries(backends.map((n) => [n, good(n).length])),
    load: cell(boots.flatMap((b) => b.transfers.map((t) => t.load))) ?? {
      median: Number.NaN,
      min: Number.NaN,
      max: Number.NaN,
      n: 0,
    },
  };
}

function cellText(c: AbCell | undefined): string {
  if (!c) return 'n/a';
  return c.n > 1 ? `${fmt(c.median)} (${fmt(c.min)}–${fmt(c.max)})` : fmt(c.median);
}

/** Header and rows of the table: metric, unit, one column per backend, then each backend's ratio to the baseline. */
export function abTable(s: AbSummary): string[][] {
  const others = s.baseline ? s.backends.filter((b) => b !== s.baseline) : [];
  const head = ['metric', 'unit', ...s.backends, ...others.map((b) => `${b}/${s.baseline}`)];
  const body = s.rows.map((r) => [
    r.metric,
    r.unit,
    ...s.backends.map((b) => cellText(r.cells[b])),
    ...others.map((b) => {
      const x = r.cells[b]?.median;
      const y = s.baseline ? r.cells[s.baseline]?.median : undefined;
      return x !== undefined && y !== undefined && y !== 0 ? fmtRatio(x / y) : '';
    }),
  ]);
  return [head, ...body];
}

export function renderAbText(s: AbSummary): string {
  const t = abTable(s);
  const widths = t[0]!.map((_, i) => Math.max(...t.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [
    line(t[0]!),
    widths.map((w) => '─'.repeat(w)).join('  '),
    ...t.slice(1).map(line),
    '',
    ...abNotes(s),
  ].join('\n');
}

export function renderAbMarkdown(s: AbSummary): string {
  const t = abTable(s);
  const row = (r: string[]) => `| ${r.join(' | ')} |`;
  return [
    row(t[0]!),
    row(t[0]!.map((_, i) => (i < 2 ? '---' : '---:'))),
    ...t.slice(1).map(row),
    '',
    ...abNotes(s).map((n) => `${n}  `),
  ].join('\n');
}

function abNotes(s: AbSummary): string[] {
  const notes = [
    `medians (min–max) over good boots: ${s.backends.map((b) => `${b} ${s.good[b]}`).join(', ')}; ` +
      `1-min load average during transfers ${fmt(s.load.median)} (${fmt(s.load.min)}–${fmt(s.load.max)})`,
  ];
  for (const f of s.failures)
    notes.push(
      `failed boot: ${f.backend}, round ${f.round + 1}: ${f.error}${f.logs ? ` (logs: ${f.logs})` : ''}`,
    );
  return notes;
}
