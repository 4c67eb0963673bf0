/**
 * Ending this process the way a signal ends a plain program, so whoever
 * waits for it (a shell, `set -o pipefail`, a supervisor) sees "killed by
 * <signal>", not an exit code.
 *
 * Node ignores SIGPIPE (a write to a closed pipe fails with EPIPE instead),
 * so a pipeline member written in Node cannot die of SIGPIPE the way `seq`
 * or `ctr` (a Go program: the runtime re-raises SIGPIPE for fds 1 and 2)
 * do: the shell would report an exit code, and `bash` would not treat it as
 * a broken pipe. `exitBySignal` restores the default action and raises the
 * signal on the calling thread.
 */
import { libc } from './libc.js';

const f = {
  signal: libc.func('void *signal(int sig, void *handler)'),
  raise: libc.func('int raise(int sig)'),
  sigprocmask: libc.func('int sigprocmask(int how, const void *set, void *old)'),
};

const SIG_UNBLOCK = 1;

/** Dies of `sig` (default action); falls back to exit(128 + sig) for a signal that does not terminate. */
export function exitBySignal(sig: number): never {
  f.signal(sig, null); // SIG_DFL
  const set = Buffer.alloc(128); // sigset_t: bit sig-1
  const byte = Math.floor((sig - 1) / 8);
  set.writeUInt8(1 << ((sig - 1) % 8), byte);
  f.sigprocmask(SIG_UNBLOCK, set, null);
  f.raise(sig);
  process.exit(128 + sig);
}
