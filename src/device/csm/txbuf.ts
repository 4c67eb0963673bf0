/**
 * TxBuf: bytes the peer sent that the local fd could not take yet.
 *
 * A fixed-capacity ring (capacity = the `buf_alloc` we advertise). The peer
 * may never have more than `buf_alloc` bytes unacknowledged, and we only
 * acknowledge (advance `fwd_cnt`) what the fd accepted, so a well-behaved peer
 * can never overflow it; `push` returning false means the peer broke the
 * credit contract and the connection must be reset. Bytes are copied in only
 * when the local end is full (the connection writes straight through
 * otherwise), and flushed with at most two writes, one per contiguous half of
 * the ring.
 */
import { type LocalEnd, WOULD_BLOCK } from './local-end.js';

export class TxBuf {
  private readonly ring: Buffer;
  private head = 0; // next byte to write out
  private size = 0;

  constructor(readonly capacity: number) {
    this.ring = Buffer.allocUnsafe(capacity);
  }

  get length(): number {
    return this.size;
  }

  get isEmpty(): boolean {
    return this.size === 0;
  }

  /** Appends `data`; false (nothing appended) when it does not fit. */
  push(data: Buffer): boolean {
    if (data.length > this.capacity - this.size) return false;
    const tail = (this.head + this.size) % this.capacity;
    const first = Math.min(data.length, this.capacity - tail);
    data.copy(this.ring, tail, 0, first);
    if (first < data.length) data.copy(this.ring, 0, first);
    this.size += data.length;
    return true;
  }

  /**
   * Writes as much as `end` takes. Returns bytes written (0 when it is
   * full). Throws the end's error (EPIPE, ...) for the connection to handle.
   */
  flushTo(end: Pick<LocalEnd, 'write'>): number {
    let total = 0;
    while (this.size > 0) {
      const run = Math.min(this.size, this.capacity - this.head);
      const n = end.write(this.ring, this.head, run);
      if (n === WOULD_BLOCK) break;
      total += n;
      this.size -= n;
      this.head = this.size === 0 ? 0 : (this.head + n) % this.capacity;
      if (n < run) break;
    }
    return total;
  }
}
