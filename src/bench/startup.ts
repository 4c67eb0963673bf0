/**
 * The start-up scenario: how long the CLI takes before it is of use, beside
 * `node -e 0` (Node's own floor on this machine) measured in the same run.
 * A container runtime starts a handful of these per container, so this is a
 * cost users pay on every command.
 *
 * Probes, one child process each, run round-robin (one of each per round,
 * so drift and load spread over all of them) for `count` rounds:
 *
 *   node -e 0          spawn → exit
 *   --help             spawn → exit
 *   run -- true        spawn → exit: the whole job (vmm + agent started, the
 *                      command run through passfd, everything torn down)
 *   vmm                spawn → READY=1 on its NOTIFY_SOCKET (then SIGTERM)
 *   agent              spawn → READY=1, against a vmm kept running for the
 *                      scenario (then SIGTERM)
 *
 * Wall time is measured here; CPU is the child's user + system time: for the
 * exit probes the growth of this process's cutime + cstime once the child is
 * reaped (which includes what the child reaped itself: `run`'s vmm and
 * agent), for the READY probes `/proc/<pid>/stat` at READY. CPU comes in
 * 10 ms kernel ticks, so single figures are coarse; the p50 of 20 is not.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { clockTicksPerSecond } from '../util/proc-stat.js';
import { CLI_MAIN, type ReadyChild, startReady, stopChild } from '../util/ready-child.js';
import { readCpuTicks } from './proc-cpu.js';
import { percentile } from './stats.js';

export interface StartupRow {
  key: 'node' | 'help' | 'run' | 'vmm' | 'agent';
  label: string;
  /** What ends the measurement: the process's exit, or its READY=1. */
  until: 'exit' | 'ready';
  wallP50Ms: number;
  wallP90Ms: number;
  cpuP50Ms: number;
  /** wallP50Ms / node -e 0's wallP50Ms in the same run. */
  vsNode: number;
  n: number;
}

interface Sample {
  wallMs: number;
  cpuMs: number;
}

interface Probe {
  key: StartupRow['key'];
  label: string;
  until: StartupRow['until'];
  run(): Promise<Sample>;
}

/** How long any one probe may take before the scenario fails. */
const PROBE_TIMEOUT_MS = 30_000;

function ticksToMs(ticks: number): number {
  return (ticks * 1000) / clockTicksPerSecond();
}

/** Runs `node <args>` to its exit; CPU is what its reaping added to our children's time. */
function toExit(args: string[]): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const before = readCpuTicks('self').children;
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), PROBE_TIMEOUT_MS);
    child.on('error', reject);
    child.on('exit', (code, sig) => {
      const wallMs = performance.now() - t0;
      clearTimeout(timer);
      if (code !== 0) {
        reject(new Error(`${args.slice(1).join(' ')}: ${sig ?? `exit ${code}`} ${stderr.trim()}`));
        return;
      }
      resolve({ wallMs, cpuMs: ticksToMs(readCpuTicks('self').children - before) });
    });
  });
}

/** Starts `passfd-broker <args>` until READY=1, then stops it; CPU is the child's own until READY. */
async function toReady(args: string[], dir: string, name: string): Promise<Sample> {
  const t0 = performance.now();
  const ready = await startReady(args, dir, name, 'warn', PROBE_TIMEOUT_MS);
  const wallMs = performance.now() - t0;
  let cpuMs: number;
  try {
    cpuMs = ticksToMs(readCpuTicks(ready.child.pid!).self);
  } finally {
    await stopChild(ready.child);
    ready.closeNotify();
  }
  return { wallMs, cpuMs };
}

export interface StartupOptions {
  /** Rounds: each probe runs this many times. */
  count: number;
  /** Called after each probe, with how many have run. */
  onProbe?: (done: number, total: number) => void;
}

/** Runs the scenario; rejects if a probe fails (a CLI that does not start is not a figure). */
export async function measureStartup(opts: StartupOptions): Promise<StartupRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'passfd-startup-'));
  let vmm: ReadyChild | null = null;
  try {
    // The vmm the agent probes connect to, started once for the scenario.
    const guestDir = path.join(dir, 'guest');
    vmm = await startReady(
      ['vmm', '--hvsock', path.join(dir, 'h.sock'), '--guest-dir', guestDir],
      dir,
      'vmm-for-agent',
      'warn',
      PROBE_TIMEOUT_MS,
    );
    let round = 0;
    const probes: Probe[] = [
      { key: 'node', label: 'node -e 0', until: 'exit', run: () => toExit(['-e', '0']) },
      { key: 'help', label: 'passfd-broker --help', until: 'exit', run: () => toExit([CLI_MAIN, '--help']) },
      {
        key: 'run',
        label: 'passfd-broker run -- true',
        until: 'exit',
        run: () => toExit([CLI_MAIN, 'run', '--', 'true']),
      },
      {
        key: 'vmm',
        label: 'passfd-broker vmm (to READY)',
        until: 'ready',
        run: () => {
          const d = path.join(dir, `vmm-${round}`);
          return toReady(['vmm', '--hvsock', path.join(d, 'h.sock'), '--guest-dir', d], dir, 'vmm');
        },
      },
      {
        key: 'agent',
        label: 'passfd-broker agent (to READY)',
        until: 'ready',
        run: () => toReady(['agent', '--guest-dir', guestDir], dir, 'agent'),
      },
    ];
    const samples = new Map<Probe, Sample[]>(probes.map((p) => [p, []]));
    const total = opts.count * probes.length;
    let done = 0;
    for (round = 0; round < opts.count; round++) {
      for (const p of probes) {
        samples.get(p)!.push(await p.run());
        opts.onProbe?.(++done, total);
      }
    }
    return summarizeStartup(
      probes.map((p) => ({ key: p.key, label: p.label, until: p.until, samples: samples.get(p)! })),
    );
  } finally {
    if (vmm) {
      await stopChild(vmm.child);
      vmm.closeNotify();
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** p50/p90 per probe and each wall p50 against `node -e 0`'s. Pure. */
export function summarizeStartup(
  probes: { key: StartupRow['key']; label: string; until: StartupRow['until']; samples: Sample[] }[],
): StartupRow[] {
  const rows = probes.map((p) => ({
    key: p.key,
    label: p.label,
    until: p.until,
    wallP50Ms: percentile(
      p.samples.map((s) => s.wallMs),
      50,
    ),
    wallP90Ms: percentile(
      p.samples.map((s) => s.wallMs),
      90,
    ),
    cpuP50Ms: percentile(
      p.samples.map((s) => s.cpuMs),
      50,
    ),
    vsNode: Number.NaN,
    n: p.samples.length,
  }));
  const node = rows.find((r) => r.key === 'node')?.wallP50Ms ?? Number.NaN;
  for (const r of rows) r.vsNode = r.wallP50Ms / node;
  return rows;
}
