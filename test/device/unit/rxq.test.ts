// RxQueue (src/device/rxq.ts): control packets (stand-alone RSTs) go first;
// connections are served round-robin, one turn each (one packet, or the
// packets of one read for as many buffers as were offered), so three busy
// sources share the link evenly; push is idempotent; a source that runs dry
// leaves the queue; remove/clear/isEmpty; the control backlog is bounded.
// The sources are test doubles of the RxSource interface (not the kernel).

import { describe, expect, it } from 'vitest';
import { RxQueue, type RxSource } from '../../../src/device/rxq.js';
import { VSOCK_TYPE_STREAM, type VsockHeader, VsockOp } from '../../../src/protocol/vsock-packet.js';

function hdr(srcPort: number, op: VsockOp = VsockOp.RW, len = 0): VsockHeader {
  return {
    srcCid: 2,
    dstCid: 3,
    srcPort,
    dstPort: 1027,
    len,
    type: VSOCK_TYPE_STREAM,
    op,
    flags: 0,
    bufAlloc: 65536,
    fwdCnt: 0,
  };
}

/**
 * A source with `n` RW packets queued; each fills its buffer's first byte
 * with its tag. `perTurn` packets at most per turn (one read filling that
 * many buffers).
 */
class Source implements RxSource {
  pulls = 0;
  constructor(
    readonly port: number,
    public left: number,
    readonly perTurn = 1,
  ) {}
  nextPackets(bufs: readonly Buffer[], count: number, out: VsockHeader[]): number {
    this.pulls++;
    const n = Math.min(this.left, this.perTurn, count);
    for (let i = 0; i < n; i++) {
      bufs[i]![0] = this.port & 0xff;
      out[i] = hdr(this.port, VsockOp.RW, 1);
    }
    this.left -= n;
    return n;
  }
  hasPendingRx(): boolean {
    return this.left > 0;
  }
}

/** One turn with one buffer: its packet, or null. */
function next1(q: RxQueue<Source>, buf: Buffer): VsockHeader | null {
  const out: VsockHeader[] = [];
  return q.next([buf], 1, out) > 0 ? out[0]! : null;
}

function drain(q: RxQueue<Source>, buf = Buffer.alloc(16)): number[] {
  const ports: number[] = [];
  for (let i = 0; i < 10_000; i++) {
    const h = next1(q, buf);
    if (!h) break;
    ports.push(h.srcPort);
  }
  return ports;
}

describe('RxQueue', () => {
  it('serves three sources round-robin, one packet per turn', () => {
    const q = new RxQueue<Source>();
    const a = new Source(1, 3);
    const b = new Source(2, 3);
    const c = new Source(3, 3);
    q.push(a);
    q.push(b);
    q.push(c);
    expect(drain(q)).toEqual([1, 2, 3, 1, 2, 3, 1, 2, 3]);
    expect(q.isEmpty).toBe(true);
  });

  it('keeps turns fair when sources have different backlogs; drained sources leave', () => {
    const q = new RxQueue<Source>();
    const a = new Source(1, 1);
    const b = new Source(2, 4);
    const c = new Source(3, 2);
    for (const s of [a, b, c]) q.push(s);
    expect(drain(q)).toEqual([1, 2, 3, 2, 3, 2, 2]);
    // Every pull produced a packet: nobody was asked while empty.
    expect(a.pulls + b.pulls + c.pulls).toBe(7);
  });

  it('one fast source never starves the others', () => {
    const q = new RxQueue<Source>();
    const fast = new Source(1, 1000);
    const s2 = new Source(2, 10);
    const s3 = new Source(3, 10);
    for (const s of [fast, s2, s3]) q.push(s);
    const first30 = drain(q).slice(0, 30);
    expect(first30.filter((p) => p === 2)).toHaveLength(10);
    expect(first30.filter((p) => p === 3)).toHaveLength(10);
    expect(first30.filter((p) => p === 1)).toHaveLength(10);
  });

  it('a turn fills as many buffers as the source has packets for, and still counts as one turn', () => {
    const q = new RxQueue<Source>();
    const a = new Source(1, 10, 4);
    const b = new Source(2, 10, 4);
    q.push(a);
    q.push(b);
    const bufs = Array.from({ length: 3 }, () => Buffer.alloc(4));
    const out: VsockHeader[] = [];
    const turns: number[][] = [];
    for (let n = q.next(bufs, 3, out); n > 0; n = q.next(bufs, 3, out))
      turns.push(out.slice(0, n).map((h) => h.srcPort));
    expect(turns).toEqual([[1, 1, 1], [2, 2, 2], [1, 1, 1], [2, 2, 2], [1, 1, 1], [2, 2, 2], [1], [2]]);
    // A control packet is a turn of its own, even with buffers to spare.
    q.pushControl(hdr(9, VsockOp.RST));
    expect(q.next(bufs, 3, out)).toBe(1);
    expect(out[0]!.srcPort).toBe(9);
  });

  it('puts control packets first, in their own order', () => {
    const q = new RxQueue<Source>();
    const a = new Source(1, 2);
    q.push(a);
    expect(q.pushControl(hdr(100, VsockOp.RST))).toBe(true);
    expect(q.pushControl(hdr(101, VsockOp.RST))).toBe(true);
    const buf = Buffer.alloc(4);
    expect(next1(q, buf)?.srcPort).toBe(100);
    expect(next1(q, buf)?.srcPort).toBe(101);
    expect(a.pulls).toBe(0);
    expect(next1(q, buf)?.srcPort).toBe(1);
    // A control packet queued mid-stream jumps ahead of the waiting connection.
    q.pushControl(hdr(102, VsockOp.RST));
    expect(next1(q, buf)?.srcPort).toBe(102);
    expect(next1(q, buf)?.srcPort).toBe(1);
    expect(next1(q, buf)).toBeNull();
  });

  it('push is idempotent: a source queued twice gets one turn per round', () => {
    const q = new RxQueue<Source>();
    const a = new Source(1, 3);
    const b = new Source(2, 3);
    q.push(a);
    q.push(a);
    q.push(b);
    q.push(a);
    expect(drain(q)).toEqual([1, 2, 1, 2, 1, 2]);
  });

  it('hands the caller’s buffer to the source', () => {
    const q = new RxQueue<Source>();
    q.push(new Source(0x42, 1));
    const buf = Buffer.alloc(8);
    const h = next1(q, buf);
    expect(h?.len).toBe(1);
    expect(buf[0]).toBe(0x42);
  });

  it('skips a queued source that has nothing after all and serves the next', () => {
    const q = new RxQueue<Source>();
    const empty = new Source(1, 0);
    const b = new Source(2, 1);
    q.push(empty);
    q.push(b);
    expect(next1(q, Buffer.alloc(4))?.srcPort).toBe(2);
    expect(q.isEmpty).toBe(true);
    expect(next1(q, Buffer.alloc(4))).toBeNull();
  });

  it('remove() takes a source out; clear() empties everything', () => {
    const q = new RxQueue<Source>();
    const a = new Source(1, 5);
    const b = new Source(2, 5);
    q.push(a);
    q.push(b);
    q.remove(a);
    expect(drain(q)).toEqual([2, 2, 2, 2, 2]);
    q.push(a);
    q.pushControl(hdr(9, VsockOp.RST));
    expect(q.isEmpty).toBe(false);
    q.clear();
    expect(q.isEmpty).toBe(true);
    expect(next1(q, Buffer.alloc(4))).toBeNull();
  });

  it('bounds the control backlog (4096) and refuses beyond it', () => {
    const q = new RxQueue<Source>();
    for (let i = 0; i < 4096; i++) expect(q.pushControl(hdr(i, VsockOp.RST))).toBe(true);
    expect(q.pushControl(hdr(5000, VsockOp.RST))).toBe(false);
    expect(drain(q)).toHaveLength(4096);
  });
});
