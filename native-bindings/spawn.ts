/**
 * Starting a process with glibc's `posix_spawn`, and following it with a
 * pidfd.
 *
 * Why not Node's `child_process.spawn`: libuv forks on Linux, and fork copies
 * the parent's page tables, so a spawn costs time in proportion to the
 * parent's memory (measured here: 2 ms at 48 MiB RSS, 14 ms at 250 MiB, 50 ms
 * at 1 GiB). The agent's RSS grows with the traffic it has served, and the
 * spawn sits on every container start's critical path. glibc's posix_spawn
 * uses `clone(CLONE_VM | CLONE_VFORK)` on a small private stack: nothing is
 * copied, the cost does not depend on the parent's size, and the child runs
 * only async-signal-safe steps until `execve`. Exec failures (ENOENT, EACCES,
 * a bad cwd) come back as posix_spawn's return value, not as a child that
 * exits 127.
 *
 * What the child gets: fds 0-2 from `stdio` and 3, 4, ... from `extraFds`
 * (dup2, which clears close-on-exec), and no other fd (closefrom, glibc ≥
 * 2.34: ours are close-on-exec, but one our own parent leaked to us without
 * it would otherwise reach every container), every
 * signal at its default disposition and an empty signal mask (Node ignores
 * SIGPIPE and SIGXFSZ; ignored signals and the mask would survive exec), a
 * new session when asked (`POSIX_SPAWN_SETSID`), and `cwd` through
 * `posix_spawn_file_actions_addchdir_np` (glibc ≥ 2.29).
 *
 * Following it: `pidfd_open` right after the spawn. The child cannot be
 * reaped by anyone else in between (libuv only waits for pids it spawned
 * itself), so the pidfd names exactly our child, even as a zombie. The pidfd
 * is readable once the child has exited; `reap` then collects the status with
 * `waitpid(WNOHANG)`. Signals go through `pidfd_send_signal`, which cannot hit
 * a recycled pid.
 *
 * x86-64 glibc layouts: posix_spawn_file_actions_t is 80 bytes,
 * posix_spawnattr_t 336, sigset_t 128; the buffers below are larger on
 * purpose and only glibc's own init/destroy functions touch their insides.
 */
import koffi from 'koffi';
import { closeQuietly, dupFd } from './fd.js';
import { check, libc, SysError } from './libc.js';

const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSID = 0x80;
const WNOHANG = 1;
const SIGSET_BYTES = 128;

const f = {
  posix_spawn: libc.func(
    'int posix_spawn(_Out_ int *pid, const char *path, const void *actions, const void *attr, const char **argv, const char **envp)',
  ),
  actionsInit: libc.func('int posix_spawn_file_actions_init(void *actions)'),
  actionsDestroy: libc.func('int posix_spawn_file_actions_destroy(void *actions)'),
  addDup2: libc.func('int posix_spawn_file_actions_adddup2(void *actions, int fd, int newfd)'),
  addChdir: libc.func('int posix_spawn_file_actions_addchdir_np(void *actions, const char *path)'),
  addClosefrom: libc.func('int posix_spawn_file_actions_addclosefrom_np(void *actions, int from)'),
  attrInit: libc.func('int posix_spawnattr_init(void *attr)'),
  attrDestroy: libc.func('int posix_spawnattr_destroy(void *attr)'),
  attrSetFlags: libc.func('int posix_spawnattr_setflags(void *attr, short flags)'),
  attrSetSigDefault: libc.func('int posix_spawnattr_setsigdefault(void *attr, const void *set)'),
  attrSetSigMask: libc.func('int posix_spawnattr_setsigmask(void *attr, const void *set)'),
  sigemptyset: libc.func('int sigemptyset(void *set)'),
  pidfd_open: libc.func('int pidfd_open(int pid, unsigned int flags)'),
  pidfd_send_signal: libc.func('int pidfd_send_signal(int pidfd, int sig, void *info, unsigned int flags)'),
  waitpid: libc.func('int waitpid(int pid, _Out_ int *status, int options)'),
};

export interface PosixSpawnOptions {
  /** The file to execute: a path (no PATH search here; see the agent's resolve-command). */
  file: string;
  /** argv, argv[0] included. */
  argv: readonly string[];
  /** The whole environment, "KEY=value" strings. */
  env: readonly string[];
  /** Working directory of the child (default: ours). */
  cwd?: string;
  /** The fds that become the child's 0, 1 and 2. */
  stdio: readonly [number, number, number];
  /** More fds for the child, as its 3, 4, ... (e.g. a pipe a helper reports on). */
  extraFds?: readonly number[];
  /** Make the child a session (and process group) leader. */
  setsid?: boolean;
}

/** A posix_spawn error number as a SysError named like Node's spawn errors (`spawn <file> ENOENT`). */
function spawnFailure(file: string, err: number): SysError {
  return new SysError(`spawn ${file}`, err);
}

/** glibc's spawn functions return an error number instead of setting errno. */
function must(ret: number, what: string): void {
  if (ret !== 0) throw new SysError(what, ret);
}

/** Starts `file`; returns its pid. Throws a SysError (code ENOENT, EACCES, ...) if it could not run. */
export function posixSpawn(o: PosixSpawnOptions): number {
  if (o.argv.length === 0) throw new TypeError('posixSpawn: argv must hold at least argv[0]');
  const actions = Buffer.alloc(256);
  const attr = Buffer.alloc(512);
  const sigs = Buffer.alloc(256);
  // A source fd below the last target could be overwritten by an earlier dup2 onto it: lift those first.
  const wanted = [...o.stdio, ...(o.extraFds ?? [])];
  const lifted: number[] = [];
  const stdio = wanted.map((fd) => {
    if (fd >= wanted.length) return fd;
    const high = dupFd(fd);
    lifted.push(high);
    return high;
  });
  must(f.actionsInit(actions), 'posix_spawn_file_actions_init');
  try {
    must(f.attrInit(attr), 'posix_spawnattr_init');
    try {
      for (const [target, fd] of stdio.entries()) {
        must(f.addDup2(actions, fd, target), 'posix_spawn_file_actions_adddup2');
      }
      // Nothing else: an fd the agent inherited without close-on-exec must not reach a container.
      must(f.addClosefrom(actions, stdio.length), 'posix_spawn_file_actions_addclosefrom_np');
      if (o.cwd !== undefined) must(f.addChdir(actions, o.cwd), 'posix_spawn_file_actions_addchdir_np');
      // Every bit set by hand: sigfillset leaves out glibc's internal signals 32
      // and 33, and an SIG_IGN inherited on those would survive exec too.
      sigs.fill(0xff, 0, SIGSET_BYTES);
      must(f.attrSetSigDefault(attr, sigs), 'posix_spawnattr_setsigdefault');
      f.sigemptyset(sigs);
      must(f.attrSetSigMask(attr, sigs), 'posix_spawnattr_setsigmask');
      const flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | (o.setsid ? POSIX_SPAWN_SETSID : 0);
      must(f.attrSetFlags(attr, flags), 'posix_spawnattr_setflags');
      const pid = [0];
      const ret = f.posix_spawn(pid, o.file, actions, attr, [...o.argv, null], [...o.env, null]);
      if (ret !== 0) throw spawnFailure(o.file, ret);
      return pid[0]!;
    } finally {
      f.attrDestroy(attr);
    }
  } finally {
    f.actionsDestroy(actions);
    for (const fd of lifted) closeQuietly(fd);
  }
}

/** A close-on-exec pidfd for `pid` (readable once the process has exited). */
export function pidfdOpen(pid: number): number {
  // PIDFD_NONBLOCK is O_NONBLOCK; pidfds are always close-on-exec.
  return check(f.pidfd_open(pid, 0), 'pidfd_open', `pid ${pid}`);
}

/** Sends `sig` through a pidfd. Returns false when the process is already gone (ESRCH). */
export function pidfdSignal(pidfd: number, sig: number): boolean {
  if (f.pidfd_send_signal(pidfd, sig, null, 0) === 0) return true;
  const err = koffi.errno();
  if (err === 3 /* ESRCH */) return false;
  throw new SysError('pidfd_send_signal', err, `signal ${sig}`);
}

export interface ReapedStatus {
  /** The exit code, null when a signal ended the process. */
  code: number | null;
  /** The number of the signal that ended it, null when it exited. */
  signal: number | null;
}

/** Collects `pid`'s exit status if it has exited (null if it still runs); `block` waits for the exit. */
export function reap(pid: number, block = false): ReapedStatus | null {
  const status = [0];
  const r = check(f.waitpid(pid, status, block ? 0 : WNOHANG), 'waitpid', `pid ${pid}`);
  if (r === 0) return null;
  const s = status[0]!;
  const termsig = s & 0x7f;
  if (termsig === 0) return { code: (s >> 8) & 0xff, signal: null };
  return { code: null, signal: termsig };
}
