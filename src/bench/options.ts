/**
 * What a benchmark run measures and how much: scenario selection, byte
 * sizes ("64MiB", "1GiB", "1000000"), repetitions and loop bounds, with the
 * defaults of a full run and of `--quick` (a run that fits in a minute on a
 * 2-core machine), for the loopback stack and for a QEMU guest. Every load
 * loop in the scenarios is bounded by a count from here *and* by `timeoutMs`.
 *
 * QEMU guest defaults are smaller: under TCG every guest instruction is
 * emulated (passfd moves ~60-150 MiB/s each way, RPC-copy a few MiB/s; a
 * 64-byte RPC-copy round trip takes milliseconds), so a 1 GiB run on every
 * path would take far too long. The full VM run takes ~3 min here, `--quick`
 * ~1 min with the boot; the timeouts are sized for that pace. The full run
 * takes 5 repetitions, not 3: on a shared 2-core machine single repetitions
 * of one run differ by ±30 % (the first, cold one is the slowest), and two
 * back-to-back 3-rep runs disagreed by up to 25-30 % on their medians
 * under that load; a median of 5 outvotes two disturbed repetitions
 * (docs/performance/vm-data-path.md, "Repeatability").
 */

export const SCENARIOS = [
  'throughput',
  'latency',
  'cpu',
  'setup',
  'concurrency',
  'ceiling',
  'startup',
  'soak',
  'containerd',
  'cri',
] as const;
export type Scenario = (typeof SCENARIOS)[number];
/**
 * What a run measures unless told: `containerd` (real containerd + ctr, vs
 * runc; containerd.ts) and `cri` (pods through containerd's CRI plugin, vs
 * runc; cri.ts) are asked for by name.
 */
export const DEFAULT_SCENARIOS: readonly Scenario[] = SCENARIOS.filter(
  (s) => s !== 'containerd' && s !== 'cri',
);

/**
 * A QEMU run's default scenarios: all but `startup`, which times the host's
 * CLI (the loopback stack) and says nothing about the guest, and `soak`,
 * which is about the vmm's memory and would take long under TCG; both can
 * still be asked for by name.
 */
const VM_SCENARIOS: Scenario[] = DEFAULT_SCENARIOS.filter((s) => s !== 'startup' && s !== 'soak');

/** Where the agent and the container processes run: the embedded loopback stack, or a QEMU guest. */
export type BenchMode = 'loopback' | 'qemu';

export interface BenchOptions {
  scenarios: Scenario[];
  /** Bytes per throughput transfer (stdout and stdin each). */
  bytes: number;
  /** Total bytes per concurrency level, split evenly across its containers. */
  concurrencyBytes: number;
  concurrency: number[];
  reps: number;
  /** 64-byte round trips per latency repetition. */
  trips: number;
  /** Process starts per set-up repetition. */
  setups: number;
  /** Rounds of the start-up scenario (each CLI probe runs this many times). */
  startups: number;
  /** The soak scenario (soak.ts): CONNECT/close cycles of the storm, and connections held open at once. */
  soakCycles: number;
  soakHeld: number;
  /** Upper bound for any one measured operation (a transfer, a latency rep). */
  timeoutMs: number;
  chunkSize?: number;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export function defaultOptions(quick: boolean, mode: BenchMode = 'loopback'): BenchOptions {
  if (mode === 'qemu')
    return quick
      ? {
          scenarios: [...VM_SCENARIOS],
          bytes: 16 * MiB,
          concurrencyBytes: 8 * MiB,
          concurrency: [1, 4],
          reps: 2,
          trips: 300,
          setups: 10,
          startups: 10,
          soakCycles: 2000,
          soakHeld: 200,
          timeoutMs: 120_000,
        }
      : {
          scenarios: [...VM_SCENARIOS],
          bytes: 64 * MiB,
          concurrencyBytes: 32 * MiB,
          concurrency: [1, 4],
          reps: 5,
          trips: 1000,
          setups: 10,
          startups: 20,
          soakCycles: 10_000,
          soakHeld: 1000,
          timeoutMs: 300_000,
        };
  return quick
    ? {
        scenarios: [...DEFAULT_SCENARIOS],
        bytes: 32 * MiB,
        concurrencyBytes: 16 * MiB,
        concurrency: [1, 8, 64],
        reps: 2,
        trips: 1000,
        setups: 10,
        startups: 10,
        soakCycles: 2000,
        soakHeld: 200,
        timeoutMs: 30_000,
      }
    : {
        scenarios: [...DEFAULT_SCENARIOS],
        bytes: GiB,
        concurrencyBytes: 512 * MiB,
        concurrency: [1, 8, 64],
        reps: 3,
        trips: 10_000,
        setups: 50,
        startups: 20,
        soakCycles: 10_000,
        soakHeld: 1000,
        timeoutMs: 600_000,
      };
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: MiB,
  mb: 1e6,
  mib: MiB,
  g: GiB,
  gb: 1e9,
  gib: GiB,
};

/** "64MiB" → 67108864; "1G" and "1GiB" are binary, "1GB" decimal. */
export function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined)
    throw new Error(`not a byte size: ${JSON.stringify(text)} (e.g. 64MiB, 1GiB)`);
  const n = Math.round(Number(m[1]) * unit);
  if (n < 1) throw new Error(`byte size must be at least 1: ${text}`);
  return n;
}

export function formatBytes(n: number): string {
  if (n >= GiB && n % GiB === 0) return `${n / GiB} GiB`;
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}

export function parseScenarios(text: string): Scenario[] {
  const out: Scenario[] = [];
  for (const s of text.split(',').map((x) => x.trim())) {
    if (!s) continue;
    if (!(SCENARIOS as readonly string[]).includes(s))
      throw new Error(`unknown scenario ${s}: pick from ${SCENARIOS.join(',')}`);
    if (!out.includes(s as Scenario)) out.push(s as Scenario);
  }
  if (out.length === 0) throw new Error('no scenario selected');
  return out;
}

export function parsePositiveInt(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${what} must be a positive integer, not ${text}`);
  return n;
}

export function parseIntList(text: string, what: string): number[] {
  return text.split(',').map((s) => parsePositiveInt(s.trim(), what));
}
