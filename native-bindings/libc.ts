/**
 * The libc functions this project calls through koffi, declared once.
 *
 * Nothing outside `native-bindings/` imports koffi: every other module uses the
 * typed wrappers beside this file (fd.ts, socket.ts, scm.ts, poll.ts, ...),
 * which turn `-1`/errno into exceptions that carry the errno name.
 *
 * x86-64 Linux layouts (checked on this machine kind): `struct msghdr` is 56
 * bytes, `struct cmsghdr` 16, `struct ucred` 12, `struct sockaddr_un` 110.
 */
import os from 'node:os';
import util from 'node:util';
import koffi from 'koffi';
import { errnoName } from './errno-name.js';

export const libc = koffi.load('libc.so.6');
koffi.alias('ssize_t', 'intptr_t');

export const iovec = koffi.struct('iovec', { iov_base: 'void *', iov_len: 'size_t' });
export const msghdr = koffi.struct('msghdr', {
  msg_name: 'void *',
  msg_namelen: 'uint32_t',
  msg_iov: 'iovec *',
  msg_iovlen: 'size_t',
  msg_control: 'void *',
  msg_controllen: 'size_t',
  msg_flags: 'int',
});

export const c = {
  read: libc.func('ssize_t read(int fd, void *buf, size_t count)'),
  write: libc.func('ssize_t write(int fd, const void *buf, size_t count)'),
  close: libc.func('int close(int fd)'),
  dup: libc.func('int dup(int fd)'),
  dup2: libc.func('int dup2(int oldfd, int newfd)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
  pipe2: libc.func('int pipe2(_Out_ int *fds, int flags)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  connect: libc.func('int connect(int fd, const void *addr, uint32_t len)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  accept4: libc.func('int accept4(int fd, void *addr, void *addrlen, int flags)'),
  shutdown: libc.func('int shutdown(int fd, int how)'),
  getsockopt: libc.func(
    'int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ uint32_t *len)',
  ),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)'),
  sendmsg: libc.func('ssize_t sendmsg(int fd, const msghdr *msg, int flags)'),
  recvmsg: libc.func('ssize_t recvmsg(int fd, _Inout_ msghdr *msg, int flags)'),
  splice: libc.func(
    'ssize_t splice(int fdIn, void *offIn, int fdOut, void *offOut, size_t len, unsigned int flags)',
  ),
  ioctl: libc.func('int ioctl(int fd, unsigned long req, void *arg)'),
  epoll_create1: libc.func('int epoll_create1(int flags)'),
  epoll_ctl: libc.func('int epoll_ctl(int epfd, int op, int fd, void *event)'),
};

/**
 * An errno from a libc call, named (`EAGAIN`, `EBADF`, ...) as Node's own
 * errors are, with the system's description: "connect /x: ENOENT (no such
 * file or directory)".
 */
export class SysError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    const text = util.getSystemErrorMap().get(-errno)?.[1] ?? `errno ${errno}`;
    super(`${syscall}${detail ? ` ${detail}` : ''}: ${code} (${text})`);
    this.name = 'SysError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

export function errno(): number {
  return koffi.errno();
}

/** Throws a SysError for the current errno when `ret < 0`; returns `ret` otherwise. */
export function check(ret: number | bigint, syscall: string, detail?: string): number {
  const n = Number(ret);
  if (n < 0) throw new SysError(syscall, koffi.errno(), detail);
  return n;
}

export const E = os.constants.errno;
