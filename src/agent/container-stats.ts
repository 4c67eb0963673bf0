/**
 * What StatsContainer reports for a container, in Kata's `CgroupStats`
 * shape (the containerd shim turns it into cgroup v2 metrics).
 *
 * Kata's agent reads the container's cgroup. This agent gives containers no
 * cgroup of their own (the loopback guest is the host, whose cgroup tree is
 * not ours to divide; a QEMU guest has one tree the agent leaves alone), so
 * the figures are summed over the container's processes from /proc:
 *
 * - which processes: every process in the container's PID namespace when it
 *   has one of its own (its execs join it), else the container's processes
 *   the agent started (init and execs) and all their descendants;
 * - CPU: user and system time of each, plus that of children they have
 *   reaped, in nanoseconds (Kata's cgroup v1 unit). A process that exited
 *   and was reaped by the agent (the container's init, an exec) is no
 *   longer counted, where a cgroup would keep it: the figure can go down;
 * - memory: the proportional set size (`Pss` of smaps_rollup: a page shared
 *   by n processes counts 1/n for each, so the sum counts it once), split
 *   into anonymous and file-backed; the resident set where smaps_rollup is
 *   not readable. The limit is the guest's memory (MemTotal): a VM's
 *   container can use no more;
 * - pids: threads, as a cgroup's `pids.current` counts tasks; no limit.
 *
 * Processes that end while being read are skipped.
 */
import fs from 'node:fs';
import { clockTicksPerSecond, descendants, parentPids, procStat } from '../util/proc-stat.js';

export interface ContainerUsage {
  /** CPU time in nanoseconds: total, user, system. */
  cpuNs: { total: bigint; user: bigint; system: bigint };
  /** Memory in bytes: usage (anon + file), anon, file; limit (the guest's MemTotal, 0 if unknown). */
  memory: { usage: bigint; anon: bigint; file: bigint; limit: bigint };
  /** Threads of the container's processes. */
  tasks: bigint;
  /** The processes counted. */
  pids: number[];
}

const PAGE_SIZE = 4096;

/** The PID namespace `pid` is in (`pid:[inode]`), or null if it is gone. */
function pidNamespace(pid: number | 'self'): string | null {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return null;
  }
}

/**
 * The container's processes: those in `containerPid`'s PID namespace when it
 * differs from ours, else `roots` and their descendants.
 */
export function containerPids(roots: readonly number[], containerPid: number | null): number[] {
  const ns = containerPid === null ? null : pidNamespace(containerPid);
  if (ns !== null && ns !== pidNamespace('self')) {
    const out: number[] = [];
    for (const name of fs.readdirSync('/proc')) {
      if (/^\d+$/.test(name) && pidNamespace(Number(name)) === ns) out.push(Number(name));
    }
    return out.sort((a, b) => a - b);
  }
  const parents = parentPids();
  const live = roots.filter((p) => parents.has(p));
  return [...live, ...descendants(live, parents)].sort((a, b) => a - b);
}

/** `Pss_Anon` and `Pss_File` (+ `Pss_Shmem`) of smaps_rollup, in bytes; null if unreadable. */
export function parseSmapsRollup(text: string): { anon: number; file: number } | null {
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : null;
  };
  const pss = kb('Pss');
  if (pss === null) return null;
  const anon = kb('Pss_Anon');
  const file = kb('Pss_File');
  // Kernels before 5.9 have only the total: count it as anonymous.
  if (anon === null || file === null) return { anon: pss, file: 0 };
  return { anon, file: pss - anon };
}

/** MemTotal of /proc/meminfo in bytes (0 if unreadable). */
function memTotal(): bigint {
  try {
    const m = /^MemTotal:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    return m ? BigInt(m[1]!) * 1024n : 0n;
  } catch {
    return 0n;
  }
}

/** Sums the usage of the container's processes (see the module comment). */
export function containerUsage(roots: readonly number[], containerPid: number | null): ContainerUsage {
  const nsPerTick = BigInt(Math.round(1e9 / clockTicksPerSecond()));
  let userTicks = 0;
  let systemTicks = 0;
  let anon = 0;
  let file = 0;
  let tasks = 0;
  const counted: number[] = [];
  for (const pid of containerPids(roots, containerPid)) {
    const st = procStat(pid);
    if (!st || st.state === 'Z' || st.state === 'X') continue;
    let mem: { anon: number; file: number } | null = null;
    try {
      mem = parseSmapsRollup(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    } catch {
      // gone, or no smaps_rollup: the resident set below
    }
    userTicks += st.utime + st.cutime;
    systemTicks += st.stime + st.cstime;
    tasks += st.threads;
    if (mem) {
      anon += mem.anon;
      file += mem.file;
    } else {
      anon += st.rssPages * PAGE_SIZE;
    }
    counted.push(pid);
  }
  const user = BigInt(userTicks) * nsPerTick;
  const system = BigInt(systemTicks) * nsPerTick;
  return {
    cpuNs: { total: user + system, user, system },
    memory: { usage: BigInt(anon + file), anon: BigInt(anon), file: BigInt(file), limit: memTotal() },
    tasks: BigInt(tasks),
    pids: counted,
  };
}
