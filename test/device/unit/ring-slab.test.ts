// RingSlab (src/device/csm/ring-slab.ts) and TxBuf's use of it: a ring takes
// memory only at its first buffered byte and gives it back at release(); a
// slot given back has its pages returned to the kernel (measured as this
// process's RSS, read from /proc/self/status, and as the slot reading zeros),
// and slots are reused rather than new regions made.

import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '../../../native-bindings/index.js';
import { RingSlab, SLOTS_PER_REGION } from '../../../src/device/csm/ring-slab.js';
import { TxBuf } from '../../../src/device/csm/txbuf.js';

const rssKiB = () => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]);

describe('RingSlab', () => {
  it('rounds slots up to a page and reuses given-back slots before making a region', () => {
    const slab = new RingSlab(1000);
    expect(slab.slotSize).toBe(PAGE_SIZE);
    const a = slab.take();
    expect(a.buf.length).toBe(1000);
    expect(slab.reserved).toBe(SLOTS_PER_REGION * PAGE_SIZE);
    const more = Array.from({ length: SLOTS_PER_REGION - 1 }, () => slab.take());
    expect(slab.reserved).toBe(SLOTS_PER_REGION * PAGE_SIZE);
    expect(slab.inUse).toBe(SLOTS_PER_REGION);
    for (const s of [a, ...more]) slab.give(s);
    expect(slab.inUse).toBe(0);
    for (let i = 0; i < 3 * SLOTS_PER_REGION; i++) slab.give(slab.take());
    expect(slab.reserved).toBe(SLOTS_PER_REGION * PAGE_SIZE);
  });

  it('gives a slot’s pages back to the kernel: RSS falls by about the slot, which then reads zeros', () => {
    const capacity = 8 << 20; // big enough to see in RSS over the test's own noise
    const slab = new RingSlab(capacity);
    const slot = slab.take();
    const before = rssKiB();
    slot.buf.fill(0xa5);
    const filled = rssKiB();
    expect(filled - before).toBeGreaterThan((capacity / 1024) * 0.9);
    slab.give(slot);
    const after = rssKiB();
    expect(filled - after).toBeGreaterThan((capacity / 1024) * 0.9);
    expect(slot.buf.every((b) => b === 0)).toBe(true);
  });
});

describe('TxBuf memory', () => {
  it('holds no memory until a byte is buffered, and gives it back at release()', () => {
    const slab = new RingSlab(64 * 1024);
    const t = new TxBuf(64 * 1024, slab);
    expect(t.push(Buffer.alloc(0))).toBe(true);
    expect(t.allocated).toBe(0);
    expect(slab.inUse).toBe(0);
    expect(t.push(Buffer.from('abc'))).toBe(true);
    expect(t.allocated).toBeGreaterThan(0);
    expect(slab.inUse).toBe(1);
    t.release();
    t.release();
    expect(t.allocated).toBe(0);
    expect(t.isEmpty).toBe(true);
    expect(slab.inUse).toBe(0);
  });
});
