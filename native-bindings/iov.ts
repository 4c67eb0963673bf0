/**
 * Vectored I/O: readv(2) and writev(2) over several Buffers in one call.
 *
 * The device fills several guest receive buffers from one host fd, and
 * writes several guest packets for one connection to its fd, per system
 * call. koffi can marshal an array of `struct iovec` objects, but doing so
 * per call costs more than the reads it saves (measured: 64 iovecs ~60 µs,
 * 64 plain reads ~35 µs). So the `struct iovec` array is built by hand in
 * one reused Buffer: each Buffer's address is its ArrayBuffer's base
 * address (`koffi.address`, looked up once per ArrayBuffer and cached) plus
 * its byte offset (64 iovecs: ~11 µs). Backing stores of ArrayBuffers never
 * move, and a guest-memory view stays addressable after unmap (mmap.ts
 * leaves a placeholder at the same address), so a cached base stays valid
 * for as long as its ArrayBuffer is reachable.
 *
 * Same conventions as fd.ts: WOULD_BLOCK for EAGAIN, EINTR retried, any
 * other error thrown as a SysError with the errno name.
 */
import koffi from 'koffi';
import { WOULD_BLOCK } from './fd.js';
import { E, errno, libc, SysError } from './libc.js';

/** Linux's UIO_MAXIOV: the most iovecs one call takes. */
export const IOV_MAX = 1024;
const IOVEC_SIZE = 16;

const fns = {
  readv: libc.func('ssize_t readv(int fd, const void *iov, int iovcnt)'),
  writev: libc.func('ssize_t writev(int fd, const void *iov, int iovcnt)'),
};

const bases = new WeakMap<ArrayBufferLike, bigint>();
const iovs = Buffer.alloc(IOV_MAX * IOVEC_SIZE);

function baseAddress(ab: ArrayBufferLike): bigint {
  let base = bases.get(ab);
  if (base === undefined) {
    base = koffi.address(Buffer.from(ab as ArrayBuffer, 0, 0)) as bigint;
    bases.set(ab, base);
  }
  return base;
}

/** The address of `buf`'s first byte. */
export function bufferAddress(buf: Buffer): bigint {
  return baseAddress(buf.buffer) + BigInt(buf.byteOffset);
}

/**
 * Fills the shared iovec array with `bufs[0, count)`, the last one cut so
 * the total is at most `limit`; returns the number of iovecs used.
 */
function fillIovecs(bufs: readonly Buffer[], count: number, limit: number): number {
  if (!Number.isInteger(count) || count < 0 || count > bufs.length || count > IOV_MAX) {
    throw new RangeError(`bad iovec count ${count} for ${bufs.length} buffers (max ${IOV_MAX})`);
  }
  let used = 0;
  let left = limit;
  for (; used < count && left > 0; used++) {
    const b = bufs[used]!;
    const len = Math.min(b.length, left);
    iovs.writeBigUInt64LE(bufferAddress(b), used * IOVEC_SIZE);
    iovs.writeBigUInt64LE(BigInt(len), used * IOVEC_SIZE + 8);
    left -= len;
  }
  return used;
}

function vectored(
  call: (fd: number, iov: Buffer, n: number) => number | bigint,
  name: string,
  fd: number,
  bufs: readonly Buffer[],
  count: number,
  limit: number,
): number {
  if (!Number.isSafeInteger(limit) || limit < 0) throw new RangeError(`bad byte limit ${limit}`);
  const n = fillIovecs(bufs, count, limit);
  if (n === 0) return 0;
  for (;;) {
    const ret = Number(call(fd, iovs, n));
    if (ret >= 0) return ret;
    const e = errno();
    if (e === E.EINTR) continue;
    if (e === E.EAGAIN) return WOULD_BLOCK;
    throw new SysError(name, e, `fd ${fd}`);
  }
}

/**
 * readv(2) into `bufs[0, count)`, in order, at most `limit` bytes in all.
 * Returns bytes read (0 at end of file, or when there was no room), or
 * WOULD_BLOCK.
 */
export function readvFd(
  fd: number,
  bufs: readonly Buffer[],
  count = bufs.length,
  limit = Number.MAX_SAFE_INTEGER,
): number {
  return vectored(fns.readv, 'readv', fd, bufs, count, limit);
}

/** writev(2) of `bufs[0, count)`, in order. Returns bytes written, or WOULD_BLOCK. */
export function writevFd(fd: number, bufs: readonly Buffer[], count = bufs.length): number {
  return vectored(fns.writev, 'writev', fd, bufs, count, Number.MAX_SAFE_INTEGER);
}
