// TxBuf (src/device/csm/txbuf.ts), the ring that holds peer bytes the local
// fd could not take: push refuses (and appends nothing) past capacity, the
// ring wraps around, and flushTo (a real non-blocking pipe as the local end) writes what the pipe
// takes, stops when it is full (partial flush), and keeps the byte order
// exact over thousands of random pushes, flushes and reads.

import { afterEach, describe, expect, it } from 'vitest';
import {
  closeFd,
  closeQuietly,
  makePipe,
  readFd,
  SysError,
  setPipeSize,
  WOULD_BLOCK,
  writeFd,
} from '../../../native-bindings/index.js';
import { TxBuf } from '../../../src/device/csm/txbuf.js';
import { patternBytes, prng } from '../../native-bindings/helpers.js';

const toClose: number[] = [];
afterEach(() => {
  for (const fd of toClose.splice(0)) closeQuietly(fd);
});

/** A non-blocking pipe shrunk to one page, so it fills up quickly. */
function smallPipe(): [number, number] {
  const p = makePipe(true);
  toClose.push(...p);
  expect(setPipeSize(p[1], 4096)).toBe(4096);
  return p;
}

/** The pipe's write end as the local end TxBuf flushes to. */
const sink = (fd: number) => ({
  write: (buf: Buffer, off?: number, len?: number) => writeFd(fd, buf, off, len),
});

function drain(fd: number): Buffer {
  const out: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  for (;;) {
    const n = readFd(fd, buf);
    if (n === WOULD_BLOCK || n === 0) return Buffer.concat(out);
    out.push(Buffer.from(buf.subarray(0, n)));
  }
}

describe('TxBuf.push', () => {
  it('appends up to capacity and refuses what does not fit, appending nothing', () => {
    const t = new TxBuf(10);
    expect(t.isEmpty).toBe(true);
    expect(t.push(Buffer.from('abcdef'))).toBe(true);
    expect(t.length).toBe(6);
    expect(t.push(Buffer.from('12345'))).toBe(false);
    expect(t.length).toBe(6);
    expect(t.push(Buffer.from('1234'))).toBe(true);
    expect(t.length).toBe(10);
    expect(t.push(Buffer.from('x'))).toBe(false);
    expect(t.push(Buffer.alloc(0))).toBe(true);
    expect(t.length).toBe(10);
  });

  it('takes exactly capacity bytes on an empty ring, and refuses capacity + 1', () => {
    expect(new TxBuf(8).push(Buffer.alloc(8))).toBe(true);
    expect(new TxBuf(8).push(Buffer.alloc(9))).toBe(false);
  });

  it('wraps around: with the head mid-ring after a partial flush, a push crosses the end', () => {
    // A pipe only takes partial writes in whole pages, so the ring is a few pages big.
    const [r, w] = smallPipe();
    const t = new TxBuf(8192);
    // Fill the 4096-byte pipe through the ring: 4096 of 6000 go out, 1904 stay at ring[4096..6000).
    const a = patternBytes(6000, 1);
    t.push(a);
    expect(t.flushTo(sink(w))).toBe(4096);
    expect(t.length).toBe(1904);
    // 6000 more: 2192 fit up to the end of the ring, 3808 wrap to its start.
    const b = patternBytes(6000, 2);
    expect(t.push(b)).toBe(true);
    expect(t.length).toBe(7904);
    expect(t.push(Buffer.alloc(8192 - 7904 + 1))).toBe(false);
    expect(t.push(Buffer.alloc(0))).toBe(true);
    const out: Buffer[] = [drain(r)];
    while (!t.isEmpty) {
      const n = t.flushTo(sink(w));
      expect(n).toBeGreaterThan(0);
      out.push(drain(r));
    }
    expect(Buffer.concat(out).equals(Buffer.concat([a, b]))).toBe(true);
  });
});

describe('TxBuf.flushTo', () => {
  it('returns 0 for an empty ring and for a full pipe, and keeps the bytes', () => {
    const [r, w] = smallPipe();
    const t = new TxBuf(16384);
    expect(t.flushTo(sink(w))).toBe(0);
    const data = patternBytes(10000, 3);
    t.push(data);
    expect(t.flushTo(sink(w))).toBe(4096); // partial: the pipe is full
    expect(t.length).toBe(10000 - 4096);
    expect(t.flushTo(sink(w))).toBe(0);
    expect(t.length).toBe(10000 - 4096);
    const got = [drain(r)];
    expect(t.flushTo(sink(w))).toBe(4096);
    got.push(drain(r));
    expect(t.flushTo(sink(w))).toBe(10000 - 8192);
    expect(t.isEmpty).toBe(true);
    got.push(drain(r));
    expect(Buffer.concat(got).equals(data)).toBe(true);
  });

  it('throws the fd error (EPIPE) when the reader is gone, keeping its bytes', () => {
    const [r, w] = smallPipe();
    const t = new TxBuf(64);
    t.push(Buffer.from('orphan'));
    closeFd(r);
    let err: unknown;
    try {
      t.flushTo(sink(w));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SysError);
    expect((err as SysError).code).toBe('EPIPE');
    expect(t.length).toBe(6);
  });

  it('preserves order byte-exact over many random pushes, partial flushes and reads', () => {
    const [r, w] = smallPipe();
    const cap = 5000;
    const t = new TxBuf(cap);
    const rand = prng(0xc0ffee);
    const sent: Buffer[] = [];
    const received: Buffer[] = [];
    const readBuf = Buffer.alloc(8192);
    let seed = 100;
    let refused = 0;
    for (let i = 0; i < 5000; i++) {
      const op = rand() % 3;
      if (op === 0) {
        const n = rand() % 1500;
        const chunk = patternBytes(n, seed++);
        const fits = n <= cap - t.length;
        const ok = t.push(chunk);
        expect(ok).toBe(fits);
        if (ok) sent.push(chunk);
        else refused++;
      } else if (op === 1) {
        const before = t.length;
        const n = t.flushTo(sink(w));
        expect(t.length).toBe(before - n);
      } else {
        const want = 1 + (rand() % 3000);
        const n = readFd(r, readBuf, 0, want);
        if (n > 0) received.push(Buffer.from(readBuf.subarray(0, n)));
      }
    }
    while (!t.isEmpty) {
      t.flushTo(sink(w));
      received.push(drain(r));
    }
    received.push(drain(r));
    const a = Buffer.concat(sent);
    const b = Buffer.concat(received);
    expect(b.length).toBe(a.length);
    expect(b.equals(a)).toBe(true);
    expect(a.length).toBeGreaterThan(100_000);
    expect(refused).toBeGreaterThan(0); // the run did exercise the full-ring path
  });
});
