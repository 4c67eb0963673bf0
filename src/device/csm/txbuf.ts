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
 * Memory: the ring is allocated on the first push, not with the connection,
 * so a connection whose local reader keeps up never holds one; once
 * allocated it stays until the connection ends (a slow reader fills and
 * drains it over and over). A connection therefore holds at most
 * `capacity` bytes for its peer.
 */
import { type LocalEnd, WOULD_BLOCK } from './local-end.js';

export class TxBuf {
  private ring: Buffer | null = null;
  private head = 0; // next byte to write out
  private size = 0;
  private readonly runs: Buffer[] = [];

  constructor(readonly capacity: number) {}

  get length(): number {
    return this.size;
  }

  get isEmpty(): boolean {
    return this.size === 0;
  }

  /** Bytes of memory the ring holds (0 until the first push). */
  get allocated(): number {
    return this.ring?.length ?? 0;
  }

  /** Appends `data`; false (nothing appended) when it does not fit. */
  push(data: Buffer): boolean {
    if (data.length > this.capacity - this.size) return false;
    if (data.length === 0) return true;
    this.ring ??= Buffer.allocUnsafe(this.capacity);
    const tail = (this.head + this.size) % this.capacity;
    const first = Math.min(data.length, this.capacity - tail);
    data.copy(this.ring, tail, 0, first);
    if (first < data.length) data.copy(this.ring, 0, first);
    this.size += data.length;
    return true;
  }

  /**
   * Writes as much as `end` takes, in one writev. Returns bytes written (0
   * when it is full). Throws the end's error (EPIPE, ...) for the connection
   * to handle.
   */
  flushTo(end: Pick<LocalEnd, 'writev'>): number {
    const ring = this.ring;
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
}
