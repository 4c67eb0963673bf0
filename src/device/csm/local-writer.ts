/**
 * LocalWriter: the peer's bytes on their way to the local end, in two
 * stages.
 *
 * Staged: RW payloads received during the current batch of packets (a run
 * of a guest's TX queue) are kept as views, not copied, and written with
 * one writev at the end of the batch (`flushStaged`), so a guest sending
 * several packets to one connection costs one system call, not one per
 * packet. The views are only valid until the batch ends: the transport
 * flushes before it gives the guest its buffers back.
 *
 * Held: what the end did not take is copied into the TxBuf ring and written
 * when the end turns writable (`flushHeld`). Once anything is held, new
 * payloads go behind it (copied), so the byte order never changes.
 *
 * Everything here counts against the peer's credit: staged plus held bytes
 * never exceed `buf_alloc` while the peer keeps to its credit (the
 * connection checks that before adding).
 */

import type { IoCounters } from '../counters.js';
import type { LocalEnd } from './local-end.js';
import { WOULD_BLOCK } from './local-end.js';
import { TxBuf } from './txbuf.js';

export class LocalWriter {
  readonly held: TxBuf;
  private readonly staged: Buffer[] = [];
  private stagedBytes = 0;

  constructor(capacity: number) {
    this.held = new TxBuf(capacity);
  }

  /** Bytes staged or held. */
  get length(): number {
    return this.stagedBytes + this.held.length;
  }

  get isEmpty(): boolean {
    return this.stagedBytes === 0 && this.held.isEmpty;
  }

  get hasStaged(): boolean {
    return this.staged.length > 0;
  }

  /** Queues `data` (a view valid until the batch ends): staged while nothing is held, else copied behind what is. */
  add(data: Buffer): void {
    if (data.length === 0) return;
    if (this.held.isEmpty) {
      this.staged.push(data);
      this.stagedBytes += data.length;
    } else if (!this.held.push(data)) {
      throw new RangeError('held bytes over capacity (the credit check should have refused them)');
    }
  }

  /**
   * Writes the staged views in one call (writev, or write for one) and
   * copies what the end did not take into the ring. Returns the bytes the
   * end accepted. Throws the end's error; the staged views are dropped
   * either way.
   */
  flushStaged(end: LocalEnd, io: IoCounters): number {
    const views = this.staged;
    if (views.length === 0) return 0;
    let n: number;
    try {
      if (views.length === 1) {
        io.writes++;
        n = end.write(views[0]!);
      } else {
        io.writevs++;
        n = end.writev(views, views.length);
      }
    } catch (err) {
      this.dropStaged();
      throw err;
    }
    if (n === WOULD_BLOCK) {
      io.wouldBlocks++;
      n = 0;
    }
    let skip = n;
    for (const v of views) {
      if (skip >= v.length) {
        skip -= v.length;
        continue;
      }
      if (!this.held.push(skip > 0 ? v.subarray(skip) : v)) throw new RangeError('held bytes over capacity');
      skip = 0;
    }
    this.dropStaged();
    return n;
  }

  /** Writes held bytes (the end turned writable). Returns bytes written; throws the end's error. */
  flushHeld(end: LocalEnd, io: IoCounters): number {
    if (this.held.isEmpty) return 0;
    io.writevs++;
    const n = this.held.flushTo(end);
    if (n === 0) io.wouldBlocks++;
    return n;
  }

  private dropStaged(): void {
    this.staged.length = 0;
    this.stagedBytes = 0;
  }
}
