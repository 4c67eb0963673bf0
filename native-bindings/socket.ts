/**
 * Unix stream sockets as raw fds: socketpair, listen/accept, non-blocking
 * connect, shutdown, SO_PEERCRED, buffer sizes.
 *
 * The device and the loopback guest own these fds themselves (driven by
 * poll.ts) instead of handing them to `net.Socket`: a `net.Socket` reads
 * eagerly, and a read that consumes a message carrying SCM_RIGHTS silently
 * drops the fds (libuv reads a non-IPC stream with plain read(2), and the
 * kernel discards the rights that arrive with it), so any socket that may
 * carry fds stays raw.
 */

import { O_CLOEXEC, O_NONBLOCK } from './fd.js';
import { c, check, E, errno, libc, SysError } from './libc.js';

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = O_NONBLOCK;
export const SOCK_CLOEXEC = O_CLOEXEC;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_PEERCRED = 17;
export const SO_PEERGROUPS = 59;
export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;

const SUN_PATH_MAX = 108;

/** `struct sockaddr_un` for a filesystem path, or for an abstract name given as `@name`. */
export function sockaddrUn(path: string): Buffer {
  const abstract = path.startsWith('@');
  const name = Buffer.from(abstract ? path.slice(1) : path);
  const pathLen = name.length + (abstract ? 1 : 0);
  // A path needs its terminating NUL inside sun_path; an abstract name may fill it exactly.
  if (abstract ? pathLen > SUN_PATH_MAX : pathLen >= SUN_PATH_MAX) {
    throw new SysError('sockaddr_un', E.ENAMETOOLONG, `${path} (sun_path holds ${SUN_PATH_MAX - 1} bytes)`);
  }
  // Abstract names: exact length, no terminating NUL. Paths: NUL-terminated.
  const addr = Buffer.alloc(2 + pathLen + (abstract ? 0 : 1));
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, abstract ? 3 : 2);
  return addr;
}

/** A connected pair of AF_UNIX stream sockets (close-on-exec). */
export function socketPair(nonBlocking = false): [number, number] {
  const sv = [0, 0];
  check(
    c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonBlocking ? SOCK_NONBLOCK : 0), 0, sv),
    'socketpair',
  );
  return [sv[0]!, sv[1]!];
}

/** A listening Unix stream socket bound at `path` (non-blocking, close-on-exec). */
export function listenUnix(path: string, backlog = 1024): number {
  const fd = check(c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), 'socket');
  try {
    const addr = sockaddrUn(path);
    check(c.bind(fd, addr, addr.length), 'bind', path);
    check(c.listen(fd, backlog), 'listen', path);
    return fd;
  } catch (err) {
    c.close(fd);
    throw err;
  }
}

/** accept4 a pending connection (non-blocking, close-on-exec); null when none is pending. */
export function acceptUnix(listenFd: number): number | null {
  for (;;) {
    const fd = c.accept4(listenFd, null, null, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) return fd;
    const e = errno();
    if (e === E.EINTR || e === E.ECONNABORTED) continue;
    if (e === E.EAGAIN) return null;
    throw new SysError('accept4', e);
  }
}

/**
 * Connects a new Unix stream socket to `path`. Unix-domain connects complete
 * at once or fail (ECONNREFUSED, ENOENT); a full backlog gives EAGAIN, which
 * is reported like a refusal so callers never spin.
 */
export function connectUnix(path: string, nonBlocking = true): number {
  const addr = sockaddrUn(path); // before socket(): a bad path must not leak an fd
  const fd = check(
    c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonBlocking ? SOCK_NONBLOCK : 0), 0),
    'socket',
  );
  for (;;) {
    if (c.connect(fd, addr, addr.length) === 0) return fd;
    const e = errno();
    if (e === E.EINTR) continue;
    c.close(fd);
    throw new SysError('connect', e, path);
  }
}

export function shutdownFd(fd: number, how: number): void {
  const ret = c.shutdown(fd, how);
  // ENOTCONN: the peer is already gone, which is what shutdown wanted anyway.
  if (ret < 0 && errno() !== E.ENOTCONN) throw new SysError('shutdown', errno(), `fd ${fd}`);
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** The credentials of the process at the other end of a Unix socket. */
export function peerCred(fd: number): PeerCred {
  const out = Buffer.alloc(12);
  const len = [12];
  check(c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, out, len), 'getsockopt(SO_PEERCRED)', `fd ${fd}`);
  return { pid: out.readInt32LE(0), uid: out.readUInt32LE(4), gid: out.readUInt32LE(8) };
}

/**
 * The supplementary groups of the process at the other end of a Unix socket
 * (SO_PEERGROUPS, Linux ≥ 4.13), as recorded at connect/listen time.
 */
export function peerGroups(fd: number): number[] {
  let out = Buffer.alloc(4 * 32);
  for (;;) {
    const len = [out.length];
    if (c.getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, out, len) === 0) {
      const groups: number[] = [];
      for (let off = 0; off + 4 <= len[0]!; off += 4) groups.push(out.readUInt32LE(off));
      return groups;
    }
    // ERANGE: the kernel wrote the length it needs.
    const e = errno();
    if (e !== E.ERANGE || len[0]! <= out.length)
      throw new SysError('getsockopt(SO_PEERGROUPS)', e, `fd ${fd}`);
    out = Buffer.alloc(len[0]!);
  }
}

function intOpt(fd: number, name: number, value: number, label: string): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value, 0);
  check(c.setsockopt(fd, SOL_SOCKET, name, v, 4), `setsockopt(${label})`, `fd ${fd}`);
}

/** Sets SO_SNDBUF/SO_RCVBUF (the kernel doubles the value and caps it at wmem_max/rmem_max). */
export function setSocketBuffers(fd: number, sndBytes?: number, rcvBytes?: number): void {
  if (sndBytes) intOpt(fd, SO_SNDBUF, sndBytes, 'SO_SNDBUF');
  if (rcvBytes) intOpt(fd, SO_RCVBUF, rcvBytes, 'SO_RCVBUF');
}

export function getSocketBuffer(fd: number, which: 'snd' | 'rcv'): number {
  const out = Buffer.alloc(4);
  const len = [4];
  check(
    c.getsockopt(fd, SOL_SOCKET, which === 'snd' ? SO_SNDBUF : SO_RCVBUF, out, len),
    'getsockopt',
    `fd ${fd}`,
  );
  return out.readInt32LE(0);
}

const SIOCOUTQ = 0x5411;
/**
 * What the peer has not read yet of what was sent on `fd` (SIOCOUTQ). For
 * AF_UNIX this counts queued buffers in kernel memory (not payload bytes),
 * so only "zero: the peer has read everything" is exact.
 */
export function unreadBySendPeer(fd: number): number {
  const out = Buffer.alloc(4);
  check(c.ioctl(fd, SIOCOUTQ, out), 'ioctl(SIOCOUTQ)', `fd ${fd}`);
  return out.readInt32LE(0);
}

const getxattr = libc.func(
  'ssize_t getxattr(const char *path, const char *name, _Out_ uint8_t *value, size_t size)',
);

/**
 * The protocol of the socket a path resolves to (typically
 * `/proc/<pid>/fd/<n>`, so another process's fd can be told apart):
 * "AF_VSOCK", "UNIX-STREAM", "TCP"... from the `system.sockprotoname` xattr that
 * sockfs exposes; null when the path is not a socket.
 */
export function socketProtocolName(path: string): string | null {
  const buf = Buffer.alloc(64);
  const n = Number(getxattr(path, 'system.sockprotoname', buf, buf.length));
  return n > 0 ? buf.subarray(0, n).toString('latin1').replace(/\0+$/, '') : null;
}
