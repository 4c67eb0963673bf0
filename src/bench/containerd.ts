/**
 * The `containerd` bench scenario: the same `ctr run` of the same offline
 * busybox image through this project's shim (`io.containerd.passfd.v2`,
 * passfd IO, loopback guest) and through containerd's own
 * `io.containerd.runc.v2`, side by side against one private containerd
 * (src/containerd/private-daemon.ts), alternating which runtime goes first
 * from one repetition to the next:
 *
 * - stdout: `dd if=/dev/zero bs=1M count=N` in the container; ctr copies
 *   its stdout FIFO to its own stdout, which the bench reads and counts.
 *   MiB/s from the first byte to the last (the container's start is not in
 *   the figure); every byte must arrive.
 * - stdin: the bench writes N MiB into ctr's stdin (once the container has
 *   said it is ready: ctr sends no CloseIO for input that ended earlier),
 *   ctr copies them into the stdin FIFO, `dd of=/dev/null bs=1M` reads them.
 *   MiB/s from the first write until dd's report arrives; it must count N
 *   whole MiB blocks (`iflag=fullblock`) and no partial one.
 * - start-to-exit: wall time of `ctr run --rm … true`, from ctr's start to
 *   its exit (shim start, guest or runc, create, start, exit, delete), the
 *   median (p50) and p90 of `starts` runs; for this shim also with warm
 *   spare shims (`shim_spare_idle_s`), in a namespace of their own (spares
 *   serve any task of their containerd and namespace, so the runs without
 *   must not meet them).
 *
 * Both runtimes pay for ctr's own copying and containerd's work; what
 * differs is everything between containerd and the container process. The
 * bench needs containerd, ctr and runc (apt-get install containerd) and
 * root; it is not part of the default scenarios.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { buildBusyboxImage } from '../containerd/busybox-image.js';
import { PrivateContainerd } from '../containerd/private-daemon.js';
import { clockTicksPerSecond } from '../util/proc-stat.js';
import {
  type ContainerdMeta,
  containerdMeta,
  formatFigure,
  reportMarkdown,
  requireContainerdTools,
  stepRunner,
  writeReportFiles,
} from './containerd-report.js';
import { readCpuTicks } from './proc-cpu.js';
import { createProgress } from './progress.js';
import { median, percentile } from './stats.js';

export const CTR_RUNTIMES = { passfd: 'io.containerd.passfd.v2', runc: 'io.containerd.runc.v2' } as const;
export type CtrRuntime = keyof typeof CTR_RUNTIMES;

const IMAGE = 'localhost/passfd-bench-busybox:1';
/** The namespace of the start-to-exit runs with warm spare shims. */
const SPARE_NAMESPACE = 'passfd-spare';
const MiB = 1024 * 1024;
/** The shim wrapper of this package: bin/ two levels up from the CLI bundle (dist/cli) and from src/bench alike. */
const SHIM = path.resolve(import.meta.dirname, '../../bin/containerd-shim-passfd-v2');

export interface ContainerdBenchOptions {
  /** Bytes per transfer (a whole number of MiB is used). */
  bytes: number;
  reps: number;
  /** `ctr run --rm … true` per runtime. */
  starts: number;
  /** Bound for any one ctr run. */
  timeoutMs: number;
  progress: boolean;
  /** Aborting (with the signal's name) stops the run after the ctr call in flight: BenchInterrupted. */
  abort?: AbortSignal;
}

export interface ContainerdRow {
  metric: string;
  unit: string;
  passfd: number;
  runc: number;
  /** passfd / runc. */
  ratio: number;
  /** What the issue asks of it, when it asks. */
  target?: string;
}

interface Samples {
  stdoutMiBps: number[];
  stdinMiBps: number[];
  startMs: number[];
  /** passfd only: start-to-exit with warm spare shims. */
  startSpareMs: number[];
  /** CPU seconds per GiB during the transfers: the runtime's processes (the shim, which holds the loopback guest and its agent), and ctr. */
  stdoutCpu: { runtime: number[]; ctr: number[] };
  stdinCpu: { runtime: number[]; ctr: number[] };
}

const emptySamples = (): Samples => ({
  stdoutMiBps: [],
  stdinMiBps: [],
  startMs: [],
  startSpareMs: [],
  stdoutCpu: { runtime: [], ctr: [] },
  stdinCpu: { runtime: [], ctr: [] },
});

export interface ContainerdBenchReport {
  meta: ContainerdMeta;
  options: Omit<ContainerdBenchOptions, 'progress' | 'abort'>;
  rows: ContainerdRow[];
  samples: Record<CtrRuntime, Samples>;
  errors: string[];
}

/** Runs ctr and resolves when it exits; `onStdout`/`onStderr` see its output. Throws on a non-zero exit. */
function ctrRun(
  d: PrivateContainerd,
  args: string[],
  timeoutMs: number,
  io: {
    onStdout?: (b: Buffer) => void;
    onStderr?: (b: Buffer, stdin: NodeJS.WritableStream) => void;
    onSpawn?: (pid: number) => void;
    namespace?: string;
  } = {},
): Promise<void> {
  const child = d.spawnCtr(args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    ...(io.namespace ? { namespace: io.namespace } : {}),
  });
  io.onSpawn?.(child.pid!);
  let err = '';
  (child.stdout as Readable).on('data', (b: Buffer) => io.onStdout?.(b));
  child.stdin!.on('error', () => {});
  (child.stderr as Readable).on('data', (b: Buffer) => {
    err += b.toString();
    io.onStderr?.(b, child.stdin!);
  });
  if (!io.onStderr) child.stdin!.end();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else
        reject(
          new Error(
            `ctr ${args.slice(0, 3).join(' ')} … exited ${signal ?? code}: ${err.trim().slice(-300)}`,
          ),
        );
    });
  });
}

/**
 * The runtime's long-lived processes by command line: this project's shim (the loopback guest's
 * device and agent run inside it; a separate agent process is matched too, should one run), or
 * runc's shim.
 */
export const RUNTIME_PROCESS =
  /containerd-shim-passfd-v2\.js|passfd-broker\.js agent|containerd-shim-runc-v2/;

/**
 * CPU use of the runtime's long-lived processes (this project's shim and
 * agent, or containerd-shim-runc-v2) and of ctr between `start` and `end`,
 * from /proc/<pid>/stat. The container's own process (dd) is the same on
 * both sides and is left out.
 */
class CpuWindow {
  private readonly before = new Map<number, { role: 'runtime' | 'ctr'; ticks: number }>();

  constructor(d: PrivateContainerd, ctrPid: number) {
    for (const p of d.ownProcesses()) {
      const c = p.cmdline;
      if (RUNTIME_PROCESS.test(c)) this.add(p.process.pid, 'runtime');
    }
    this.add(ctrPid, 'ctr');
  }

  private add(pid: number, role: 'runtime' | 'ctr'): void {
    try {
      this.before.set(pid, { role, ticks: readCpuTicks(pid).self });
    } catch {
      // Gone already.
    }
  }

  /** CPU seconds per role since the start (a process gone meanwhile counts what it had at the start). */
  end(): { runtime: number; ctr: number } {
    const out = { runtime: 0, ctr: 0 };
    const hz = clockTicksPerSecond();
    for (const [pid, b] of this.before) {
      let now = b.ticks;
      try {
        now = readCpuTicks(pid).self;
      } catch {
        // Gone: nothing more to count.
      }
      out[b.role] += (now - b.ticks) / hz;
    }
    return out;
  }
}

export async function runContainerdBench(o: ContainerdBenchOptions): Promise<ContainerdBenchReport> {
  const started = performance.now();
  requireContainerdTools('containerd');
  const mib = Math.max(1, Math.round(o.bytes / MiB));
  const progress = createProgress(o.reps * 4 + o.starts * 3, o.progress, 'starting a private containerd');
  const d = await PrivateContainerd.start();
  const samples: ContainerdBenchReport['samples'] = { passfd: emptySamples(), runc: emptySamples() };
  const errors: string[] = [];
  let n = 0;
  let lastId = '';
  /** A container id of this run (the last one is what a failed step's log lines are about). */
  const nextId = (kind: string) => {
    lastId = `bench-${process.pid}-${kind}-${n++}`;
    return lastId;
  };
  try {
    d.installShim(SHIM, 'containerd-shim-passfd-v2');
    const archive = path.join(d.dir, 'image.tar');
    buildBusyboxImage({ output: archive, name: IMAGE });
    await d.importImage(archive);
    await d.importImage(archive, SPARE_NAMESPACE);
    const spareConfig = path.join(d.dir, 'spare.toml');
    fs.writeFileSync(spareConfig, '[runtime]\nshim_spare_idle_s = 300\n');
    const run = (rt: CtrRuntime, cmd: string[]) => [
      'run',
      '--rm',
      '--runtime',
      CTR_RUNTIMES[rt],
      '--fifo-dir',
      d.fifoDir,
      IMAGE,
      nextId(rt),
      ...cmd,
    ];
    const measure = stepRunner({
      scenario: 'containerd',
      progress,
      errors,
      ...(o.abort ? { abort: o.abort } : {}),
      // What the runtime said about that container (its shim logs into containerd's log).
      context: () =>
        d
          .log()
          .split('\n')
          .filter((l) => l.includes(lastId) && /\b(warn|error)\b|level=(warning|error)/.test(l))
          .slice(-5),
    });
    for (let rep = 0; rep < o.reps; rep++) {
      const order: CtrRuntime[] = rep % 2 === 0 ? ['passfd', 'runc'] : ['runc', 'passfd'];
      for (const rt of order) {
        await measure('stdout', rt, async () => {
          let bytes = 0;
          let first = 0;
          let last = 0;
          let ctrPid = 0;
          let cpu: CpuWindow | null = null;
          let used = { runtime: 0, ctr: 0 };
          await ctrRun(d, run(rt, ['dd', 'if=/dev/zero', `bs=${MiB}`, `count=${mib}`]), o.timeoutMs, {
            onSpawn: (pid) => {
              ctrPid = pid;
            },
            onStdout: (b) => {
              if (bytes === 0) {
                first = performance.now();
                cpu = new CpuWindow(d, ctrPid);
              }
              bytes += b.length;
              last = performance.now();
              if (bytes === mib * MiB && cpu) used = cpu.end();
            },
          });
          if (bytes !== mib * MiB) throw new Error(`stdout: ${bytes} of ${mib * MiB} bytes arrived`);
          samples[rt].stdoutMiBps.push(mib / ((last - first) / 1000));
          samples[rt].stdoutCpu.runtime.push(used.runtime / (mib / 1024));
          samples[rt].stdoutCpu.ctr.push(used.ctr / (mib / 1024));
        });
      }
      for (const rt of order) {
        await measure('stdin', rt, async () => {
          let from = 0;
          let report = '';
          let until = 0;
          let ctrPid = 0;
          let cpu: CpuWindow | null = null;
          let used = { runtime: 0, ctr: 0 };
          const block = Buffer.alloc(MiB, 0x61);
          await ctrRun(
            d,
            run(rt, ['sh', '-c', `echo ready >&2; exec dd of=/dev/null bs=${MiB} iflag=fullblock`]),
            o.timeoutMs,
            {
              onSpawn: (pid) => {
                ctrPid = pid;
              },
              onStderr: (b, stdin) => {
                const text = b.toString();
                if (from === 0 && text.includes('ready')) {
                  from = performance.now();
                  cpu = new CpuWindow(d, ctrPid);
                  void (async () => {
                    for (let i = 0; i < mib; i++) {
                      if (!stdin.write(block)) await new Promise((r) => stdin.once('drain', r));
                    }
                    stdin.end();
                  })();
                } else if (from > 0) {
                  report += text;
                  if (/records in/.test(report) && until === 0) {
                    until = performance.now();
                    if (cpu) used = cpu.end();
                  }
                }
              },
            },
          );
          // Whole blocks only (iflag=fullblock): exactly `mib` of them and no partial one.
          if (!report.includes(`${mib}+0 records in`)) {
            throw new Error(`stdin: dd reported ${JSON.stringify(report.trim())}, not ${mib}+0 records`);
          }
          samples[rt].stdinMiBps.push(mib / ((until - from) / 1000));
          samples[rt].stdinCpu.runtime.push(used.runtime / (mib / 1024));
          samples[rt].stdinCpu.ctr.push(used.ctr / (mib / 1024));
        });
      }
    }
    for (let i = 0; i < o.starts; i++) {
      const kinds = ['passfd', 'runc', 'spare'] as const;
      for (let k = 0; k < kinds.length; k++) {
        const kind = kinds[(i + k) % kinds.length]!;
        const rt: CtrRuntime = kind === 'runc' ? 'runc' : 'passfd';
        await measure(kind === 'spare' ? 'start-to-exit (warm spare)' : 'start-to-exit', rt, async () => {
          const args =
            kind === 'spare'
              ? [
                  'run',
                  '--rm',
                  '--runtime',
                  CTR_RUNTIMES.passfd,
                  '--runtime-config-path',
                  spareConfig,
                  '--fifo-dir',
                  d.fifoDir,
                  IMAGE,
                  nextId('spare'),
                  'true',
                ]
              : run(rt, ['true']);
          const t0 = performance.now();
          await ctrRun(d, args, o.timeoutMs, kind === 'spare' ? { namespace: SPARE_NAMESPACE } : {});
          (kind === 'spare' ? samples.passfd.startSpareMs : samples[rt].startMs).push(performance.now() - t0);
        });
      }
    }
  } finally {
    progress.done();
    await d.stop();
  }
  const row = (
    metric: string,
    unit: string,
    pick: (r: CtrRuntime) => number[],
    f: (v: number[]) => number,
    target?: string,
  ): ContainerdRow => {
    const passfd = f(pick('passfd'));
    const runc = f(pick('runc'));
    return { metric, unit, passfd, runc, ratio: passfd / runc, ...(target ? { target } : {}) };
  };
  const ok = (v: number[]) => v.length > 0;
  const rows: ContainerdRow[] = [];
  if (ok(samples.passfd.stdoutMiBps) && ok(samples.runc.stdoutMiBps))
    rows.push(
      row('stdout throughput (median)', 'MiB/s', (r) => samples[r].stdoutMiBps, median, '≥ 0.8× runc'),
    );
  if (ok(samples.passfd.stdinMiBps) && ok(samples.runc.stdinMiBps))
    rows.push(row('stdin throughput (median)', 'MiB/s', (r) => samples[r].stdinMiBps, median, '≥ 0.8× runc'));
  for (const dir of ['stdout', 'stdin'] as const) {
    const key = `${dir}Cpu` as const;
    if (ok(samples.passfd[key].runtime) && ok(samples.runc[key].runtime)) {
      rows.push(
        row(
          `${dir} CPU: runtime processes (shim with guest and agent / runc shim)`,
          'CPU s/GiB',
          (r) => samples[r][key].runtime,
          median,
        ),
      );
      rows.push(row(`${dir} CPU: ctr`, 'CPU s/GiB', (r) => samples[r][key].ctr, median));
    }
  }
  if (ok(samples.passfd.startMs) && ok(samples.runc.startMs)) {
    rows.push(row('ctr run --rm … true, p50', 'ms', (r) => samples[r].startMs, median, '≤ 2× runc'));
    rows.push(
      row(
        'ctr run --rm … true, p90',
        'ms',
        (r) => samples[r].startMs,
        (v) => percentile(v, 90),
      ),
    );
  }
  if (ok(samples.passfd.startSpareMs) && ok(samples.runc.startMs)) {
    // This shim with warm spares, against runc's same runs.
    const spare = (r: CtrRuntime) => (r === 'passfd' ? samples.passfd.startSpareMs : samples.runc.startMs);
    rows.push(row('ctr run --rm … true, p50, warm spare shims', 'ms', spare, median, '≤ 2× runc'));
    rows.push(row('ctr run --rm … true, p90, warm spare shims', 'ms', spare, (v) => percentile(v, 90)));
  }
  return {
    meta: containerdMeta(started),
    options: { bytes: mib * MiB, reps: o.reps, starts: o.starts, timeoutMs: o.timeoutMs },
    rows,
    samples,
    errors,
  };
}

/** The report as a Markdown table (also what the terminal shows). */
export function containerdMarkdown(r: ContainerdBenchReport): string {
  return reportMarkdown({
    title:
      'containerd scenario: `ctr run` through io.containerd.passfd.v2 (passfd, loopback guest) vs io.containerd.runc.v2, side by side',
    meta: r.meta,
    what: `${r.options.bytes / MiB} MiB per transfer × ${r.options.reps} reps, ${r.options.starts} starts per runtime`,
    figures: ['passfd', 'runc', 'passfd/runc'],
    rows: r.rows.map((x) => [
      x.metric,
      x.unit,
      formatFigure(x.passfd),
      formatFigure(x.runc),
      `${x.ratio.toFixed(2)}×`,
      x.target ?? '',
    ]),
    errors: r.errors,
  });
}

/** Writes containerd.json and containerd.md into `dir`; returns their paths. */
export function writeContainerdOutputs(dir: string, r: ContainerdBenchReport): string[] {
  return writeReportFiles(dir, 'containerd', r, containerdMarkdown(r));
}
