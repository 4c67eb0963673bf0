/**
 * TxBuf: bytes the peer sent that the local fd could not take yet.
 *
 * A fixed-capacity ring (capacity = the `buf_alloc` we advertise). The peer
 * may never have more than `buf_alloc` bytes unacknowledged, and we only
 * acknowledge (advance `fwd_cnt`) what the fd accepted, so a well-behaved peer
 * can never overflow it; `push` returning false means the peer broke the
 * credit contract and the connection must be reset. Bytes are copied in only
 * when the local end is full (the connection writes straight through
 * otherwise), and flushed with one writev of the ring's one or two
 * contiguous runs.
 *
 * Memory: the ring is taken from the process's RingSlab (ring-slab.ts) at
 * the first byte buffered, not with the connection, so a connection whose
 * local reader keeps up never holds one; once taken it stays until the
 * connection ends (a slow reader fills and drains it over and over), and
 * `release()` then returns its pages to the kernel at once rather than at
 * some later GC. A connection therefore holds at most `capacity` bytes for
 * its peer.
 */
import { type LocalEnd, WOULD_BLOCK } from './local-end.js';
import { type RingSlab, type RingSlot, ringSlab } from './ring-slab.js';

export class TxBuf {
  private slot: RingSlot | null = null;
  private head = 0; // next byte to write out
  private size = 0;
  private readonly runs: Buffer[] = [];

  constructor(
    readonly capacity: number,
    private readonly slab: RingSlab = ringSlab(capacity),
  ) {}

  get length(): number {
    return this.size;
  }

  get isEmpty(): boolean {
    return this.size === 0;
  }

  /** Bytes of memory the ring holds (0 until the first push and after `release()`). */
  get allocated(): number {
    return this.slot?.buf.length ?? 0;
  }

  /** Appends `data`; false (nothing appended) when it does not fit. */
  push(data: Buffer): boolean {
    if (data.length > this.capacity - this.size) return false;
    if (data.length === 0) return true;
    this.slot ??= this.slab.take();
    const ring = this.slot.buf;
    const tail = (this.head + this.size) % this.capacity;
    const first = Math.min(data.length, this.capacity - tail);
    data.copy(ring, tail, 0, first);
    if (first < data.length) data.copy(ring, 0, first);
    this.size += data.length;
    return true;
  }

  /**
   * Writes as much as `end` takes, in one writev. Returns bytes written (0
   * when it is full). Throws the end's error (EPIPE, ...) for the connection
   * to handle.
   */
  flushTo(end: Pick<LocalEnd, 'writev'>): number {
    const ring = this.slot?.buf;
    if (!ring || this.size === 0) return 0;
    const first = Math.min(this.size, this.capacity - this.head);
    this.runs[0] = ring.subarray(this.head, this.head + first);
    this.runs[1] = ring.subarray(0, this.size - first);
    const n = end.writev(this.runs, first < this.size ? 2 : 1);
    if (n === WOULD_BLOCK) return 0;
    this.size -= n;
    this.head = this.size === 0 ? 0 : (this.head + n) % this.capacity;
    return n;
  }

  /** Drops what is buffered and gives the ring's memory back (the connection has ended). Idempotent. */
  release(): void {
    this.size = 0;
    this.head = 0;
    if (!this.slot) return;
    const slot = this.slot;
    this.slot = null;
    this.slab.give(slot);
  }
}
