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
import fs from 'node:fs';

import { clockTicksPerSecond, parseStatLine } from '../util/proc-stat.js';

export interface CpuTicks {
  /** Own user + system ticks. */
  self: number;
  /** Ticks of reaped children (cutime + cstime). */
  children: number;
}

/** Parses the text of `/proc/<pid>/stat` into own and reaped-children ticks. */
export function parseProcStat(text: string): CpuTicks {
  const st = parseStatLine(text);
  return { self: st.utime + st.stime, children: st.cutime + st.cstime };
}

export function readCpuTicks(pid: number | 'self'): CpuTicks {
  return parseProcStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/**
 * The processes whose CPU the benchmark attributes, by role. Loopback: the
 * agent is a host process and reaps the container process. In a QEMU guest
 * neither is visible from the host one by one: the `qemu` process (its vCPU
 * threads run the guest kernel, the agent and the container process; its IO
 * threads serve 9p) stands for all of them.
 */
export interface LoopbackRoles {
  /** The bench process itself: the broker library (and, on RPC-copy, its copy loops). */
  broker: number | 'self';
  vmm: number;
  agent: number;
}

export interface QemuRoles {
  broker: number | 'self';
  vmm: number;
  /** QEMU: the guest's kernel, agent and container processes (vCPU threads) and its 9p server. */
  qemu: number;
}

export type CpuRoles = LoopbackRoles | QemuRoles;

/**
 * CPU seconds per role between two snapshots: `broker`, `vmm`, then
 * loopback `agent` and `workload` (the container process, reaped by the
 * agent: its cutime+cstime) or QEMU `qemu`, then `fifoClient` (containerd's
 * side: the bench's reaped `wc`/`dd` helpers).
 */
export type CpuSeconds = Record<string, number>;

export type LoopbackSnapshot = { [K in keyof LoopbackRoles]: CpuTicks };
export type QemuSnapshot = { [K in keyof QemuRoles]: CpuTicks };
export type CpuSnapshot = LoopbackSnapshot | QemuSnapshot;

export function snapshot(roles: LoopbackRoles): LoopbackSnapshot;
export function snapshot(roles: QemuRoles): QemuSnapshot;
export function snapshot(roles: CpuRoles): CpuSnapshot;
export function snapshot(roles: CpuRoles): CpuSnapshot {
  const base = { broker: readCpuTicks(roles.broker), vmm: readCpuTicks(roles.vmm) };
  return 'agent' in roles
    ? { ...base, agent: readCpuTicks(roles.agent) }
    : { ...base, qemu: readCpuTicks(roles.qemu) };
}

export function cpuSecondsBetween(a: CpuSnapshot, b: CpuSnapshot, hz = clockTicksPerSecond()): CpuSeconds {
  const out: CpuSeconds = {
    broker: (b.broker.self - a.broker.self) / hz,
    vmm: (b.vmm.self - a.vmm.self) / hz,
  };
  if ('agent' in a && 'agent' in b) {
    out.agent = (b.agent.self - a.agent.self) / hz;
    out.workload = (b.agent.children - a.agent.children) / hz;
  } else if ('qemu' in a && 'qemu' in b) {
    out.qemu = (b.qemu.self - a.qemu.self) / hz;
  }
  out.fifoClient = (b.broker.children - a.broker.children) / hz;
  return out;
}
