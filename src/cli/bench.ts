/**
 * `passfd-broker bench`: passfd vs RPC-copy side by side in one run, against
 * an embedded `vmm` + `agent` (see src/bench/). Prints a table (with a
 * progress bar on stderr while it runs), or the JSON report with `--json`;
 * `--out <dir>` also writes results.json, results.md and chart.svg. The
 * benchmark modules (and vega) are imported only when `bench` runs.
 */
import type { Command } from 'commander';
import {
  type BenchOptions,
  defaultOptions,
  parseBytes,
  parseIntList,
  parsePositiveInt,
  parseScenarios,
  SCENARIOS,
} from '../bench/options.js';
import { loadConfig } from '../config/load.js';

interface BenchCliOptions {
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
}

export function benchOptionsFrom(o: BenchCliOptions): BenchOptions {
  const b = defaultOptions(o.quick);
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

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('passfd vs RPC-copy side by side: throughput, latency, CPU per process, set-up, concurrency')
    .option('--config <toml>', 'configuration file (see config.toml.example)')
    .option('--quick', 'small sizes and counts: the whole run in under a minute', false)
    .option('--scenarios <list>', `comma-separated subset of ${SCENARIOS.join(',')}`)
    .option('--bytes <size>', 'bytes per throughput transfer (default 1GiB, quick 32MiB)')
    .option(
      '--concurrency-bytes <size>',
      'total bytes per concurrency level, split across containers (default 512MiB, quick 16MiB, else --bytes)',
    )
    .option('--concurrency <list>', 'container counts streaming at once (default 1,8,64)')
    .option('--reps <n>', 'repetitions per path (default 3, quick 2)')
    .option('--trips <n>', '64-byte round trips per latency repetition (default 10000, quick 1000)')
    .option('--setups <n>', 'process starts per set-up repetition (default 50, quick 10)')
    .option('--timeout <s>', 'bound for any one measured operation, seconds (default 600, quick 30)')
    .option('--chunk-size <size>', 'RPC-copy bytes per request (default: config rpc_chunk_size, 32KiB)')
    .option('--json', 'print the JSON report on stdout instead of the table', false)
    .option('--out <dir>', 'write results.json, results.md and chart.svg into <dir>')
    .option('--no-progress', 'no progress bar')
    .action(async (opts: BenchCliOptions) => {
      const bench = benchOptionsFrom(opts);
      // Loaded here, not at the top: every role (vmm, agent) runs this binary, and the
      // charting libraries would slow down all of their starts.
      const [{ runBench }, { writeOutputs }, { toJson }, { renderTable }] = await Promise.all([
        import('../bench/runner.js'),
        import('../bench/output.js'),
        import('../bench/results.js'),
        import('../bench/terminal-table.js'),
      ]);
      const report = await runBench({ config: loadConfig(opts.config), bench, progress: opts.progress });
      if (opts.out) await writeOutputs(opts.out, report);
      process.stdout.write(opts.json ? `${toJson(report)}\n` : `${renderTable(report)}\n`);
      if (opts.out && !opts.json)
        process.stdout.write(`\nwritten: ${opts.out}/results.json, results.md, chart.svg\n`);
      process.exitCode = report.summary.length === 0 ? 1 : 0;
    });
}
