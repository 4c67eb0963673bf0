/**
 * A split virtqueue (virtio 1.x, section 2.7), device side, over guest memory.
 *
 * Three areas the guest driver allocates, little-endian:
 *   descriptor table  size x { addr u64, len u32, flags u16, next u16 }   (16 B each)
 *   available ring    flags u16, idx u16, ring[size] u16, used_event u16  (driver writes)
 *   used ring         flags u16, idx u16, ring[size] {id u32, len u32}, avail_event u16 (device writes)
 * The driver puts the head of a descriptor chain in avail.ring[idx % size] and
 * bumps avail.idx; the device takes chains in order from `lastAvailIdx`,
 * reads the device-readable descriptors (flag WRITE clear) and fills the
 * device-writable ones (WRITE set, always after the readable ones), then puts
 * `{head, bytes written}` in the used ring and bumps used.idx.
 *
 * Trust: the guest owns every byte here, so nothing read from it is
 * believed. `popChain()` checks that avail.idx does not run more than `size`
 * ahead (else the queue is `broken`: a VirtqueueError with no head, stop
 * using the queue), and for each chain: head and `next` indices inside the
 * table, buffers inside guest memory (GuestMemoryError from the translation),
 * readable descriptors never after writable ones, and at most `size`
 * descriptors per chain, which also catches a `next` cycle. A bad chain is
 * consumed and reported as a VirtqueueError carrying its `head`: the caller
 * logs it and returns the head with `pushUsed(head, 0)`, as Firecracker does,
 * and the queue keeps working.
 *
 * Indirect descriptors (VIRTIO_RING_F_INDIRECT_DESC) are followed when
 * enabled: a descriptor with INDIRECT points at a table of `len / 16`
 * descriptors in guest memory, which then makes up the chain (INDIRECT with
 * NEXT, nested INDIRECT, or a table that is empty or not a multiple of 16
 * bytes is an error, virtio 2.7.5.3.1).
 *
 * Notifications, both directions, including VIRTIO_RING_F_EVENT_IDX:
 * - device to driver (`needsNotify()`, call after pushing used entries):
 *   without EVENT_IDX, interrupt unless avail.flags has NO_INTERRUPT; with it,
 *   interrupt when used.idx has passed the driver's used_event since the last
 *   decision (vring_need_event).
 * - driver to device: with EVENT_IDX the device writes avail_event =
 *   lastAvailIdx after every pop, so the driver kicks for the next new
 *   buffer ("EVENT_IDX is all or nothing": a device that never writes it
 *   stops getting kicks). `enableNotification()` rewrites it and re-checks
 *   avail.idx, returning true when buffers arrived meanwhile (then process
 *   them before sleeping). `disableNotification()` sets used.flags
 *   NO_NOTIFY (non-EVENT_IDX only; a hint the driver may ignore).
 *
 * Memory ordering: the guest runs on other CPUs. On x86-64 (TSO) loads are
 * not reordered with loads, nor stores with stores, so the read and publish
 * orders below suffice; the one reordering x86 does allow, a later load
 * passing an earlier store, matters where the device writes an index and
 * then reads the driver's suppression field (and the reverse). There
 * `fence()` runs `Atomics.add` on a SharedArrayBuffer, which V8 emits as a
 * `lock`-prefixed instruction: a full barrier for all memory on x86. Other
 * architectures are not supported by this file.
 */
import { GuestMemoryError } from './memory.js';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
export const DESC_SIZE = 16;
/** Virtio caps split queues at 32768 entries. */
export const MAX_QUEUE_SIZE = 32768;

/** What a virtqueue needs from guest memory (GuestMemory implements it). */
export interface GuestMemoryAccess {
  guest(addr: number | bigint, len: number): Buffer;
  user(addr: number | bigint, len: number): Buffer;
}

export class VirtqueueError extends Error {
  /** The chain's head when the chain was consumed (return it with pushUsed(head, 0)); undefined when the queue itself is broken. */
  readonly head: number | undefined;
  constructor(message: string, head?: number) {
    super(head === undefined ? message : `chain ${head}: ${message}`);
    this.name = 'VirtqueueError';
    this.head = head;
  }
}

export interface DescriptorChain {
  head: number;
  /** Device-readable buffers, in order (views into guest memory: use them before the memory table changes). */
  readable: Buffer[];
  /** Device-writable buffers, in order. */
  writable: Buffer[];
  readableLen: number;
  writableLen: number;
}

export interface VirtqueueOptions {
  /** Queue size (SET_VRING_NUM): a power of two, 1..32768. */
  size: number;
  /** Ring addresses in QEMU user space (SET_VRING_ADDR). */
  descAddr: number | bigint;
  availAddr: number | bigint;
  usedAddr: number | bigint;
  /** First avail index to process (SET_VRING_BASE); also the used index to start from. */
  base?: number;
  indirect?: boolean;
  eventIdx?: boolean;
}

const fenceCell = new Int32Array(new SharedArrayBuffer(4));
/** Full memory barrier (see the module comment). */
export function fence(): void {
  Atomics.add(fenceCell, 0, 0);
}

/** virtio's vring_need_event: has `newIdx` moved past `eventIdx` since `oldIdx`? (u16 arithmetic) */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

export class SplitVirtqueue {
  readonly size: number;
  readonly indirect: boolean;
  readonly eventIdx: boolean;
  readonly #mem: GuestMemoryAccess;
  readonly #desc: Buffer;
  readonly #avail: Buffer;
  readonly #used: Buffer;
  #lastAvail: number;
  #usedIdx: number;
  /** used.idx at the last needsNotify() decision (EVENT_IDX). */
  #signalledUsed = 0;
  #signalledValid = false;
  #broken: string | null = null;

  /** Translates the three ring areas once; throws GuestMemoryError if any is not inside one region. */
  constructor(mem: GuestMemoryAccess, opts: VirtqueueOptions) {
    const { size } = opts;
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
      throw new VirtqueueError(`bad queue size ${size}`);
    }
    this.size = size;
    this.indirect = opts.indirect ?? false;
    this.eventIdx = opts.eventIdx ?? false;
    this.#mem = mem;
    this.#desc = mem.user(opts.descAddr, DESC_SIZE * size);
    this.#avail = mem.user(opts.availAddr, 6 + 2 * size);
    this.#used = mem.user(opts.usedAddr, 6 + 8 * size);
    const base = (opts.base ?? 0) & 0xffff;
    this.#lastAvail = base;
    this.#usedIdx = base;
  }

  /** Next avail index the device will take (GET_VRING_BASE answers this). */
  get lastAvailIdx(): number {
    return this.#lastAvail;
  }

  get usedIdx(): number {
    return this.#usedIdx;
  }

  /** Why the queue stopped, or null. A broken queue pops nothing until it is set up again. */
  get broken(): string | null {
    return this.#broken;
  }

  /** Chains the driver made available and the device has not taken yet. */
  availableCount(): number {
    return (this.#avail.readUInt16LE(2) - this.#lastAvail) & 0xffff;
  }

  /**
   * Takes the next chain, or null when none is available. Throws VirtqueueError
   * (with `head`: chain consumed, queue fine; without: queue broken) or
   * GuestMemoryError wrapped in a VirtqueueError with the head.
   */
  popChain(): DescriptorChain | null {
    if (this.#broken) throw new VirtqueueError(this.#broken);
    const pending = this.availableCount();
    if (pending === 0) return null;
    if (pending > this.size) {
      this.#broken = `avail.idx ${this.#avail.readUInt16LE(2)} is ${pending} entries ahead of ${this.#lastAvail} in a queue of ${this.size}`;
      throw new VirtqueueError(this.#broken);
    }
    // The ring entry is read after avail.idx (x86 keeps load order).
    const head = this.#avail.readUInt16LE(4 + 2 * (this.#lastAvail % this.size));
    this.#lastAvail = (this.#lastAvail + 1) & 0xffff;
    if (this.eventIdx) this.#writeAvailEvent(this.#lastAvail);
    if (head >= this.size)
      throw new VirtqueueError(`head index ${head} outside a queue of ${this.size}`, head);
    try {
      return this.#walk(head);
    } catch (err) {
      if (err instanceof GuestMemoryError) throw new VirtqueueError(err.message, head);
      throw err;
    }
  }

  #walk(head: number): DescriptorChain {
    const chain: DescriptorChain = { head, readable: [], writable: [], readableLen: 0, writableLen: 0 };
    let table = this.#desc;
    let tableSize = this.size;
    let idx = head;
    let seen = 0;
    let inIndirect = false;
    for (;;) {
      if (idx >= tableSize)
        throw new VirtqueueError(`descriptor index ${idx} outside a table of ${tableSize}`, head);
      if (++seen > tableSize)
        throw new VirtqueueError(`chain longer than ${tableSize} descriptors (a loop?)`, head);
      const o = idx * DESC_SIZE;
      const lo = table.readUInt32LE(o);
      const hi = table.readUInt32LE(o + 4);
      const addr = hi * 0x1_0000_0000 + lo;
      const len = table.readUInt32LE(o + 8);
      const flags = table.readUInt16LE(o + 12);
      const next = table.readUInt16LE(o + 14);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) throw new VirtqueueError('indirect descriptor without INDIRECT_DESC', head);
        if (inIndirect) throw new VirtqueueError('nested indirect descriptor', head);
        if (flags & VIRTQ_DESC_F_NEXT) throw new VirtqueueError('indirect descriptor with NEXT', head);
        if (len === 0 || len % DESC_SIZE !== 0) {
          throw new VirtqueueError(`indirect table of ${len} bytes`, head);
        }
        // Direct descriptors before an indirect one are accepted, as Linux vhost does.
        table = this.#mem.guest(addr, len);
        tableSize = len / DESC_SIZE;
        if (tableSize > MAX_QUEUE_SIZE)
          throw new VirtqueueError(`indirect table of ${tableSize} entries`, head);
        inIndirect = true;
        idx = 0;
        seen = 0;
        continue;
      }
      const buf = this.#mem.guest(addr, len);
      if (flags & VIRTQ_DESC_F_WRITE) {
        chain.writable.push(buf);
        chain.writableLen += len;
      } else {
        if (chain.writable.length > 0)
          throw new VirtqueueError('readable descriptor after a writable one', head);
        chain.readable.push(buf);
        chain.readableLen += len;
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return chain;
      idx = next;
    }
  }

  /** Gives the chain back to the driver, `len` bytes written into its writable buffers. */
  pushUsed(head: number, len: number): void {
    if (!Number.isInteger(head) || head < 0 || head >= this.size) throw new RangeError(`bad head ${head}`);
    const slot = 4 + 8 * (this.#usedIdx % this.size);
    this.#used.writeUInt32LE(head, slot);
    this.#used.writeUInt32LE(len >>> 0, slot + 4);
    // x86 keeps store order: the element is visible before the index that publishes it.
    this.#usedIdx = (this.#usedIdx + 1) & 0xffff;
    this.#used.writeUInt16LE(this.#usedIdx, 2);
  }

  /** Whether the driver wants an interrupt for the used entries pushed since the last call. */
  needsNotify(): boolean {
    fence(); // our used.idx store before reading the driver's suppression fields
    if (!this.eventIdx) {
      return (this.#avail.readUInt16LE(0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    const old = this.#signalledUsed;
    const valid = this.#signalledValid;
    this.#signalledUsed = this.#usedIdx;
    this.#signalledValid = true;
    if (!valid) return true;
    const usedEvent = this.#avail.readUInt16LE(4 + 2 * this.size);
    return vringNeedEvent(usedEvent, this.#usedIdx, old);
  }

  /** Asks the driver to kick for new buffers. True when some are already available (process before sleeping). */
  enableNotification(): boolean {
    if (this.eventIdx) this.#writeAvailEvent(this.#lastAvail);
    else this.#used.writeUInt16LE(this.#used.readUInt16LE(0) & ~VIRTQ_USED_F_NO_NOTIFY, 0);
    fence(); // our store before re-reading avail.idx
    return this.availableCount() !== 0;
  }

  /** Hints that kicks are not needed while the device is polling (ignored with EVENT_IDX). */
  disableNotification(): void {
    if (!this.eventIdx) this.#used.writeUInt16LE(this.#used.readUInt16LE(0) | VIRTQ_USED_F_NO_NOTIFY, 0);
  }

  #writeAvailEvent(v: number): void {
    this.#used.writeUInt16LE(v, 4 + 8 * this.size);
  }
}
