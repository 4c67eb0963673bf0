/**
 * The measurements, one function per scenario, each run for one IO path
 * (passfd or RPC-copy, chosen by which Broker is used; both talk to the same
 * embedded vmm + agent) or, for the ceiling, for the kernel alone. Each
 * returns flat named metrics for one repetition; the runner alternates paths
 * and repeats.
 *
 * Timing: a transfer is timed from `broker.start()` resolving (the process
 * runs) to the FIFO client's exit (every byte delivered and counted), so
 * set-up is measured separately and not inside the throughput. CPU is
 * `/proc/<pid>/stat` deltas from just before `broker.start()` to after the
 * last byte (see proc-cpu.ts): the set-up's CPU is part of a process's cost.
 * Ticks are 10 ms, so at small sizes (`--quick`) CPU figures are coarse.
 *
 * Every loop is bounded by a count and by `timeoutMs`: a stuck transfer
 * SIGKILLs the container process and its helpers and fails that one run.
 */

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { closeQuietly, growPipe, socketPair } from '../../native-bindings/index.js';
import type { Broker, BrokeredProcess } from '../broker/broker.js';
import { FIFO_SIZE } from '../broker/fifo-set.js';
import {
  collectText,
  counted,
  gatedShell,
  type Helper,
  makeFifos,
  openReader,
  openWriter,
  removeFifos,
  spawnCounter,
  spawnZeroWriter,
} from './fifo-clients.js';
import { type CpuRoles, cpuSecondsBetween, snapshot } from './proc-cpu.js';
import { jainIndex, percentile } from './stats.js';

export type IoPath = 'passfd' | 'rpc';
export type Metrics = Record<string, number>;

export interface BenchContext {
  brokers: Record<IoPath, Broker>;
  roles: CpuRoles;
  /** Directory for FIFOs. */
  dir: string;
  timeoutMs: number;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const DD_ZERO = (bytes: number) => [
  'dd',
  'if=/dev/zero',
  'bs=1M',
  `count=${bytes}`,
  'iflag=count_bytes',
  'status=none',
];

function newId(): string {
  return randomBytes(8).toString('hex');
}

/** Resolves `p`, or runs `onTimeout` and rejects once `ms` have passed. */
export async function bounded<T>(p: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`${what}: not done within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([p, limit]);
  } finally {
    clearTimeout(timer);
  }
}

const nowMs = () => performance.now();

function killProc(proc: BrokeredProcess | null): void {
  proc?.signal(9).catch(() => {});
}

function cpuMetrics(prefix: string, seconds: Record<string, number>, bytes: number): Metrics {
  const out: Metrics = {};
  for (const [role, s] of Object.entries(seconds)) out[`${prefix}.cpu.${role}`] = s / (bytes / GiB);
  return out;
}

/** The process writes `bytes` to stdout; a `wc -c` child reads the stdout FIFO. */
export async function stdoutThroughput(ctx: BenchContext, io: IoPath, bytes: number): Promise<Metrics> {
  const id = newId();
  const fifos = makeFifos(ctx.dir, id);
  const counter = spawnCounter(fifos.stdout);
  let proc: BrokeredProcess | null = null;
  try {
    const cpu0 = snapshot(ctx.roles);
    proc = await ctx.brokers[io].start({ containerId: id, args: DD_ZERO(bytes), fifos });
    const t0 = nowMs();
    const stderr = collectText(fifos.stderr);
    const p = proc;
    const work = (async () => {
      await p.closeStdin();
      const status = await p.wait();
      const n = await counted(counter);
      return { status, n };
    })();
    const { status, n } = await bounded(work, ctx.timeoutMs, `stdout ${io}`, () => {
      killProc(p);
      counter.kill();
    });
    const t1 = nowMs();
    const cpu1 = snapshot(ctx.roles);
    const err = await stderr.text;
    if (status !== 0 || n !== bytes)
      throw new Error(`stdout ${io}: exit ${status}, ${n} of ${bytes} bytes ${err.trim()}`);
    return {
      'stdout.mibps': bytes / MiB / ((t1 - t0) / 1000),
      ...cpuMetrics('stdout', { ...cpuSecondsBetween(cpu0, cpu1) }, bytes),
    };
  } finally {
    counter.kill();
    removeFifos(fifos);
  }
}

/** A `dd` child writes `bytes` into the stdin FIFO; the process (`wc -c`) reads them and prints the count. */
export async function stdinThroughput(ctx: BenchContext, io: IoPath, bytes: number): Promise<Metrics> {
  const id = newId();
  const fifos = makeFifos(ctx.dir, id);
  const writer = spawnZeroWriter(fifos.stdin, bytes);
  let proc: BrokeredProcess | null = null;
  try {
    const cpu0 = snapshot(ctx.roles);
    proc = await ctx.brokers[io].start({ containerId: id, args: ['wc', '-c'], fifos });
    const stdout = collectText(fifos.stdout);
    const stderr = collectText(fifos.stderr);
    const t0 = nowMs();
    writer.go();
    const p = proc;
    const exit = p.wait();
    exit.catch(() => {}); // raced below
    let written = false;
    const work = Promise.race([
      (async () => {
        const w = await writer.done;
        if (w.code !== 0) throw new Error(`stdin writer exit ${w.code}: ${w.err.trim()}`);
        written = true;
        await p.closeStdin();
        return exit;
      })(),
      // A process (or a stack: the agent, the vmm) that ends before its stdin is all written ends the
      // measurement now: the writer would otherwise wait on a FIFO nobody drains until --timeout.
      exit.then((status) => {
        if (written) return status;
        throw new Error(`stdin ${io}: the process ended (status ${status}) before its stdin was written`);
      }),
    ]);
    const status = await bounded(work, ctx.timeoutMs, `stdin ${io}`, () => {
      killProc(p);
      writer.kill();
    });
    const t1 = nowMs();
    const cpu1 = snapshot(ctx.roles);
    const n = Number((await stdout.text).trim());
    if (status !== 0 || n !== bytes)
      throw new Error(`stdin ${io}: exit ${status}, ${n} of ${bytes} bytes ${(await stderr.text).trim()}`);
    return {
      'stdin.mibps': bytes / MiB / ((t1 - t0) / 1000),
      ...cpuMetrics('stdin', { ...cpuSecondsBetween(cpu0, cpu1) }, bytes),
    };
  } finally {
    writer.kill();
    removeFifos(fifos);
  }
}

/**
 * 64-byte round trips through `cat`: write 64 bytes into the stdin FIFO,
 * wait until 64 bytes came back on the stdout FIFO. 20 untimed warm-up trips.
 */
export async function roundTrips(
  ctx: BenchContext,
  io: IoPath,
  trips: number,
  onTrip?: (done: number) => void,
): Promise<Metrics> {
  const id = newId();
  const fifos = makeFifos(ctx.dir, id);
  let proc: BrokeredProcess | null = null;
  const payload = Buffer.alloc(64, 0x61);
  try {
    proc = await ctx.brokers[io].start({ containerId: id, args: ['cat'], fifos });
    const writer = openWriter(fifos.stdin);
    const reader = openReader(fifos.stdout);
    const stderr = collectText(fifos.stderr);
    let pending = 0;
    let wake: (() => void) | null = null;
    reader.on('data', (d: Buffer) => {
      pending += d.length;
      if (pending >= 64 && wake) {
        const w = wake;
        wake = null;
        w();
      }
    });
    reader.on('error', () => {});
    const trip = () =>
      new Promise<void>((resolve) => {
        if (pending >= 64) resolve();
        else wake = resolve;
      });
    const samples: number[] = [];
    const deadline = nowMs() + ctx.timeoutMs;
    const total = trips + 20;
    const p = proc;
    const loop = (async () => {
      for (let i = 0; i < total && nowMs() < deadline; i++) {
        const t = process.hrtime.bigint();
        writer.write(payload);
        await trip();
        pending -= 64;
        if (i >= 20) {
          samples.push(Number(process.hrtime.bigint() - t) / 1000);
          if (onTrip && samples.length % 100 === 0) onTrip(samples.length);
        }
      }
    })();
    await bounded(loop, ctx.timeoutMs + 5000, `latency ${io}`, () => {
      killProc(p);
      wake?.();
    });
    await new Promise<void>((r) => writer.end(r));
    writer.destroy();
    await p.closeStdin();
    const status = await bounded(p.wait(), ctx.timeoutMs, `latency ${io} exit`, () => killProc(p));
    reader.destroy();
    const err = await stderr.text;
    if (samples.length === 0) throw new Error(`latency ${io}: no round trip completed`);
    if (status !== 0) throw new Error(`latency ${io}: cat exited ${status} ${err.trim()}`);
    return {
      'rtt.p50': percentile(samples, 50),
      'rtt.p99': percentile(samples, 99),
      'rtt.trips': samples.length,
    };
  } finally {
    removeFifos(fifos);
  }
}

/** FIFOs ready → `broker.start()` resolved (passfd of 3 fds + CreateContainer + StartContainer), ms. */
export async function setupLatency(ctx: BenchContext, io: IoPath, count: number): Promise<Metrics> {
  const samples: number[] = [];
  const deadline = nowMs() + ctx.timeoutMs;
  for (let i = 0; i < count && nowMs() < deadline; i++) {
    const id = newId();
    const fifos = makeFifos(ctx.dir, id);
    let proc: BrokeredProcess | null = null;
    try {
      const t0 = nowMs();
      proc = await bounded(
        ctx.brokers[io].start({ containerId: id, args: ['true'], fifos }),
        ctx.timeoutMs,
        `setup ${io}`,
        () => {},
      );
      samples.push(nowMs() - t0);
      await proc.closeStdin();
      const p = proc;
      const status = await bounded(p.wait(), ctx.timeoutMs, `setup ${io} exit`, () => killProc(p));
      // A start that did not run the process is not a set-up (e.g. `true` missing in a guest).
      if (status !== 0) throw new Error(`setup ${io}: \`true\` exited ${status}`);
    } finally {
      removeFifos(fifos);
    }
  }
  return {
    'setup.p50': percentile(samples, 50),
    'setup.p99': percentile(samples, 99),
    'setup.n': samples.length,
  };
}

/**
 * `k` containers stream `totalBytes / k` bytes each to stdout at once. All
 * are started first, each held at a gate (`sh -c 'read _; exec dd …'`
 * reading one line from its stdin), then every gate is released together
 * through the stdin FIFOs, so the figure is streaming, not `k` staggered
 * set-ups. Per container: bytes / (release → its counter done). Aggregate:
 * all bytes / (release → last done). Fairness: Jain's index and min/max.
 */
export async function concurrentStreams(
  ctx: BenchContext,
  io: IoPath,
  k: number,
  totalBytes: number,
): Promise<Metrics> {
  const each = Math.max(1, Math.floor(totalBytes / k));
  const script = 'read _; exec dd if=/dev/zero bs=1M count="$1" iflag=count_bytes status=none';
  const jobs = Array.from({ length: k }, () => {
    const id = newId();
    const fifos = makeFifos(ctx.dir, id);
    return { id, fifos, counter: spawnCounter(fifos.stdout), proc: null as BrokeredProcess | null };
  });
  const killAll = () => {
    for (const j of jobs) {
      killProc(j.proc);
      j.counter.kill();
    }
  };
  try {
    await bounded(
      Promise.all(
        jobs.map(async (j) => {
          j.proc = await ctx.brokers[io].start({
            containerId: j.id,
            args: ['sh', '-c', script, 'gate', String(each)],
            fifos: j.fifos,
          });
        }),
      ),
      ctx.timeoutMs,
      `concurrency ${k} ${io} start`,
      killAll,
    );
    const t0 = nowMs();
    const run = Promise.all(
      jobs.map(async (j) => {
        const p = j.proc!;
        const gate = openWriter(j.fifos.stdin);
        await new Promise<void>((r) => gate.end('\n', r));
        gate.destroy();
        await p.closeStdin();
        const status = await p.wait();
        const n = await counted(j.counter);
        const t1 = nowMs();
        if (status !== 0 || n !== each)
          throw new Error(`concurrency ${io}: exit ${status}, ${n} of ${each} bytes`);
        return t1;
      }),
    );
    const ends = await bounded(run, ctx.timeoutMs, `concurrency ${k} ${io}`, killAll);
    const per = ends.map((t1) => each / MiB / ((t1 - t0) / 1000));
    const pre = `conc${k}`;
    return {
      [`${pre}.mibps`]: (each * k) / MiB / ((Math.max(...ends) - t0) / 1000),
      [`${pre}.jain`]: jainIndex(per),
      [`${pre}.min`]: Math.min(...per),
      [`${pre}.max`]: Math.max(...per),
    };
  } finally {
    for (const j of jobs) {
      j.counter.kill();
      removeFifos(j.fifos);
    }
  }
}

/**
 * The kernel's own ceiling for one relay hop, same bytes, same tools:
 * `dd` → FIFO → `cat` → Unix socketpair → `wc -c`. passfd's stdout path is
 * process → socket → vmm → FIFO → reader, so this is what the machine allows
 * when the relay in the middle is a plain C process doing read/write.
 */
export async function kernelCeiling(ctx: BenchContext, bytes: number): Promise<Metrics> {
  const fifo = path.join(ctx.dir, `${newId()}-ceiling`);
  execFileSync('mkfifo', ['-m', '600', fifo]);
  // The same FIFO size the broker gives containerd's FIFOs, or the ceiling
  // would be measured on a smaller pipe than the paths it bounds. Held by an
  // idle reader of ours (a pipe's size lives while any end is open); being a
  // reader, it does not keep cat from seeing EOF when dd is done.
  const sizer = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  growPipe(sizer, FIFO_SIZE);
  const [a, b] = socketPair(false);
  const helpers: Helper[] = [];
  try {
    const wc = gatedShell('wc -c', [], { stdin: b });
    const relay = gatedShell('cat < "$1"', [fifo], { stdout: a });
    const writer = gatedShell(
      'dd if=/dev/zero bs=1M count="$2" iflag=count_bytes status=none > "$1"',
      [fifo, String(bytes)],
      { stdout: 'ignore' },
    );
    helpers.push(wc, relay, writer);
    fs.closeSync(a);
    fs.closeSync(b);
    const t0 = nowMs();
    relay.go();
    writer.go();
    wc.go();
    const n = await bounded(counted(wc), ctx.timeoutMs, 'ceiling', () => {
      for (const h of helpers) h.kill();
    });
    const t1 = nowMs();
    if (n !== bytes) throw new Error(`ceiling: ${n} of ${bytes} bytes`);
    return { 'ceiling.mibps': bytes / MiB / ((t1 - t0) / 1000) };
  } finally {
    for (const h of helpers) h.kill();
    closeQuietly(sizer);
    fs.rmSync(fifo, { force: true });
  }
}
