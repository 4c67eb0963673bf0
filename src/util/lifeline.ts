/**
 * Children that end when their parent ends, however it ends (kill -9
 * included), and children that can tell they were orphaned.
 *
 * How: the child runs under util-linux `setpriv --pdeathsig <sig>` (an
 * Essential package on Debian), which sets PR_SET_PDEATHSIG and execs; the
 * setting survives exec. A parent that died before the prctl would be
 * missed, so a one-line `sh` step between checks `$PPID` against our pid
 * and gives up if it differs, then execs the real program (same pid all
 * along: `ChildProcess.pid` and `kill` reach the program itself).
 *
 * Why PDEATHSIG and not a liveness pipe: it needs nothing from the child
 * (QEMU, `dd` and `wc` get it too, not only our own Node children), and no
 * fd has to be kept out of grandchildren. Its catch: the signal fires when
 * the *thread* that forked the child exits, not the process. Node forks in
 * `child_process.spawn` on the calling thread; every spawn here runs on the
 * main thread, which lives as long as the process (measured in
 * test/lifecycle/parent-death.test.ts: children of the main thread survive
 * worker threads coming and going and die within milliseconds of a kill -9
 * of the parent; a child spawned from a worker thread dies with the worker,
 * which is why nothing here spawns from one).
 *
 * Orphaned: the process that started this one is gone. Usually we have
 * been reparented (`process.ppid` changed), but the signal comes as soon as
 * the parent's forking thread exits, and while its other threads are still
 * being torn down the children are reparented to one of them: same ppid. So
 * a parent that is a zombie (or gone) counts as gone too.
 */
import fs from 'node:fs';
import { isLive } from './proc-stat.js';

const SETPRIV_PATHS = ['/usr/bin/setpriv', '/bin/setpriv'];

let setprivPath: string | null | undefined;

function findSetpriv(): string | null {
  if (setprivPath === undefined) {
    setprivPath =
      SETPRIV_PATHS.find((p) => {
        try {
          fs.accessSync(p, fs.constants.X_OK);
          return true;
        } catch {
          return false;
        }
      }) ?? null;
  }
  return setprivPath;
}

/** Gives up when the parent is already gone, else becomes the program. */
const PPID_CHECK = 'test "$PPID" = "$1" || exit 125; shift; exec "$@"';

/**
 * The command line that runs `file args` so that it receives `signal` when
 * this process dies (see module comment). Without setpriv, `file args`
 * unchanged.
 */
export function dieWithParent(
  file: string,
  args: readonly string[],
  signal: 'SIGTERM' | 'SIGKILL',
): { file: string; args: string[] } {
  const setpriv = findSetpriv();
  if (!setpriv) return { file, args: [...args] };
  return {
    file: setpriv,
    args: [
      '--pdeathsig',
      signal,
      '--',
      'sh',
      '-c',
      PPID_CHECK,
      'lifeline',
      String(process.pid),
      file,
      ...args,
    ],
  };
}

const startedBy = process.ppid;

/** True when the process that started this one is gone (see module comment). */
export function isOrphaned(): boolean {
  return process.ppid !== startedBy || !isLive(startedBy);
}
