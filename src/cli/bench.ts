/**
 * `passfd-broker bench`: passfd vs RPC-copy side by side in one run, against
 * an embedded `vmm` + `agent` (see src/bench/), or with `--vm qemu` against
 * a QEMU guest running the agent and the container processes (sizes and
 * timeouts then default to what TCG manages). Prints a table (with a
 * progress bar on stderr while it runs), or the JSON report with `--json`;
 * `--out <dir>` also writes results.json, results.md and chart.svg (the
 * directory is checked before the run; the chart needs the optional
 * packages vega and vega-lite; the results are printed even if writing them
 * fails). Exits 1 when any measurement failed. SIGINT, SIGTERM or SIGHUP
 * stop the run: the cursor comes back, the stack and the temporary
 * directories go, exit 128+n. The benchmark modules (and vega) are imported
 * only when `bench` runs.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { type BackendSpec, parseBackend } from '../bench/backend-ab/backend-spec.js';
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
import { MAX_RPC_CHUNK_SIZE } from '../config/schema.js';
import { MAX_CONNECTIONS } from '../device/defaults.js';
import { TERMINAL_SIGNALS, type VmFlags, vmSpecFrom, withKvmHint, withVmFlags } from './options.js';

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
  startups?: string;
  soakCycles?: string;
  soakHeld?: string;
  timeout?: string;
  chunkSize?: string;
  json: boolean;
  out?: string;
  progress: boolean;
  cpuProf?: string;
  backend?: BackendSpec[];
  guestTrace?: boolean;
  vmmArgs?: string;
  agentArgs?: string;
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
  if (o.startups) b.startups = parsePositiveInt(o.startups, '--startups');
  if (o.soakCycles) b.soakCycles = parsePositiveInt(o.soakCycles, '--soak-cycles');
  if (o.soakHeld) {
    b.soakHeld = parsePositiveInt(o.soakHeld, '--soak-held');
    if (b.soakHeld > MAX_CONNECTIONS - 1)
      throw new Error(
        `--soak-held ${o.soakHeld}: at most ${MAX_CONNECTIONS - 1} (the device's connection cap)`,
      );
  }
  if (o.timeout) b.timeoutMs = parsePositiveInt(o.timeout, '--timeout') * 1000;
  if (o.chunkSize) {
    b.chunkSize = parseBytes(o.chunkSize);
    if (b.chunkSize > MAX_RPC_CHUNK_SIZE)
      throw new Error(
        `--chunk-size ${o.chunkSize}: at most ${formatBytes(MAX_RPC_CHUNK_SIZE)} (${MAX_RPC_CHUNK_SIZE} bytes), which keeps a request under ttrpc's 4 MiB message limit`,
      );
  }
  return b;
}

/**
 * `--out <dir>`, checked before the run: the directory is created if it is
 * missing (its parents too, as `mkdir -p`) and must be a writable directory,
 * so a bad path fails in a second instead of after the benchmark.
 */
export function prepareOutDir(dir: string): void {
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new Error(`--out ${dir}: not a directory`);
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new Error(`--out ${dir}: cannot create it (${(err as NodeJS.ErrnoException).code ?? err})`);
  }
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch (err) {
    throw new Error(`--out ${dir}: not writable (${(err as NodeJS.ErrnoException).code ?? err})`);
  }
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
      '--startups <n>',
      `start-up scenario: runs of each CLI probe, beside node -e 0 (${defaults((b) => String(b.startups))})`,
    )
    .option(
      '--soak-cycles <n>',
      `soak scenario: CONNECT/close cycles of the storm (${defaults((b) => String(b.soakCycles))})`,
    )
    .option(
      '--soak-held <n>',
      `soak scenario: connections held open at once (${defaults((b) => String(b.soakHeld))})`,
    )
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
      'containerd scenario: `ctr run --rm … true` per runtime for the start-to-exit figure (default 20, quick 6); cri scenario: pods started per handler (default 10, quick 4)',
    )
    .option(
      '--cpu-prof <dir>',
      'write V8 CPU profiles of the vmm (and, loopback, the agent) into <dir> (open in Chrome DevTools)',
    )
    .option('--vmm-args <args>', 'with --vm qemu: extra arguments for the vmm, e.g. "--credit firecracker"')
    .option(
      '--agent-args <args>',
      'with --vm qemu: extra arguments for the guest agent, e.g. "--output-relay splice"',
    )
    .option(
      '--backend <name=command>',
      "with --vm qemu: compare this build's vhost-user-vsock backend with another, raw vsock each way and round trips, boots interleaved; {socket} {uds} {cid} {metrics} in <command> are filled in (repeatable)",
      (v: string, prev: BackendSpec[]) => parseBackend(v, prev),
      [],
    )
    .option(
      '--guest-trace',
      "with --backend: count the guest's vsock packets with its kernel tracepoints",
      false,
    )
    .action(async (opts: BenchCliOptions) => {
      const vm = vmSpecFrom(opts);
      const vmOnly = [
        ['--vmm-args', opts.vmmArgs],
        ['--agent-args', opts.agentArgs],
      ].filter(([, v]) => v !== undefined);
      if (!vm && vmOnly.length > 0)
        throw new Error(
          `${vmOnly.map(([f]) => f).join(', ')} need --vm qemu (the loopback stack runs in this process)`,
        );
      if (opts.backend && opts.backend.length > 0) {
        if (!vm) throw new Error('--backend compares vhost-user backends: it needs --vm qemu');
        const [{ runAbCli }, { loadConfig }, { configuredGuestKernel }] = await Promise.all([
          import('../bench/backend-ab/cli.js'),
          import('../config/load.js'),
          import('../vm/guest-kernel.js'),
        ]);
        process.exitCode = await runAbCli({
          kernel: configuredGuestKernel(loadConfig(opts.config).hypervisor),
          backends: opts.backend,
          boots: opts.reps ? parsePositiveInt(opts.reps, '--reps') : 4,
          bytes: opts.bytes ? parseBytes(opts.bytes) : 128 * 1024 * 1024,
          trips: opts.trips ? parsePositiveInt(opts.trips, '--trips') : 500,
          timeoutMs: (opts.timeout ? parsePositiveInt(opts.timeout, '--timeout') : 300) * 1000,
          guestTrace: opts.guestTrace ?? false,
          vm,
          json: opts.json,
          progress: opts.progress,
          ...(opts.out ? { out: opts.out } : {}),
          ...(opts.vmmArgs ? { ownArgs: opts.vmmArgs } : {}),
        });
        return;
      }
      const bench = benchOptionsFrom(opts);
      // `containerd` is a run of its own (a private containerd and ctr, passfd vs runc: bench/containerd.ts).
      // `cri` too (pods through containerd's CRI plugin, passfd and RPC-copy vs runc: bench/cri.ts).
      const withContainerd = bench.scenarios.includes('containerd');
      const withCri = bench.scenarios.includes('cri');
      if ((withContainerd || withCri) && vm)
        throw new Error(
          `the ${withContainerd ? 'containerd' : 'cri'} scenario runs the loopback guest (drop --vm)`,
        );
      const starts = opts.starts ? parsePositiveInt(opts.starts, '--starts') : opts.quick ? 6 : 20;
      bench.scenarios = bench.scenarios.filter((s) => s !== 'containerd' && s !== 'cri');
      if (opts.out) prepareOutDir(opts.out);
      // What an earlier bench or run killed with -9 could not remove.
      (await import('../util/private-dir.js')).sweepStalePrivateDirs();
      // Loaded here, not at the top: every role (vmm, agent) runs this binary, and the
      // charting libraries would slow down all of their starts.
      const [{ loadConfig }, { runBench, BenchInterrupted }, { writeOutputs }, { toJson }, { renderTable }] =
        await Promise.all([
          import('../config/load.js'),
          import('../bench/runner.js'),
          import('../bench/output.js'),
          import('../bench/results.js'),
          import('../bench/terminal-table.js'),
        ]);
      // Ctrl-C (or SIGTERM/SIGHUP): the cursor comes back, the stack and the temporary
      // directories go, exit 128+n; a second signal exits at once.
      const abort = new AbortController();
      const onSignal = (sig: NodeJS.Signals) => {
        if (abort.signal.aborted) process.exit(128 + os.constants.signals[sig]);
        abort.abort(sig);
      };
      for (const sig of TERMINAL_SIGNALS) process.on(sig, onSignal);
      let report: Awaited<ReturnType<typeof runBench>> | null = null;
      let containerd: import('../bench/containerd.js').ContainerdBenchReport | null = null;
      let cri: import('../bench/cri.js').CriBenchReport | null = null;
      try {
        if (bench.scenarios.length > 0) {
          report = await runBench({
            config: loadConfig(opts.config),
            configPath: opts.config,
            bench,
            progress: opts.progress,
            abort: abort.signal,
            ...(vm ? { vm } : {}),
            ...(opts.cpuProf ? { cpuProfDir: opts.cpuProf } : {}),
            ...(opts.vmmArgs ? { vmmArgs: words(opts.vmmArgs) } : {}),
            ...(opts.agentArgs ? { agentArgs: words(opts.agentArgs) } : {}),
          }).catch((err: Error) => {
            // Measurement failures are in the report; what escapes is a stack that did not start.
            throw vm && !(err instanceof BenchInterrupted) ? withKvmHint(err, vm) : err;
          });
        }
        if (withContainerd) {
          const { runContainerdBench } = await import('../bench/containerd.js');
          containerd = await runContainerdBench({
            bytes: bench.bytes,
            reps: bench.reps,
            starts,
            timeoutMs: bench.timeoutMs,
            progress: opts.progress,
            abort: abort.signal,
          });
        }
        if (withCri) {
          const { runCriBench } = await import('../bench/cri.js');
          cri = await runCriBench({
            // Log lines go through containerd's log writer: an explicit --bytes, else 256 MiB.
            bytes: opts.bytes ? bench.bytes : opts.quick ? 32 * 1024 * 1024 : 256 * 1024 * 1024,
            reps: bench.reps,
            starts: opts.starts ? starts : opts.quick ? 4 : 10,
            timeoutMs: bench.timeoutMs,
            progress: opts.progress,
            abort: abort.signal,
          });
        }
      } catch (err) {
        if (err instanceof BenchInterrupted) {
          // Everything bench started is gone; a step still in flight is abandoned.
          process.stderr.write(`bench: ${err.message}; stopped\n`, () =>
            process.exit(128 + os.constants.signals[err.signal]),
          );
          return;
        }
        throw err;
      } finally {
        for (const sig of TERMINAL_SIGNALS) process.off(sig, onSignal);
      }
      // The results are printed even if writing the files fails. With --json and both
      // runs, one document: the containerd report under `containerd`, the CRI one under `cri`.
      if (opts.json) {
        const json = report ? toJson(report) : null;
        const parts: Record<string, unknown> = {
          ...(json ? JSON.parse(json) : {}),
          ...(containerd ? { containerd } : {}),
          ...(cri ? { cri } : {}),
        };
        // One scenario of its own alone: its report is the document.
        const only = !json && [containerd, cri].filter((r) => r !== null).length === 1;
        process.stdout.write(`${JSON.stringify(only ? (containerd ?? cri) : parts, null, 2)}\n`);
      } else {
        let printed = false;
        if (report) {
          process.stdout.write(`${renderTable(report)}\n`);
          printed = true;
        }
        if (containerd) {
          const { containerdMarkdown } = await import('../bench/containerd.js');
          process.stdout.write(`${printed ? '\n' : ''}${containerdMarkdown(containerd)}`);
          printed = true;
        }
        if (cri) {
          const { criMarkdown } = await import('../bench/cri.js');
          process.stdout.write(`${printed ? '\n' : ''}${criMarkdown(cri)}`);
        }
      }
      let writeFailed = false;
      if (opts.out) {
        try {
          const names: string[] = [];
          if (report) {
            const written = await writeOutputs(opts.out, report);
            names.push(...[written.json, written.markdown, written.chart].filter((f) => f !== null));
            if (written.chartSkipped)
              process.stderr.write(`passfd-broker bench: no chart.svg: ${written.chartSkipped}\n`);
          }
          if (containerd) {
            const { writeContainerdOutputs } = await import('../bench/containerd.js');
            names.push(...writeContainerdOutputs(opts.out, containerd));
          }
          if (cri) {
            const { writeCriOutputs } = await import('../bench/cri.js');
            names.push(...writeCriOutputs(opts.out, cri));
          }
          if (!opts.json)
            process.stdout.write(
              `\nwritten: ${names.map((f) => path.basename(f)).join(', ')} in ${opts.out}\n`,
            );
        } catch (err) {
          writeFailed = true;
          process.stderr.write(
            `passfd-broker: bench: cannot write --out ${opts.out}: ${(err as Error).message}\n`,
          );
        }
      }
      if (opts.cpuProf)
        process.stderr.write(
          `CPU profiles (*.cpuprofile) of the vmm${vm ? ' (the agent runs in the guest)' : ' and agent'}: ${opts.cpuProf}\n`,
        );
      // Any failed measurement (listed above the table and in the report's errors) fails the run.
      const errors =
        (report?.errors.length ?? 0) + (containerd?.errors.length ?? 0) + (cri?.errors.length ?? 0);
      if (errors > 0) process.stderr.write(`bench: ${errors} measurement(s) failed\n`);
      const nothing =
        (report !== null && report.summary.length === 0 && !report.startup && !report.soak) ||
        (containerd !== null && containerd.rows.length === 0) ||
        (cri !== null && cri.rows.length === 0);
      const code = nothing || errors > 0 || writeFailed ? 1 : 0;
      // Exit explicitly: a failed measurement may leave a handle behind (a FIFO nobody
      // will open again) that would otherwise keep the process alive. Flush first.
      await Promise.all([process.stdout, process.stderr].map((s) => new Promise((r) => s.write('', r))));
      process.exit(code);
    });
}

/** "--a b  --c" → ["--a", "b", "--c"] (no quoting: these are flags and plain values). */
function words(s: string): string[] {
  return s.split(/\s+/).filter(Boolean);
}
