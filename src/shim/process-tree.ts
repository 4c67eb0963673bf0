/**
 * Finding and ending what a shim started, from outside: the shim's `delete`
 * runs in a fresh process after the shim is gone (or hung), so all it has
 * is what the state file recorded (state-file.ts) and /proc.
 *
 * A process is identified by pid and start time (field 22 of
 * /proc/<pid>/stat, in clock ticks since boot), so a recycled pid is never
 * mistaken for ours. `killTrees` stops (SIGSTOP) the recorded processes and
 * every descendant, scanning /proc until no new descendant appears (a
 * stopped process cannot fork), then SIGKILLs them all: nothing escapes by
 * forking or by being reparented between the scan and the kill.
 */
import { parentPids, procStat } from '../util/proc-stat.js';

export interface ProcessIdentity {
  pid: number;
  /** Start time in clock ticks since boot (/proc/<pid>/stat field 22). */
  start: number;
}

interface StatLine {
  ppid: number;
  start: number;
  state: string;
}

function readStat(pid: number): StatLine | null {
  const st = procStat(pid);
  return st ? { ppid: st.ppid, start: Number(st.start), state: st.state } : null;
}

/** This process's identity now (null when it is gone). */
export function identify(pid: number): ProcessIdentity | null {
  const st = readStat(pid);
  return st ? { pid, start: st.start } : null;
}

/** True when the process still runs (not a zombie) and is the same one (same start time). */
export function isAlive(p: ProcessIdentity): boolean {
  const st = readStat(p.pid);
  return st !== null && st.start === p.start && st.state !== 'Z' && st.state !== 'X';
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

/**
 * Kills the recorded processes that are still ours and all their
 * descendants (see the module comment). Returns the pids it killed.
 */
export function killTrees(roots: readonly ProcessIdentity[]): number[] {
  const members = new Set<number>();
  for (const r of roots) {
    if (isAlive(r) && r.pid !== process.pid) {
      members.add(r.pid);
      signal(r.pid, 'SIGSTOP');
    }
  }
  if (members.size === 0) return [];
  for (let round = 0; round < 20; round++) {
    let added = false;
    for (const [pid, ppid] of parentPids()) {
      if (!members.has(pid) && members.has(ppid) && pid !== process.pid) {
        members.add(pid);
        signal(pid, 'SIGSTOP');
        added = true;
      }
    }
    if (!added) break;
  }
  for (const pid of members) signal(pid, 'SIGKILL');
  return [...members];
}
