/**
 * RingSlab: the memory behind connections' TxBuf rings, given back to the
 * kernel the moment a connection ends.
 *
 * Why not `Buffer.allocUnsafe` per connection: a ring allocated that way is
 * freed only when V8 collects its connection, and V8 sees little reason to
 * collect (the JavaScript heap stays small); meanwhile glibc serves these
 * 64–256 KiB blocks from its heap once its dynamic mmap threshold has risen,
 * and keeps what they freed. Measured in one vmm after a 10 000-cycle
 * CONNECT/close storm: 244 MiB of dead ring buffers waiting for a GC, then
 * ~300 MiB of free glibc heap it did not return (RSS +20–35 MiB per storm).
 *
 * Here rings are fixed slots of `capacity` (rounded up to a page) in
 * private anonymous regions of SLOTS_PER_REGION slots. `take()` hands out a
 * free slot (a new region when none is free); `give()` discards the slot's
 * pages (madvise MADV_DONTNEED: back to the kernel now) and keeps the slot
 * for the next taker. A slot is touched only where data was buffered, so an
 * idle slot costs address space, not memory. Regions are kept for the
 * process's life: the address space held is the peak of rings in use at once,
 * rounded up to a region (at most 1023 connections × 256 KiB + 64 KiB here).
 * A discarded page reads zeros, so a view kept by mistake cannot crash the
 * process, only read nothing.
 */
import { AnonymousRegion, PAGE_SIZE } from '../../../native-bindings/index.js';

export const SLOTS_PER_REGION = 16;

export interface RingSlot {
  /** The ring's bytes (`capacity` of them). Valid until given back. */
  readonly buf: Buffer;
  readonly region: AnonymousRegion;
  readonly offset: number;
}

export class RingSlab {
  readonly slotSize: number;
  private readonly free: RingSlot[] = [];
  private regions = 0;
  private taken = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity <= 0)
      throw new RangeError(`bad ring capacity ${capacity}`);
    this.slotSize = Math.ceil(capacity / PAGE_SIZE) * PAGE_SIZE;
  }

  /** A slot for one ring; its bytes are whatever the last holder left, or zeros. */
  take(): RingSlot {
    if (this.free.length === 0) this.grow();
    this.taken++;
    return this.free.pop()!;
  }

  /** Returns `slot`: its pages go back to the kernel now. */
  give(slot: RingSlot): void {
    slot.region.discard(slot.offset, this.slotSize);
    this.taken--;
    this.free.push(slot);
  }

  /** Slots handed out and not given back. */
  get inUse(): number {
    return this.taken;
  }

  /** Bytes of address space the slab holds (regions made so far). */
  get reserved(): number {
    return this.regions * SLOTS_PER_REGION * this.slotSize;
  }

  private grow(): void {
    const region = new AnonymousRegion(SLOTS_PER_REGION * this.slotSize);
    this.regions++;
    // Pushed in reverse so take() hands out the region's slots from its start.
    for (let i = SLOTS_PER_REGION - 1; i >= 0; i--) {
      const offset = i * this.slotSize;
      this.free.push({ buf: region.view.subarray(offset, offset + this.capacity), region, offset });
    }
  }
}

const slabs = new Map<number, RingSlab>();

/** The process's slab for rings of `capacity` bytes (one per capacity in use). */
export function ringSlab(capacity: number): RingSlab {
  let slab = slabs.get(capacity);
  if (!slab) {
    slab = new RingSlab(capacity);
    slabs.set(capacity, slab);
  }
  return slab;
}
