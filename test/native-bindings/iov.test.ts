// native-bindings/iov.ts against real pipes, a socketpair and a shared memfd
// mapping: readv fills several Buffers in order (pooled slices, offsets,
// external memory), stops at the byte limit, returns WOULD_BLOCK and 0 the
// way read(2) does; writev sends several Buffers in order; errors carry
// their errno name.

import { describe, expect, it } from 'vitest';
import {
  bufferAddress,
  closeQuietly,
  IOV_MAX,
  makePipe,
  memfdCreate,
  mmapShared,
  readFd,
  readvFd,
  SysError,
  socketPair,
  WOULD_BLOCK,
  writeFd,
  writevFd,
} from '../../native-bindings/index.js';
import { fdJanitor } from './helpers.js';

const { track } = fdJanitor();

function pipe(): [number, number] {
  const p = makePipe(true);
  track(...p);
  return p;
}

describe('readvFd', () => {
  it('fills the buffers in order, pooled slices and offsets included', () => {
    const [r, w] = pipe();
    writeFd(w, Buffer.from('abcdefghijklmnop'));
    const pool = Buffer.allocUnsafe(64).fill(0x2e);
    const a = pool.subarray(3, 6); // a slice of a slice of the pool
    const b = Buffer.alloc(4, 0x2e);
    const c = Buffer.alloc(100, 0x2e);
    expect(readvFd(r, [a, b, c])).toBe(16);
    expect(a.toString()).toBe('abc');
    expect(b.toString()).toBe('defg');
    expect(c.subarray(0, 9).toString()).toBe('hijklmnop');
    expect(pool[2]).toBe(0x2e);
    expect(pool[6]).toBe(0x2e);
  });

  it('reads at most `limit` bytes and only `count` buffers; the rest stays in the pipe', () => {
    const [r, w] = pipe();
    writeFd(w, Buffer.from('0123456789'));
    const bufs = [Buffer.alloc(4), Buffer.alloc(4), Buffer.alloc(4)];
    expect(readvFd(r, bufs, 3, 6)).toBe(6);
    expect(bufs[0]!.toString()).toBe('0123');
    expect(bufs[1]!.subarray(0, 2).toString()).toBe('45');
    expect(bufs[1]![2]).toBe(0);
    expect(readvFd(r, bufs, 1)).toBe(4);
    expect(bufs[0]!.toString()).toBe('6789');
    expect(readvFd(r, bufs, 0)).toBe(0);
    expect(readvFd(r, bufs, 3, 0)).toBe(0);
  });

  it('WOULD_BLOCK on an empty pipe, 0 at end of file', () => {
    const [r, w] = makePipe(true);
    track(r);
    expect(readvFd(r, [Buffer.alloc(8), Buffer.alloc(8)])).toBe(WOULD_BLOCK);
    closeQuietly(w);
    expect(readvFd(r, [Buffer.alloc(8)])).toBe(0);
  });

  it('reads into shared memory mapped from a memfd (guest memory)', () => {
    const fd = memfdCreate('iov-test', 1 << 16);
    track(fd);
    const m = mmapShared(fd, 0, 1 << 16);
    try {
      const [r, w] = pipe();
      writeFd(w, Buffer.from('guest-memory!'));
      const x = m.view.subarray(4096, 4101);
      const y = m.view.subarray(8192, 8200);
      expect(bufferAddress(x)).toBe(m.ptr + 4096n);
      expect(readvFd(r, [x, y])).toBe(13);
      expect(m.view.subarray(4096, 4101).toString()).toBe('guest');
      expect(m.view.subarray(8192, 8200).toString()).toBe('-memory!');
    } finally {
      m.unmap();
    }
  });

  it('refuses more buffers than it has or IOV_MAX; errors carry the errno name', () => {
    const [r] = pipe();
    expect(() => readvFd(r, [Buffer.alloc(1)], 2)).toThrow(RangeError);
    const many = Array.from({ length: IOV_MAX + 1 }, () => Buffer.alloc(1));
    expect(() => readvFd(r, many)).toThrow(RangeError);
    let err: unknown;
    try {
      readvFd(-1, [Buffer.alloc(1)]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SysError);
    expect((err as SysError).code).toBe('EBADF');
  });
});

describe('writevFd', () => {
  it('writes the buffers in order in one call', () => {
    const [a, b] = socketPair(true);
    track(a, b);
    const parts = ['one,', 'two,', 'three'].map((s) => Buffer.from(s));
    expect(writevFd(a, [parts[0]!.subarray(0, 4), parts[1]!, parts[2]!])).toBe(13);
    const got = Buffer.alloc(32);
    expect(readFd(b, got)).toBe(13);
    expect(got.subarray(0, 13).toString()).toBe('one,two,three');
  });

  it('takes what fits in a full pipe, then WOULD_BLOCK', () => {
    const [, w] = pipe();
    const big = Buffer.alloc(1 << 20, 7);
    const n = writevFd(w, [big.subarray(0, 1 << 19), big.subarray(1 << 19)]);
    expect(n).toBeGreaterThan(0);
    expect(n).toBeLessThan(1 << 20);
    expect(writevFd(w, [Buffer.from('x')])).toBe(WOULD_BLOCK);
  });
});
