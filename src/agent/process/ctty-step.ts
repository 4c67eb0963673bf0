/**
 * How a terminal-mode process gets its pty as controlling terminal.
 *
 * The child must be a session leader and call `ioctl(0, TIOCSCTTY)` between
 * fork and exec; Node's `spawn` has no hook there (its `detached` does the
 * `setsid()` but not the ioctl, and a session leader acquires a terminal only
 * by opening it, while the slave reaches the child already open as fds 0-2).
 * Options considered:
 * - node-pty: a native addon with its own fork/exec, reader thread and exit
 *   watcher; it owns the master fd and reads it into JS itself, so the
 *   launcher could not pump or resize it with its own machinery. Not used.
 * - python3 `pty`/`os.login_tty`: not guaranteed in a guest. Not used.
 * - `setsid -c` (util-linux, also busybox): `setsid()` then
 *   `ioctl(0, TIOCSCTTY, 1)` then `execvp`, same pid, ~1 ms. The default.
 *   It is spawned *without* `detached`: setsid(1) forks when it already is a
 *   process-group leader, and the launcher must keep the pid it spawned.
 * - a Node trampoline (native-bindings/ctty-exec.ts) doing the same three
 *   calls through koffi: always available (the agent runs on Node), ~40 ms.
 *   The fallback when no setsid binary is found.
 * The pty itself comes from native-bindings/pty.ts (posix_openpt & co).
 */
import { accessSync, constants } from 'node:fs';
import { type ExecStep, nodeCttyExec } from '../../../native-bindings/index.js';

export type CttyMethod = 'auto' | 'setsid' | 'node';

const SETSID_PATHS = ['/usr/bin/setsid', '/bin/setsid', '/usr/sbin/setsid', '/sbin/setsid'];

let setsidPath: string | null | undefined;

/** The first executable setsid(1) in the usual places, or null. */
export function findSetsid(): string | null {
  if (setsidPath === undefined) {
    setsidPath = null;
    for (const p of SETSID_PATHS) {
      try {
        accessSync(p, constants.X_OK);
        setsidPath = p;
        break;
      } catch {
        // next
      }
    }
  }
  return setsidPath;
}

/** "K=V" strings as an object (the first '=' splits; entries without one are dropped). */
export function envObject(env: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of env) {
    const i = e.indexOf('=');
    if (i > 0) out[e.slice(0, i)] = e.slice(i + 1);
  }
  return out;
}

/** The command line that runs `args` with the pty on fds 0-2 as controlling terminal. */
export function cttyStep(method: CttyMethod, args: readonly string[], env: readonly string[]): ExecStep {
  if (method !== 'node') {
    const setsid = findSetsid();
    if (setsid) return { file: setsid, args: ['-c', '--', ...args], env: envObject(env) };
    if (method === 'setsid') throw new Error(`terminal mode: no setsid(1) in ${SETSID_PATHS.join(', ')}`);
  }
  return nodeCttyExec(args, env);
}
