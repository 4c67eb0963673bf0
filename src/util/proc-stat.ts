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

/** Parses the text of `/proc/<pid>/stat`; throws on text that is not one. */
export function parseStatLine(text: string): ProcStat {
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error('not a /proc/<pid>/stat line: no comm field');
  // After ") " come field 3 (state), 4 (ppid), ...: field n is at index n - 3.
  const f = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  const field = (n: number): number => {
    const v = Number(f[n - 3]);
    if (!Number.isFinite(v)) throw new Error(`/proc stat field ${n} is not a number`);
    return v;
  };
  return {
    state: f[0] ?? '?',
    ppid: field(4),
    pgid: field(5),
    sid: field(6),
    start: f[19] ?? '',
    utime: field(14),
    stime: field(15),
    cutime: field(16),
    cstime: field(17),
    threads: field(20),
    rssPages: field(24),
  };
}

/** The stat of `pid`, or null when it is gone. */
export function procStat(pid: number | 'self'): ProcStat | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  return parseStatLine(stat);
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

/** Every process below `roots` (children, grandchildren, ...) in one snapshot of the process table. */
export function descendants(roots: Iterable<number>, parents: Map<number, number> = parentPids()): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of parents) {
    const list = children.get(ppid);
    if (list) list.push(pid);
    else children.set(ppid, [pid]);
  }
  const out: number[] = [];
  const seen = new Set(roots);
  const frontier = [...seen];
  while (frontier.length > 0) {
    for (const child of children.get(frontier.pop()!) ?? []) {
      if (seen.has(child)) continue;
      seen.add(child);
      out.push(child);
      frontier.push(child);
    }
  }
  return out;
}
