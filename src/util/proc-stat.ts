/**
 * The few fields of /proc/<pid>/stat this project reads: state, parent,
 * process group, session, start time (clock ticks since boot), CPU time,
 * threads and resident pages. The command name (field 2) may hold spaces
 * and parentheses, so fields are counted from the last ')'.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

export interface ProcStat {
  /** R, S, D, Z (zombie), X (dead), ... */
  state: string;
  ppid: number;
  pgid: number;
  sid: number;
  /** Field 22, as text (it can exceed 2^53 only in theory). */
  start: string;
  /** User and system CPU time, and that of reaped children, in clock ticks (fields 14-17). */
  utime: number;
  stime: number;
  cutime: number;
  cstime: number;
  /** Field 20. */
  threads: number;
  /** Resident pages (field 24). */
  rssPages: number;
}

export function procStat(pid: number | 'self'): ProcStat | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return {
    state: f[0] ?? '?',
    ppid: Number(f[1]),
    pgid: Number(f[2]),
    sid: Number(f[3]),
    start: f[19] ?? '',
    utime: Number(f[11]),
    stime: Number(f[12]),
    cutime: Number(f[13]),
    cstime: Number(f[14]),
    threads: Number(f[17]),
    rssPages: Number(f[21]),
  };
}

let clkTck: number | null = null;

/** `getconf CLK_TCK` (asked once; 100, Linux's value, if getconf is missing). */
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

/** A process that exists and has not finished (a zombie is finished: only its exit status is left). */
export function isLive(pid: number): boolean {
  const st = procStat(pid);
  return st !== null && st.state !== 'Z' && st.state !== 'X';
}

/** pid → parent pid of every process visible in /proc now. */
export function parentPids(): Map<number, number> {
  const parents = new Map<number, number>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = procStat(Number(name));
    if (st) parents.set(Number(name), st.ppid);
  }
  return parents;
}
