/**
 * Passing file descriptors over Unix sockets (SCM_RIGHTS): one `sendmsg` that
 * carries a payload and fds, one `recvmsg` that returns both.
 *
 * Receiving is defensive, because a received fd is a resource the peer chose
 * to give us: `MSG_CMSG_CLOEXEC` so no fd leaks into children, `MSG_CTRUNC`
 * detected (the kernel dropped fds that did not fit: the message is invalid),
 * and fds beyond `maxFds` are closed here, never handed on, so a bad request
 * cannot leak descriptors into the receiving process.
 */

import { checkRange, WOULD_BLOCK } from './fd.js';
import { c, E, errno, SysError } from './libc.js';

const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const CMSG_HDR = 16; // struct cmsghdr on 64-bit: len u64, level i32, type i32
const MSG_CTRUNC = 0x8;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
/** Upper bound on fds accepted in one message; Linux allows SCM_MAX_FD = 253. */
const MAX_FDS_RECV = 253;

const cmsgSpace = (n: number) => CMSG_HDR + ((n * 4 + 7) & ~7);
const cmsgLen = (n: number) => CMSG_HDR + n * 4;

/**
 * sendmsg(2) of `payload` with `fds` in one SCM_RIGHTS control message.
 * Returns bytes sent or WOULD_BLOCK; throws SysError otherwise (EPIPE for a
 * closed peer: MSG_NOSIGNAL keeps the process alive).
 */
export function sendWithFds(sock: number, payload: Buffer, fds: readonly number[]): number {
  if (payload.length === 0) throw new SysError('sendmsg', E.EINVAL, 'fds need at least one payload byte');
  let control: Buffer | null = null;
  if (fds.length > 0) {
    control = Buffer.alloc(cmsgSpace(fds.length));
    control.writeBigUInt64LE(BigInt(cmsgLen(fds.length)), 0);
    control.writeInt32LE(SOL_SOCKET, 8);
    control.writeInt32LE(SCM_RIGHTS, 12);
    fds.forEach((fd, i) => {
      control!.writeInt32LE(fd, CMSG_HDR + i * 4);
    });
  }
  const msg = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: { iov_base: payload, iov_len: payload.length },
    msg_iovlen: 1,
    msg_control: control,
    msg_controllen: control ? control.length : 0,
    msg_flags: 0,
  };
  for (;;) {
    const ret = Number(c.sendmsg(sock, msg, MSG_NOSIGNAL));
    if (ret >= 0) return ret;
    const e = errno();
    if (e === E.EINTR) continue;
    if (e === E.EAGAIN) return WOULD_BLOCK;
    throw new SysError('sendmsg', e, `fd ${sock}`);
  }
}

export interface Received {
  /** Payload bytes read into the buffer (0 = EOF when no fds came either). */
  bytes: number;
  /** Received fds (close-on-exec), at most `maxFds` of them. */
  fds: number[];
  /** Fds the message carried beyond `maxFds`, already closed here. */
  surplus: number;
  /** The kernel dropped fds that did not fit the control buffer. */
  truncated: boolean;
}

/**
 * recvmsg(2) into `buf`, returning the payload size and any fds. Returns null
 * for WOULD_BLOCK. Fds past `maxFds` are closed at once and counted in
 * `surplus`: the caller decides whether the message is still valid.
 */
export function recvWithFds(
  sock: number,
  buf: Buffer,
  maxFds = 1,
  off = 0,
  len = buf.length - off,
): Received | null {
  checkRange(buf, off, len);
  const control = Buffer.alloc(cmsgSpace(MAX_FDS_RECV));
  const msg = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: { iov_base: off === 0 ? buf : buf.subarray(off), iov_len: len },
    msg_iovlen: 1,
    msg_control: control,
    msg_controllen: control.length,
    msg_flags: 0,
  };
  let ret: number;
  for (;;) {
    ret = Number(c.recvmsg(sock, msg, MSG_CMSG_CLOEXEC));
    if (ret >= 0) break;
    const e = errno();
    if (e === E.EINTR) continue;
    if (e === E.EAGAIN) return null;
    throw new SysError('recvmsg', e, `fd ${sock}`);
  }
  const fds: number[] = [];
  let surplus = 0;
  const controlLen = Number(msg.msg_controllen);
  let pos = 0;
  while (pos + CMSG_HDR <= controlLen) {
    const cmsgLenField = Number(control.readBigUInt64LE(pos));
    const level = control.readInt32LE(pos + 8);
    const type = control.readInt32LE(pos + 12);
    if (cmsgLenField < CMSG_HDR) break;
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      const n = Math.floor((cmsgLenField - CMSG_HDR) / 4);
      for (let i = 0; i < n; i++) {
        const fd = control.readInt32LE(pos + CMSG_HDR + i * 4);
        if (fds.length < maxFds) fds.push(fd);
        else {
          c.close(fd);
          surplus++;
        }
      }
    }
    pos += (cmsgLenField + 7) & ~7;
  }
  return { bytes: ret, fds, surplus, truncated: (msg.msg_flags & MSG_CTRUNC) !== 0 };
}
