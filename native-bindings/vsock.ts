/**
 * AF_VSOCK stream sockets (family 40) as raw fds, for code running inside a
 * real guest (a QEMU VM with virtio-vsock). Never use these on the host to
 * reach CID 2: on the host that is the machine's own hypervisor side.
 *
 * `struct sockaddr_vm` (linux/vm_sockets.h), 16 bytes on x86-64:
 *   u16 svm_family, u16 svm_reserved1, u32 svm_port, u32 svm_cid,
 *   u8 svm_flags, u8 svm_zero[3].
 *
 * All sockets are non-blocking and close-on-exec; drive them with FdWatcher
 * (poll.ts) and readFd/writeFd (fd.ts).
 */
import { c, check, E, errno, libc, SysError } from './libc.js';
import { FdWatcher } from './poll.js';
import { SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET } from './socket.js';

export const AF_VSOCK = 40;
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_PORT_ANY = 0xffffffff;
export const VMADDR_CID_HYPERVISOR = 0;
export const VMADDR_CID_LOCAL = 1;
export const VMADDR_CID_HOST = 2;
const SO_ERROR = 4;
const SOCKADDR_VM_SIZE = 16;

/** Encodes `struct sockaddr_vm`. */
export function sockaddrVm(cid: number, port: number): Buffer {
  const addr = Buffer.alloc(SOCKADDR_VM_SIZE);
  addr.writeUInt16LE(AF_VSOCK, 0);
  addr.writeUInt32LE(port >>> 0, 4);
  addr.writeUInt32LE(cid >>> 0, 8);
  return addr;
}

/** Decodes `struct sockaddr_vm`. */
export function parseSockaddrVm(addr: Buffer): { cid: number; port: number } {
  return { port: addr.readUInt32LE(4), cid: addr.readUInt32LE(8) };
}

function vsockSocket(): number {
  return check(c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), 'socket(AF_VSOCK)');
}

/** A listening AF_VSOCK stream socket on `port` (any CID), non-blocking. */
export function vsockListen(port: number, backlog = 128): number {
  const fd = vsockSocket();
  try {
    const addr = sockaddrVm(VMADDR_CID_ANY, port);
    check(c.bind(fd, addr, addr.length), 'bind(AF_VSOCK)', `port ${port}`);
    check(c.listen(fd, backlog), 'listen(AF_VSOCK)', `port ${port}`);
    return fd;
  } catch (err) {
    c.close(fd);
    throw err;
  }
}

export interface VsockAccepted {
  fd: number;
  peerCid: number;
  peerPort: number;
}

/** accept4 a pending connection (non-blocking, close-on-exec); null when none is pending. */
export function vsockAccept(listenFd: number): VsockAccepted | null {
  for (;;) {
    const addr = Buffer.alloc(SOCKADDR_VM_SIZE);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(SOCKADDR_VM_SIZE, 0);
    const fd = c.accept4(listenFd, addr, len, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      const { cid, port } = parseSockaddrVm(addr);
      return { fd, peerCid: cid, peerPort: port };
    }
    const e = errno();
    if (e === E.EINTR || e === E.ECONNABORTED) continue;
    if (e === E.EAGAIN) return null;
    throw new SysError('accept4(AF_VSOCK)', e);
  }
}

/**
 * Starts a non-blocking connect to `cid:port`. Returns the fd and whether the
 * connect is still in progress (EINPROGRESS): then wait until the fd is
 * writable and call `vsockConnectResult(fd)`.
 */
export function vsockConnectStart(cid: number, port: number): { fd: number; pending: boolean } {
  const fd = vsockSocket();
  const addr = sockaddrVm(cid, port);
  for (;;) {
    if (c.connect(fd, addr, addr.length) === 0) return { fd, pending: false };
    const e = errno();
    if (e === E.EINTR) continue;
    if (e === E.EINPROGRESS) return { fd, pending: true };
    c.close(fd);
    throw new SysError('connect(AF_VSOCK)', e, `${cid}:${port}`);
  }
}

/** The outcome of a pending connect (SO_ERROR): throws a SysError if it failed. */
export function vsockConnectResult(fd: number, label = `fd ${fd}`): void {
  const out = Buffer.alloc(4);
  const len = [4];
  check(c.getsockopt(fd, SOL_SOCKET, SO_ERROR, out, len), 'getsockopt(SO_ERROR)', label);
  const err = out.readInt32LE(0);
  if (err !== 0) throw new SysError('connect(AF_VSOCK)', err, label);
}

/** The local CID and port of a vsock socket (getsockname). */
export function vsockLocalAddr(fd: number): { cid: number; port: number } {
  const addr = Buffer.alloc(SOCKADDR_VM_SIZE);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(SOCKADDR_VM_SIZE, 0);
  check(getsockname(fd, addr, len), 'getsockname', `fd ${fd}`);
  return parseSockaddrVm(addr);
}

const cGetsockname = libc.func('int getsockname(int fd, void *addr, void *addrlen)');

function getsockname(fd: number, addr: Buffer, len: Buffer): number {
  return cGetsockname(fd, addr, len) as number;
}

/**
 * Connects to `cid:port`, resolving once the connection is established (the
 * fd stays non-blocking). Readiness through a one-shot FdWatcher.
 */
export async function vsockConnect(cid: number, port: number, timeoutMs = 10_000): Promise<number> {
  const { fd, pending } = vsockConnectStart(cid, port);
  if (!pending) return fd;
  return await new Promise<number>((resolve, reject) => {
    let watcher: FdWatcher | null = null;
    const timer = setTimeout(() => {
      watcher?.close();
      c.close(fd);
      reject(new SysError('connect(AF_VSOCK)', E.ETIMEDOUT, `${cid}:${port}`));
    }, timeoutMs);
    watcher = new FdWatcher(fd, () => {
      watcher?.close();
      clearTimeout(timer);
      try {
        vsockConnectResult(fd, `${cid}:${port}`);
        resolve(fd);
      } catch (err) {
        c.close(fd);
        reject(err);
      }
    });
    watcher.want(false, true);
  });
}

const IOCTL_VM_SOCKETS_GET_LOCAL_CID = 0x7b9; // _IO(7, 0xb9)
const O_RDONLY_CLOEXEC = 0o2000000;
const cOpen = libc.func('int open(const char *path, int flags)');

/** This machine's own CID (ioctl on /dev/vsock): inside a guest, the CID the VMM gave it. */
export function vsockLocalCid(): number {
  const fd = check(cOpen('/dev/vsock', O_RDONLY_CLOEXEC), 'open', '/dev/vsock');
  try {
    const out = Buffer.alloc(4);
    check(c.ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, out), 'ioctl(IOCTL_VM_SOCKETS_GET_LOCAL_CID)');
    return out.readUInt32LE(0);
  } finally {
    c.close(fd);
  }
}
