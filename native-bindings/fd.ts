/**
 * Plain fd operations for non-blocking I/O driven by readiness (poll.ts).
 *
 * `readFd`/`writeFd`/`spliceFd` return `WOULD_BLOCK` (-1) for EAGAIN instead of
 * throwing: on the data path EAGAIN is the normal way a transfer pauses, and an
 * exception per pause would cost more than the syscall. Every other error
 * throws a SysError carrying the errno name. EINTR is retried.
 */
import fs from 'node:fs';
import { c, check, E, errno, SysError } from './libc.js';

export const WOULD_BLOCK = -1;

const F_GETFL = 3;
const F_SETFL = 4;
const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
export const O_NONBLOCK = 0o4000;
export const O_ACCMODE = 3;
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;

/** The kernel writes/reads exactly where we say: never past the Buffer. */
export function checkRange(buf: Buffer, off: number, len: number): void {
  if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > buf.length) {
    throw new RangeError(`range [${off}, ${off}+${len}) outside a buffer of ${buf.length} bytes`);
  }
}

function ioResult(ret: number | bigint, syscall: string, fd: number): number {
  const n = Number(ret);
  if (n >= 0) return n;
  const e = errno();
  if (e === E.EAGAIN) return WOULD_BLOCK;
  throw new SysError(syscall, e, `fd ${fd}`);
}

/** read(2) into `buf[off, off+len)`. Returns bytes read (0 = EOF) or WOULD_BLOCK. */
export function readFd(fd: number, buf: Buffer, off = 0, len = buf.length - off): number {
  checkRange(buf, off, len);
  for (;;) {
    const ret = c.read(fd, off === 0 ? buf : buf.subarray(off), len);
    if (ret < 0 && errno() === E.EINTR) continue;
    return ioResult(ret, 'read', fd);
  }
}

/** write(2) from `buf[off, off+len)`. Returns bytes written or WOULD_BLOCK. */
export function writeFd(fd: number, buf: Buffer, off = 0, len = buf.length - off): number {
  checkRange(buf, off, len);
  for (;;) {
    const ret = c.write(fd, off === 0 ? buf : buf.subarray(off), len);
    if (ret < 0 && errno() === E.EINTR) continue;
    return ioResult(ret, 'write', fd);
  }
}

export const SPLICE_F_MOVE = 1;
export const SPLICE_F_NONBLOCK = 2;
export const SPLICE_F_MORE = 4;

/** splice(2) between two fds (one must be a pipe), no userspace copy. Returns bytes moved, 0 at EOF, or WOULD_BLOCK. */
export function spliceFd(
  fdIn: number,
  fdOut: number,
  len: number,
  flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK,
): number {
  for (;;) {
    const ret = c.splice(fdIn, null, fdOut, null, len, flags);
    if (ret < 0 && errno() === E.EINTR) continue;
    return ioResult(ret, 'splice', fdIn);
  }
}

export function closeFd(fd: number): void {
  // close(2) must not be retried on EINTR on Linux: the fd is gone either way.
  const ret = c.close(fd);
  if (ret < 0 && errno() !== E.EINTR) throw new SysError('close', errno(), `fd ${fd}`);
}

/** Closes, ignoring EBADF-style errors: for cleanup paths that must not throw. */
export function closeQuietly(fd: number | undefined | null): void {
  if (fd === undefined || fd === null || fd < 0) return;
  c.close(fd);
}

export function dupFd(fd: number): number {
  const nfd = check(c.fcntl(fd, 1030 /* F_DUPFD_CLOEXEC */, 3), 'fcntl(F_DUPFD_CLOEXEC)', `fd ${fd}`);
  return nfd;
}

export function getFlags(fd: number): number {
  return check(c.fcntl(fd, F_GETFL, 0), 'fcntl(F_GETFL)', `fd ${fd}`);
}

export function setFlags(fd: number, flags: number): void {
  check(c.fcntl(fd, F_SETFL, flags), 'fcntl(F_SETFL)', `fd ${fd}`);
}

export function setNonBlocking(fd: number, on: boolean): void {
  const flags = getFlags(fd);
  const next = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (next !== flags) setFlags(fd, next);
}

export function setCloexec(fd: number, on: boolean): void {
  const cur = check(c.fcntl(fd, F_GETFD, 0), 'fcntl(F_GETFD)', `fd ${fd}`);
  const next = on ? cur | FD_CLOEXEC : cur & ~FD_CLOEXEC;
  if (next !== cur) check(c.fcntl(fd, F_SETFD, next), 'fcntl(F_SETFD)', `fd ${fd}`);
}

/** The access mode of an open fd: 'r', 'w' or 'rw'. */
export function accessMode(fd: number): 'r' | 'w' | 'rw' {
  const mode = getFlags(fd) & O_ACCMODE;
  return mode === O_RDONLY ? 'r' : mode === O_WRONLY ? 'w' : 'rw';
}

/** Grows (or shrinks) a pipe's kernel buffer; returns the size the kernel set. */
export function setPipeSize(fd: number, bytes: number): number {
  return check(c.fcntl(fd, F_SETPIPE_SZ, bytes), 'fcntl(F_SETPIPE_SZ)', `fd ${fd}`);
}

let pipeMax: number | undefined;

/** /proc/sys/fs/pipe-max-size, read once (1 MiB, the kernel default, if unreadable). */
export function pipeMaxSize(): number {
  if (pipeMax === undefined) {
    try {
      pipeMax = Number.parseInt(fs.readFileSync('/proc/sys/fs/pipe-max-size', 'utf8'), 10) || 1 << 20;
    } catch {
      pipeMax = 1 << 20;
    }
  }
  return pipeMax;
}

/**
 * Grows a pipe or FIFO towards `bytes` (capped at pipe-max-size), best
 * effort: an unprivileged user over pipe-user-pages-soft gets EPERM, and a
 * pipe already holding more than the new size EBUSY; the pipe then keeps its
 * size. Never shrinks. Returns the size the pipe has afterwards.
 */
export function growPipe(fd: number, bytes: number): number {
  const cur = getPipeSize(fd);
  const want = Math.min(bytes, pipeMaxSize());
  if (want <= cur) return cur;
  try {
    return setPipeSize(fd, want);
  } catch {
    return cur;
  }
}

export function getPipeSize(fd: number): number {
  return check(c.fcntl(fd, F_GETPIPE_SZ, 0), 'fcntl(F_GETPIPE_SZ)', `fd ${fd}`);
}

/** pipe2(O_CLOEXEC [| O_NONBLOCK]) → [readEnd, writeEnd]. */
export function makePipe(nonBlocking = false): [number, number] {
  const fds = [0, 0];
  check(c.pipe2(fds, O_CLOEXEC | (nonBlocking ? O_NONBLOCK : 0)), 'pipe2');
  return [fds[0]!, fds[1]!];
}

export type FdKind = 'fifo' | 'socket' | 'char' | 'file' | 'dir' | 'block' | 'symlink' | 'other';

/** What an fd refers to (fstat). Only fifo, socket and char fds can be polled. */
export function fdKind(fd: number): FdKind {
  const st = fs.fstatSync(fd);
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'char';
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isBlockDevice()) return 'block';
  if (st.isSymbolicLink()) return 'symlink';
  return 'other';
}

/** Whether an fd number is open in this process. */
export function isOpen(fd: number): boolean {
  return c.fcntl(fd, F_GETFD, 0) >= 0;
}

/** Open fds of a process, from /proc/<pid>/fd (for leak checks and tests). */
export function countOpenFds(pid: number | 'self' = 'self'): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

const FIONREAD = 0x541b;
/** Bytes waiting to be read on a socket or pipe (FIONREAD). */
export function bytesReadable(fd: number): number {
  const out = Buffer.alloc(4);
  check(c.ioctl(fd, FIONREAD, out), 'ioctl(FIONREAD)', `fd ${fd}`);
  return out.readInt32LE(0);
}

/**
 * dup2(2): makes `target` a copy of `fd` (closing what `target` was). For a
 * process that must move its own stdio, which Node cannot do (a warm spare
 * shim taking on a task's log FIFO as stdout and stderr).
 */
export function dup2Fd(fd: number, target: number): void {
  for (;;) {
    if (c.dup2(fd, target) >= 0) return;
    const e = errno();
    if (e !== E.EINTR) throw new SysError('dup2', e, `fd ${fd} onto ${target}`);
  }
}
