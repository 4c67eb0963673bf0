/**
 * `passfd-broker bench`: passfd vs RPC-copy side by side in one run, against
 * an embedded `vmm` + `agent` (see src/bench/), or with `--vm qemu` against
 * a QEMU guest running the agent and the container processes (sizes and
 * timeouts then default to what TCG manages). Prints a table (with a
 * progress bar on stderr while it runs), or the JSON report with `--json`;
 * `--out <dir>` also writes results.json, results.md and chart.svg. The
 * benchmark modules (and vega) are imported only when `bench` runs.
 */
import type { Command } from 'commander';
import {
  type BenchOptions,
  defaultOptions,
  formatBytes,
  parseBytes,
  parseIntList,
  parsePositiveInt,
  parseScenarios,
  SCENARIOS,
} from '../bench/options.js';
import { loadConfig } from '../config/load.js';
import { type VmFlags, vmSpecFrom, withKvmHint, withVmFlags } from './options.js';

interface BenchCliOptions extends VmFlags {
  config?: string;
  quick: boolean;
  scenarios?: string;
  bytes?: string;
  concurrencyBytes?: string;
  concurrency?: string;
  reps?: string;
  trips?: string;
  setups?: string;
  timeout?: string;
  chunkSize?: string;
  json: boolean;
  out?: string;
  progress: boolean;
  cpuProf?: string;
  starts?: string;
}

/** The run's sizes and counts: the mode's defaults (loopback or `--vm qemu`, full or `--quick`), then explicit flags. */
export function benchOptionsFrom(o: BenchCliOptions): BenchOptions {
  const b = defaultOptions(o.quick, o.vm === 'qemu' ? 'qemu' : 'loopback');
  if (o.scenarios) b.scenarios = parseScenarios(o.scenarios);
  if (o.bytes) {
    b.bytes = parseBytes(o.bytes);
    if (!o.concurrencyBytes) b.concurrencyBytes = b.bytes;
  }
  if (o.concurrencyBytes) b.concurrencyBytes = parseBytes(o.concurrencyBytes);
  if (o.concurrency) b.concurrency = parseIntList(o.concurrency, '--concurrency');
  if (o.reps) b.reps = parsePositiveInt(o.reps, '--reps');
  if (o.trips) b.trips = parsePositiveInt(o.trips, '--trips');
  if (o.setups) b.setups = parsePositiveInt(o.setups, '--setups');
  if (o.timeout) b.timeoutMs = parsePositiveInt(o.timeout, '--timeout') * 1000;
  if (o.chunkSize) b.chunkSize = parseBytes(o.chunkSize);
  return b;
}

/** "default 1 GiB, quick 32 MiB; --vm qemu: 64 MiB, quick 16 MiB" for one option, from defaultOptions. */
function defaults(show: (b: BenchOptions) => string): string {
  const [full, quick, vm, vmQuick] = [
    defaultOptions(false),
    defaultOptions(true),
    defaultOptions(false, 'qemu'),
    defaultOptions(true, 'qemu'),
  ].map(show);
  return `default ${full}, quick ${quick}; --vm qemu: ${vm}, quick ${vmQuick}`;
}

export function registerBench(program: Command): void {
  withVmFlags(
    program
      .command('bench')
      .description(
        'passfd vs RPC-copy side by side: throughput, latency, CPU per process, set-up, concurrency',
      )
      .option('--config <toml>', 'configuration file (see config.toml.example)')
      .option(
        '--quick',
        'small sizes and counts: the whole run in about a minute (--vm qemu: a couple of minutes, boot included)',
        false,
      ),
  )
    .option('--scenarios <list>', `comma-separated subset of ${SCENARIOS.join(',')}`)
    .option('--bytes <size>', `bytes per throughput transfer (${defaults((b) => formatBytes(b.bytes))})`)
    .option(
      '--concurrency-bytes <size>',
      `total bytes per concurrency level, split across containers (${defaults((b) => formatBytes(b.concurrencyBytes))}; else --bytes if given)`,
    )
    .option(
      '--concurrency <list>',
      `container counts streaming at once (${defaults((b) => b.concurrency.join(','))})`,
    )
    .option('--reps <n>', `repetitions per path (${defaults((b) => String(b.reps))})`)
    .option('--trips <n>', `64-byte round trips per latency repetition (${defaults((b) => String(b.trips))})`)
    .option('--setups <n>', `process starts per set-up repetition (${defaults((b) => String(b.setups))})`)
    .option(
      '--timeout <s>',
      `bound for any one measured operation, seconds (${defaults((b) => String(b.timeoutMs / 1000))})`,
    )
    .option('--chunk-size <size>', 'RPC-copy bytes per request (default: config rpc_chunk_size, 32KiB)')
    .option('--json', 'print the JSON report on stdout instead of the table', false)
    .option('--out <dir>', 'write results.json, results.md and chart.svg into <dir>')
    .option('--no-progress', 'no progress bar')
    .option(
      '--starts <n>',
      'containerd scenario: `ctr run --rm … true` per runtime for the start-to-exit figure (default 20, quick 6)',
    )
    .option(
      '--cpu-prof <dir>',
      'write V8 CPU profiles of the vmm and agent children into <dir> (loopback stack; open in Chrome DevTools)',
    )
    .action(async (opts: BenchCliOptions) => {
      const vm = vmSpecFrom(opts);
      if (opts.cpuProf && vm)
        throw new Error(
          '--cpu-prof profiles the loopback stack; the guest agent runs inside QEMU (drop --vm)',
        );
      const bench = benchOptionsFrom(opts);
      const withContainerd = bench.scenarios.includes('containerd');
      if (withContainerd && vm)
        throw new Error('the containerd scenario runs the loopback guest (drop --vm)');
      bench.scenarios = bench.scenarios.filter((s) => s !== 'containerd');
      // Loaded here, not at the top: every role (vmm, agent) runs this binary, and the
      // charting libraries would slow down all of their starts.
      const [{ runBench }, { writeOutputs }, { toJson }, { renderTable }] = await Promise.all([
        import('../bench/runner.js'),
        import('../bench/output.js'),
        import('../bench/results.js'),
        import('../bench/terminal-table.js'),
      ]);
      let failed = false;
      if (bench.scenarios.length > 0) {
        const report = await runBench({
          config: loadConfig(opts.config),
          bench,
          progress: opts.progress,
          ...(vm ? { vm } : {}),
          ...(opts.cpuProf ? { cpuProfDir: opts.cpuProf } : {}),
        }).catch((err: Error) => {
          // Measurement failures are in the report; what escapes is a stack that did not start.
          throw vm ? withKvmHint(err, vm) : err;
        });
        if (opts.out) await writeOutputs(opts.out, report);
        process.stdout.write(opts.json ? `${toJson(report)}\n` : `${renderTable(report)}\n`);
        if (opts.out && !opts.json)
          process.stdout.write(`\nwritten: ${opts.out}/results.json, results.md, chart.svg\n`);
        if (opts.cpuProf)
          process.stderr.write(`CPU profiles of vmm and agent (*.cpuprofile): ${opts.cpuProf}\n`);
        failed ||= report.summary.length === 0;
      }
      if (withContainerd) {
        const { runContainerdBench, writeContainerdOutputs, containerdMarkdown } = await import(
          '../bench/containerd.js'
        );
        const report = await runContainerdBench({
          bytes: bench.bytes,
          reps: bench.reps,
          starts: opts.starts ? parsePositiveInt(opts.starts, '--starts') : opts.quick ? 6 : 20,
          timeoutMs: bench.timeoutMs,
          progress: opts.progress,
        });
        if (opts.out) writeContainerdOutputs(opts.out, report);
        process.stdout.write(
          opts.json ? `${JSON.stringify(report, null, 2)}\n` : `\n${containerdMarkdown(report)}`,
        );
        if (opts.out && !opts.json)
          process.stdout.write(`\nwritten: ${opts.out}/containerd.json, containerd.md\n`);
        failed ||= report.rows.length === 0;
      }
      process.exitCode = failed ? 1 : 0;
    });
}
