/**
 * The RX queue: what is due to travel to the peer, after Firecracker's
 * `muxer_rxq.rs`. Two kinds of entries: connections with pending packets, and
 * stand-alone control packets (an RST answering a packet for a connection
 * that does not exist).
 *
 * Connections are served round-robin, one turn each (one control packet, or
 * the RW packets of one read, as many as the caller offered buffers for): a
 * connection that still has packets after its turn goes to the back. That is what keeps one
 * fast stream (or one stalled reader) from starving the others. A Set keeps
 * insertion order and makes re-queueing idempotent.
 */
import type { VsockHeader } from '../protocol/vsock-packet.js';

export interface RxSource {
  /** Its next packets into `out[0, n)` (RW payloads read into `bufs[0, count)`); returns `n`. */
  nextPackets(bufs: readonly Buffer[], count: number, out: VsockHeader[]): number;
  hasPendingRx(): boolean;
}

/** Control packets beyond this are dropped (a peer flooding us with packets for dead connections). */
const MAX_CONTROL = 4096;

export class RxQueue<C extends RxSource> {
  private readonly conns = new Set<C>();
  private readonly control: VsockHeader[] = [];

  get isEmpty(): boolean {
    return this.control.length === 0 && this.conns.size === 0;
  }

  push(conn: C): void {
    this.conns.add(conn);
  }

  remove(conn: C): void {
    this.conns.delete(conn);
  }

  pushControl(hdr: VsockHeader): boolean {
    if (this.control.length >= MAX_CONTROL) return false;
    this.control.push(hdr);
    return true;
  }

  /**
   * One turn: the next control packet, or the next connection's packets
   * (several RW packets from one read, at most one per buffer in
   * `bufs[0, count)`), into `out[0, n)`. Returns `n`; 0 when nothing is due.
   */
  next(bufs: readonly Buffer[], count: number, out: VsockHeader[]): number {
    const ctl = this.control.shift();
    if (ctl) {
      out[0] = ctl;
      return 1;
    }
    for (const conn of this.conns) {
      this.conns.delete(conn);
      const n = conn.nextPackets(bufs, count, out);
      if (conn.hasPendingRx()) this.conns.add(conn);
      if (n > 0) return n;
    }
    return 0;
  }

  clear(): void {
    this.conns.clear();
    this.control.length = 0;
  }
}
