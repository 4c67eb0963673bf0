/**
 * The few fields of /proc/<pid>/stat this project reads: state, parent,
 * process group, session and start time (clock ticks since boot). The command name (field 2) may hold
 * spaces and parentheses, so fields are counted from the last ')'.
 */
import fs from 'node:fs';

export interface ProcStat {
  /** R, S, D, Z (zombie), X (dead), ... */
  state: string;
  ppid: number;
  pgid: number;
  sid: number;
  /** Field 22, as text (it can exceed 2^53 only in theory). */
  start: string;
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
  };
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
