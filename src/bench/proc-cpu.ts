/**
 * CPU time of a process from `/proc/<pid>/stat` (proc(5)): fields 14-17 are
 * utime, stime, cutime, cstime in clock ticks (`getconf CLK_TCK`, 100 on
 * Linux). cutime/cstime count children the process has already reaped, which
 * is how the benchmark sees short-lived helpers: the bench process reaps its
 * `dd`/`wc` FIFO readers and writers, the agent reaps the container process.
 *
 * The second field (comm) is in parentheses and may itself contain spaces or
 * ')', so parsing starts after the *last* ')'.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

export interface CpuTicks {
  /** Own user + system ticks. */
  self: number;
  /** Ticks of reaped children (cutime + cstime). */
  children: number;
}

/** Parses the text of `/proc/<pid>/stat`. */
export function parseProcStat(text: string): CpuTicks {
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error('not a /proc/<pid>/stat line: no comm field');
  // After ") " come field 3 (state), 4 (ppid), ...: field n is at index n - 3.
  const rest = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  const field = (n: number): number => {
    const v = Number(rest[n - 3]);
    if (!Number.isFinite(v)) throw new Error(`/proc stat field ${n} is not a number`);
    return v;
  };
  return { self: field(14) + field(15), children: field(16) + field(17) };
}

export function readCpuTicks(pid: number | 'self'): CpuTicks {
  return parseProcStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

let clkTck: number | null = null;

/** `getconf CLK_TCK` (asked once; 100 if getconf is missing). */
export function clockTicksPerSecond(): number {
  if (clkTck === null) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** The processes whose CPU the benchmark attributes, by role. */
export interface CpuRoles {
  /** The bench process itself: the broker library (and, on RPC-copy, its copy loops). */
  broker: number | 'self';
  vmm: number;
  agent: number;
}

/** CPU seconds per role between two snapshots. */
export interface CpuSeconds {
  broker: number;
  vmm: number;
  agent: number;
  /** The container process (reaped by the agent: the agent's cutime+cstime). */
  workload: number;
  /** containerd's side: the bench's reaped FIFO reader/writer helpers (`wc`, `dd`). */
  fifoClient: number;
}

export interface CpuSnapshot {
  broker: CpuTicks;
  vmm: CpuTicks;
  agent: CpuTicks;
}

export function snapshot(roles: CpuRoles): CpuSnapshot {
  return {
    broker: readCpuTicks(roles.broker),
    vmm: readCpuTicks(roles.vmm),
    agent: readCpuTicks(roles.agent),
  };
}

export function cpuSecondsBetween(a: CpuSnapshot, b: CpuSnapshot, hz = clockTicksPerSecond()): CpuSeconds {
  return {
    broker: (b.broker.self - a.broker.self) / hz,
    vmm: (b.vmm.self - a.vmm.self) / hz,
    agent: (b.agent.self - a.agent.self) / hz,
    workload: (b.agent.children - a.agent.children) / hz,
    fifoClient: (b.broker.children - a.broker.children) / hz,
  };
}
