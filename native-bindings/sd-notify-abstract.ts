/**
 * One datagram to a Linux *abstract* Unix socket, the kind systemd names in
 * `NOTIFY_SOCKET=@name` (a leading NUL byte in `sun_path` instead of a file).
 * Node has no Unix datagram sockets and the `unix-dgram` package cannot
 * address abstract names (it `strncpy`s the path and passes the full
 * `sizeof(sockaddr_un)` as the address length), hence this binding.
 *
 * The address length matters: an abstract name is the `addrlen - 2` bytes
 * after `sun_family`, NULs included, so the address is exactly
 * `2 + 1 + name bytes` long (`offsetof(sun_path) + 1 + strlen(name)`), as
 * systemd's own `sd_notify()` builds it. Padding it to 110 bytes would name a
 * different socket.
 *
 * The send is `MSG_DONTWAIT`: a notify socket whose queue is full yields
 * EAGAIN instead of blocking the event loop. Errors are `SysError`s carrying
 * the errno name (`ECONNREFUSED` when nothing is bound to the name).
 */
import os from 'node:os';
import { c, E, errno, libc, SysError } from './libc.js';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2_000_000;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
/** `sizeof(sockaddr_un.sun_path)` on Linux. */
const SUN_PATH_BYTES = 108;
/** Longest abstract name: `sun_path` minus its leading NUL. */
export const MAX_ABSTRACT_NAME_BYTES = SUN_PATH_BYTES - 1;

type SendTo = (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number;
let sendtoFn: SendTo | undefined;

/** Declared here rather than in libc.ts's table: this file is its only user. */
function sendto(): SendTo {
  sendtoFn ??= libc.func(
    'intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)',
  ) as SendTo;
  return sendtoFn;
}

/**
 * `struct sockaddr_un` for the abstract name `name` (given without its
 * leading `@`/NUL): `sun_family` in host byte order, a NUL, the name bytes.
 * Its `length` is the address length to pass to the kernel.
 */
export function abstractSockaddr(name: string | Buffer): Buffer {
  const bytes = typeof name === 'string' ? Buffer.from(name, 'utf8') : name;
  if (bytes.length > MAX_ABSTRACT_NAME_BYTES) {
    throw new SysError(
      'sendto',
      E.ENAMETOOLONG,
      `abstract name is ${bytes.length} bytes (max ${MAX_ABSTRACT_NAME_BYTES})`,
    );
  }
  const addr = Buffer.alloc(2 + 1 + bytes.length);
  // sa_family_t is in host byte order.
  if (os.endianness() === 'LE') addr.writeUInt16LE(AF_UNIX, 0);
  else addr.writeUInt16BE(AF_UNIX, 0);
  bytes.copy(addr, 3); // addr[2] stays 0: the abstract-namespace marker
  return addr;
}

/**
 * Sends `data` as one datagram to the abstract socket `name` (without the
 * leading `@`) from a fresh `SOCK_DGRAM|SOCK_CLOEXEC` socket, then closes it.
 * Synchronous and non-blocking. Throws `SysError` (`code` = errno name).
 */
export function sendToAbstractSocket(name: string | Buffer, data: string | Buffer): void {
  const addr = abstractSockaddr(name);
  const payload = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const shown = `@${typeof name === 'string' ? name : name.toString('utf8')}`;

  const fd = Number(c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd < 0) throw new SysError('socket', errno(), 'AF_UNIX SOCK_DGRAM');
  try {
    let sent: number;
    do {
      sent = Number(sendto()(fd, payload, payload.length, MSG_DONTWAIT | MSG_NOSIGNAL, addr, addr.length));
    } while (sent < 0 && errno() === E.EINTR);
    if (sent < 0) throw new SysError('sendto', errno(), shown);
    // A datagram is sent whole or not at all; anything else is a kernel surprise worth hearing about.
    if (sent !== payload.length)
      throw new SysError('sendto', E.EMSGSIZE, `${shown}: sent ${sent} of ${payload.length} bytes`);
  } finally {
    c.close(fd);
  }
}
