/**
 * Runs a benchmark: starts the stack both paths share — the embedded
 * loopback stack (one `vmm` + `agent` on the host), or with `vm` a QEMU
 * guest (`vmm --vhost-user` on the host, the agent and every container
 * process inside the guest; src/vm/vm-stack.ts) — makes two brokers on it
 * (passfd and RPC-copy), then for each repetition runs every selected
 * scenario once per path, alternating which path goes first from one
 * repetition to the next so warm-up and drift do not favour either. A failed
 * run is recorded and the benchmark goes on. Throughput and CPU runs start
 * with an untimed warm-up transfer each way per path. The start-up scenario
 * (startup.ts) runs first, before any stack exists, and needs none: a run of
 * only `--scenarios startup` starts no stack at all. The soak scenario
 * (soak.ts) runs once, last, on the same stack: it is about what the load
 * before it and its own left in the vmm.
 *
 * In a guest the FIFOs, their `dd`/`wc` clients and the kernel ceiling stay
 * on the host (containerd's side is the host's); the container processes
 * (`dd`, `wc`, `cat`, `sh`, `true`) are the host's binaries, which the guest
 * runs from the host root it mounts read-only over 9p.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Broker } from '../broker/broker.js';
import { startEmbeddedStack } from '../broker/embedded-stack.js';
import type { Config } from '../config/schema.js';
import { chosenLogLevel, createLogger } from '../util/log.js';
import { makePrivateDir } from '../util/private-dir.js';
import { clockTicksPerSecond } from '../util/proc-stat.js';
import { startVmStack } from '../vm/vm-stack.js';
import type { BenchMode, BenchOptions } from './options.js';
import type { CpuRoles } from './proc-cpu.js';
import { createProgress } from './progress.js';
import type { BenchReport, Path, RunError, RunRecord, VmMeta } from './results.js';
import { cpuRoleLabels, hostMeta, summarize } from './results.js';
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
import { SOAK_SETTLE_MS, type SoakResult, soak } from './soak.js';
import { measureStartup, type StartupRow } from './startup.js';

interface Step {
  scenario: string;
  path: Path;
  rep: number;
  label: string;
  /** Run, but not recorded: it only warms the stack up. */
  warmup?: boolean;
  run(ctx: BenchContext): Promise<Metrics>;
}

/** Bytes of each untimed warm-up transfer: a quarter of --bytes, between 1 and 32 MiB. */
const warmupBytes = (bytes: number) => Math.min(32 << 20, Math.max(1 << 20, Math.floor(bytes / 4)));

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
  // Untimed, before the first repetition: one stdout and one stdin transfer per path, so that a
  // fresh stack's first-time costs (a new guest's page cache and its rings' first round, the JIT,
  // the first FIFOs) fall in no repetition's figures.
  if (sel.has('throughput') || sel.has('cpu')) {
    const bytes = warmupBytes(opts.bytes);
    for (const io of ['passfd', 'rpc'] as const)
      steps.push({
        scenario: 'warm-up',
        path: io,
        rep: 0,
        warmup: true,
        label: `warm-up ${io} (untimed)`,
        run: async (c) => {
          await stdoutThroughput(c, io, bytes);
          await stdinThroughput(c, io, bytes);
          return {};
        },
      });
  }
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
        label: `kernel ceiling, host (rep ${rep + 1})`,
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

/** The QEMU guest to run in (`--vm qemu`), every field resolved. */
export interface VmBenchSpec {
  accel: 'tcg' | 'kvm';
  cpus: number;
  memoryMiB: number;
}

/** The run was interrupted by a signal (RunBenchOptions.abort): everything it started is gone. */
export class BenchInterrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
    this.name = 'BenchInterrupted';
  }
}

export interface RunBenchOptions {
  config: Config;
  /** The file `config` came from (the vmm reads its access keys from it). */
  configPath?: string;
  bench: BenchOptions;
  progress: boolean;
  /** Run the agent and the container processes in a QEMU guest instead of the loopback stack. */
  vm?: VmBenchSpec;
  /** Write V8 CPU profiles here (node --cpu-prof): of the vmm and agent children, or in a guest of the vmm. */
  cpuProfDir?: string;
  /** Extra arguments for the vmm (e.g. `--credit firecracker`). */
  vmmArgs?: string[];
  /** Extra arguments for the guest agent (e.g. `--output-relay splice`). */
  agentArgs?: string[];
  /** Aborted (reason: the signal's name) when the user interrupts the run. */
  abort?: AbortSignal;
}

interface BenchStack {
  hvsockPath: string;
  roles: CpuRoles;
  vm?: VmMeta;
  stop(): Promise<void>;
}

function qemuVersion(): string {
  try {
    return execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8', timeout: 10_000 })
      .split('\n')[0]!
      .trim();
  } catch {
    return 'unknown';
  }
}

/**
 * QEMU's start budget: TCG boots in ~20 s on an idle machine, a loaded shared
 * one needs slack; KVM boots in seconds where it works and fails or hangs
 * where it does not (nested virtualisation), so it gets a minute.
 */
const VM_START_TIMEOUT_MS = { tcg: 300_000, kvm: 60_000 } as const;

async function startStack(o: RunBenchOptions): Promise<BenchStack> {
  const { config, configPath, vm, cpuProfDir } = o;
  const nodeArgs = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(cpuProfDir)}`] : [];
  if (!vm) {
    const s = await startEmbeddedStack({ config, configPath, nodeArgs, logLevel: chosenLogLevel() });
    return {
      hvsockPath: s.hvsockPath,
      roles: { broker: 'self', vmm: s.vmm.pid!, agent: s.agent.pid! },
      stop: () => s.stop(),
    };
  }
  const s = await startVmStack({
    config,
    configPath,
    logLevel: chosenLogLevel(),
    accel: vm.accel,
    cpus: vm.cpus,
    memoryMiB: vm.memoryMiB,
    startTimeoutMs: VM_START_TIMEOUT_MS[vm.accel],
    vmmArgs: o.vmmArgs ?? [],
    agentArgs: o.agentArgs ?? [],
    vmmNodeArgs: nodeArgs,
  });
  return {
    hvsockPath: s.hvsockPath,
    roles: { broker: 'self', vmm: s.vmm.pid!, qemu: s.qemu.process.pid! },
    vm: {
      ...vm,
      bootS: s.bootMs / 1000,
      guestKernel: s.kernel.version,
      qemu: qemuVersion(),
    },
    stop: () => s.stop(),
  };
}

export async function runBench(o: RunBenchOptions): Promise<BenchReport> {
  const started = performance.now();
  const log = createLogger('bench');
  const mode: BenchMode = o.vm ? 'qemu' : 'loopback';
  const steps = plan(o.bench);
  const withStartup = o.bench.scenarios.includes('startup');
  const withSoak = o.bench.scenarios.includes('soak');
  const progress = createProgress(
    steps.length + (withStartup ? 1 : 0) + (withSoak ? 1 : 0),
    o.progress,
    withStartup ? 'start-up' : o.vm ? `booting the QEMU guest (${o.vm.accel})` : 'starting vmm + agent',
  );
  // Interrupted (o.abort): the cursor comes back at once, the stack and the
  // directory go as soon as the stack exists, and runBench rejects with
  // BenchInterrupted without waiting for the step in flight.
  let teardown: (() => Promise<void>) | null = null;
  let interrupted: (() => void) | null = null;
  const onAbort = () => {
    progress.done();
    void teardown?.().then(() => interrupted?.());
  };
  o.abort?.addEventListener('abort', onAbort, { once: true });
  const runs: RunRecord[] = [];
  const errors: RunError[] = [];
  // Start-up first, before the stack below exists: its processes would compete for the CPU.
  let startup: StartupRow[] | undefined;
  let soaked: SoakResult | undefined;
  if (withStartup) {
    progress.step(`start-up: node -e 0, --help, run -- true, vmm, agent × ${o.bench.startups}`);
    try {
      startup = await measureStartup({ count: o.bench.startups });
    } catch (err) {
      const message = (err as Error).message;
      errors.push({ scenario: 'startup', path: 'cli', rep: 0, message });
      progress.log(`bench: start-up failed: ${message}`);
    }
  }
  const report = (stack: BenchStack | null): BenchReport => {
    const { rows, ceilingMiBps } = summarize(runs, mode);
    return {
      meta: {
        ...hostMeta(),
        clkTck: clockTicksPerSecond(),
        durationS: (performance.now() - started) / 1000,
        mode,
        ...(stack?.vm ? { vm: stack.vm } : {}),
        roles: cpuRoleLabels(mode),
      },
      options: { ...o.bench, rpc_chunk_size: o.bench.chunkSize ?? o.config.runtime.rpc_chunk_size },
      summary: rows,
      ceilingMiBps,
      runs,
      errors,
      ...(startup ? { startup } : {}),
      ...(soaked ? { soak: soaked } : {}),
    };
  };
  if (o.abort?.aborted || (steps.length === 0 && !withSoak)) {
    progress.done();
    o.abort?.removeEventListener('abort', onAbort);
    if (o.abort?.aborted) throw new BenchInterrupted(o.abort.reason as NodeJS.Signals);
    return report(null);
  }
  const dir = makePrivateDir('passfd-bench-');
  let stack: BenchStack;
  try {
    stack = await startStack(o);
  } catch (err) {
    progress.done();
    fs.rmSync(dir, { recursive: true, force: true });
    o.abort?.removeEventListener('abort', onAbort);
    throw err;
  }
  const mk = (passfd: boolean) => {
    const config: Config = structuredClone(o.config);
    config.runtime.use_passfd_io = passfd;
    if (o.bench.chunkSize) config.runtime.rpc_chunk_size = o.bench.chunkSize;
    return new Broker({ hvsockPath: stack.hvsockPath, config, log });
  };
  const brokers = { passfd: mk(true), rpc: mk(false) };
  let tornDown: Promise<void> | null = null;
  teardown = () =>
    (tornDown ??= (async () => {
      progress.done();
      await brokers.passfd.close();
      await brokers.rpc.close();
      await stack.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    })());
  const ctx: BenchContext = {
    brokers,
    roles: stack.roles,
    dir,
    timeoutMs: o.bench.timeoutMs,
  };
  const measure = async () => {
    for (const s of steps) {
      if (o.abort?.aborted) return;
      progress.step(s.label);
      try {
        const metrics = await s.run(ctx);
        if (!s.warmup) runs.push({ scenario: s.scenario, path: s.path, rep: s.rep, metrics });
      } catch (err) {
        if (o.abort?.aborted) return;
        const message = (err as Error).message;
        // A warm-up is not a measurement: its failure is shown, but only the timed repetitions
        // that follow (which meet the same fault if it is real) count towards the exit status.
        if (!s.warmup) errors.push({ scenario: s.scenario, path: s.path, rep: s.rep, message });
        progress.log(`bench: ${s.label} failed: ${message}`);
      }
    }
    if (!withSoak || o.abort?.aborted) return;
    const { soakCycles: cycles, soakHeld: held } = o.bench;
    progress.step(`soak: ${cycles} CONNECT/close cycles, then ${held} connections held`);
    try {
      soaked = await soak({
        hvsockPath: stack.hvsockPath,
        vmmPid: stack.roles.vmm!,
        port: o.config.runtime.agent_port,
        warmup: Math.min(500, cycles),
        cycles,
        concurrency: 16,
        held,
        settleMs: SOAK_SETTLE_MS,
        timeoutMs: o.bench.timeoutMs,
      });
    } catch (err) {
      if (o.abort?.aborted) return;
      const message = (err as Error).message;
      errors.push({ scenario: 'soak', path: 'vmm', rep: 0, message });
      progress.log(`bench: soak failed: ${message}`);
    }
  };
  // Once torn down after an interruption, the step in flight is not waited for.
  const torn = new Promise<void>((resolve) => {
    interrupted = resolve;
  });
  if (o.abort?.aborted) onAbort();
  try {
    await Promise.race([measure(), torn]);
  } finally {
    o.abort?.removeEventListener('abort', onAbort);
    await teardown();
  }
  if (o.abort?.aborted) throw new BenchInterrupted(o.abort.reason as NodeJS.Signals);
  return report(stack);
}
