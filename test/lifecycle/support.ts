/**
 * Support for the lifecycle tests: the process tree under a pid (from
 * /proc), liveness that counts zombies as dead (this machine's init may
 * reap orphans late), and a private $TMPDIR per test so the directories a
 * `run` or `bench` makes, and the sweeps that remove them, are this test's
 * alone.
 */
import fs from 'node:fs';
import path from 'node:path';
import { descendants as descendantsOf, isLive, procStat } from '../../src/util/proc-stat.js';
import { tmpDir } from '../support/cli.js';

/** Every process below `pid` (children, grandchildren, ...). */
export function descendants(pid: number): number[] {
  return descendantsOf([pid]);
}

/** Alive: exists and is not a zombie (this machine's init may reap orphans late). */
export const alive = isLive;

/** The process group and session of `pid`. */
export function groupOf(pid: number): { pgid: number; sid: number } {
  const st = procStat(pid);
  if (!st) throw new Error(`no process ${pid}`);
  return { pgid: st.pgid, sid: st.sid };
}

export function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

/** Resolves once none of `pids` is alive; rejects naming the survivors after `timeoutMs`. */
export async function untilGone(pids: number[], timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter(alive);
    if (left.length === 0) return;
    if (Date.now() > end)
      throw new Error(
        `still alive after ${timeoutMs} ms: ${left.map((p) => `${p} (${cmdline(p)})`).join(', ')}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Polls `cond` (bounded). */
export async function until(cond: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A fresh directory to use as $TMPDIR, and the environment that says so. */
export function isolatedTmp(): { tmp: string; env: NodeJS.ProcessEnv } {
  const tmp = tmpDir('passfd-lifecycle-');
  return { tmp, env: { ...process.env, TMPDIR: tmp } };
}

/** The private directories (`passfd-run-*`, `-fifos-*`, `-bench-*`, `-vm-*`) in `tmp`. */
export function privateDirs(tmp: string): string[] {
  return fs
    .readdirSync(tmp)
    .filter((n) => /^passfd-(run|fifos|bench|vm)-/.test(n))
    .map((n) => path.join(tmp, n));
}
