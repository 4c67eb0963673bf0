/**
 * Runs a benchmark: starts the embedded stack (one `vmm` + `agent`, shared by
 * both paths), makes two brokers on it (passfd and RPC-copy), then for each
 * repetition runs every selected scenario once per path, alternating which
 * path goes first from one repetition to the next so warm-up and drift do
 * not favour either. A failed run is recorded and the benchmark goes on.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Broker } from '../broker/broker.js';
import { startEmbeddedStack } from '../broker/embedded-stack.js';
import type { Config } from '../config/schema.js';
import { createLogger } from '../util/log.js';
import type { BenchOptions } from './options.js';
import { clockTicksPerSecond } from './proc-cpu.js';
import { createProgress } from './progress.js';
import type { BenchReport, Path, RunError, RunRecord } from './results.js';
import { summarize } from './results.js';
import {
  type BenchContext,
  concurrentStreams,
  type IoPath,
  kernelCeiling,
  type Metrics,
  roundTrips,
  setupLatency,
  stdinThroughput,
  stdoutThroughput,
} from './scenarios.js';

interface Step {
  scenario: string;
  path: Path;
  rep: number;
  label: string;
  run(ctx: BenchContext): Promise<Metrics>;
}

/** The ordered list of measurements of a run. */
export function plan(opts: BenchOptions): Step[] {
  const sel = new Set(opts.scenarios);
  const steps: Step[] = [];
  const keep = (m: Metrics): Metrics =>
    Object.fromEntries(
      Object.entries(m).filter(([k]) =>
        k.includes('.cpu.') ? sel.has('cpu') : !k.endsWith('.mibps') || sel.has('throughput'),
      ),
    );
  for (let rep = 0; rep < opts.reps; rep++) {
    const order: IoPath[] = rep % 2 === 0 ? ['passfd', 'rpc'] : ['rpc', 'passfd'];
    const each = (
      scenario: string,
      label: string,
      run: (ctx: BenchContext, io: IoPath) => Promise<Metrics>,
    ) => {
      for (const io of order)
        steps.push({
          scenario,
          path: io,
          rep,
          label: `${label} ${io} (rep ${rep + 1})`,
          run: (c) => run(c, io),
        });
    };
    if (sel.has('ceiling'))
      steps.push({
        scenario: 'ceiling',
        path: 'kernel',
        rep,
        label: `kernel ceiling (rep ${rep + 1})`,
        run: (c) => kernelCeiling(c, opts.bytes),
      });
    if (sel.has('throughput') || sel.has('cpu')) {
      each('throughput', 'stdout', async (c, io) => keep(await stdoutThroughput(c, io, opts.bytes)));
      each('throughput', 'stdin', async (c, io) => keep(await stdinThroughput(c, io, opts.bytes)));
    }
    if (sel.has('latency')) each('latency', 'latency', (c, io) => roundTrips(c, io, opts.trips));
    if (sel.has('setup')) each('setup', 'set-up', (c, io) => setupLatency(c, io, opts.setups));
    if (sel.has('concurrency'))
      for (const k of opts.concurrency)
        each('concurrency', `${k} containers`, (c, io) => concurrentStreams(c, io, k, opts.concurrencyBytes));
  }
  return steps;
}

export interface RunBenchOptions {
  config: Config;
  bench: BenchOptions;
  progress: boolean;
}

export async function runBench(o: RunBenchOptions): Promise<BenchReport> {
  const started = performance.now();
  const log = createLogger('bench');
  const steps = plan(o.bench);
  const progress = createProgress(steps.length, o.progress);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'passfd-bench-'));
  const stack = await startEmbeddedStack({ config: o.config });
  const mk = (passfd: boolean) => {
    const config: Config = structuredClone(o.config);
    config.runtime.use_passfd_io = passfd;
    if (o.bench.chunkSize) config.runtime.rpc_chunk_size = o.bench.chunkSize;
    return new Broker({ hvsockPath: stack.hvsockPath, config, log });
  };
  const brokers = { passfd: mk(true), rpc: mk(false) };
  const ctx: BenchContext = {
    brokers,
    roles: { broker: 'self', vmm: stack.vmm.pid!, agent: stack.agent.pid! },
    dir,
    timeoutMs: o.bench.timeoutMs,
  };
  const runs: RunRecord[] = [];
  const errors: RunError[] = [];
  try {
    for (const s of steps) {
      progress.step(s.label);
      try {
        runs.push({ scenario: s.scenario, path: s.path, rep: s.rep, metrics: await s.run(ctx) });
      } catch (err) {
        const message = (err as Error).message;
        errors.push({ scenario: s.scenario, path: s.path, rep: s.rep, message });
        progress.log(`bench: ${s.label} failed: ${message}`);
      }
    }
  } finally {
    progress.done();
    await brokers.passfd.close();
    await brokers.rpc.close();
    await stack.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const { rows, ceilingMiBps } = summarize(runs);
  const cpus = os.cpus();
  return {
    meta: {
      date: new Date().toISOString(),
      host: os.hostname(),
      cpus: cpus.length,
      cpuModel: cpus[0]?.model.trim() ?? 'unknown',
      kernel: os.release(),
      node: process.version,
      clkTck: clockTicksPerSecond(),
      durationS: (performance.now() - started) / 1000,
    },
    options: { ...o.bench, rpc_chunk_size: o.bench.chunkSize ?? o.config.runtime.rpc_chunk_size },
    summary: rows,
    ceilingMiBps,
    runs,
    errors,
  };
}
