/**
 * eventfd(2): the kick and call notifiers of vhost-user virtqueues.
 *
 * QEMU passes one eventfd per queue for each direction: the guest's kicks
 * (SET_VRING_KICK, the backend reads) and the backend's interrupts
 * (SET_VRING_CALL, the backend writes). The value is a u64 counter: a write
 * adds to it, a read returns it and resets it to zero. Everything here is
 * non-blocking: `eventfdRead` returns null when the counter is zero (EAGAIN)
 * and `eventfdWrite` returns false when the counter would overflow (EAGAIN),
 * so neither ever stalls the event loop. Readiness is watched elsewhere
 * (poll.ts), never by blocking here.
 */
import { c, check, E, errno, libc, SysError } from './libc.js';

export const EFD_SEMAPHORE = 0x1;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;

const eventfdFn = libc.func('int eventfd(unsigned int initval, int flags)');

/** A new eventfd, EFD_NONBLOCK|EFD_CLOEXEC by default. The caller owns (and closes) it. */
export function eventfd(initval = 0, flags = EFD_NONBLOCK | EFD_CLOEXEC): number {
  return check(eventfdFn(initval, flags), 'eventfd');
}

/** Adds `value` (default 1) to the counter. False when it would block (counter near overflow). */
export function eventfdWrite(fd: number, value: bigint | number = 1n): boolean {
  const v = BigInt(value);
  if (v <= 0n || v >= 0xffff_ffff_ffff_ffffn) throw new RangeError(`bad eventfd value ${v}`);
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64LE(v);
  for (;;) {
    const n = Number(c.write(fd, buf, 8));
    if (n === 8) return true;
    const e = errno();
    if (n < 0 && e === E.EINTR) continue;
    if (n < 0 && e === E.EAGAIN) return false;
    throw new SysError('write', n < 0 ? e : E.EIO, `eventfd ${fd}`);
  }
}

/** Reads and resets the counter; null when it is zero (nothing signalled). */
export function eventfdRead(fd: number): bigint | null {
  const buf = Buffer.alloc(8);
  for (;;) {
    const n = Number(c.read(fd, buf, 8));
    if (n === 8) return buf.readBigUInt64LE();
    const e = errno();
    if (n < 0 && e === E.EINTR) continue;
    if (n < 0 && e === E.EAGAIN) return null;
    throw new SysError('read', n < 0 ? e : E.EIO, `eventfd ${fd}`);
  }
}
