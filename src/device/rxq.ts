/**
 * The RX queue: what is due to travel to the peer, after Firecracker's
 * `muxer_rxq.rs`. Two kinds of entries: connections with pending packets, and
 * stand-alone control packets (an RST answering a packet for a connection
 * that does not exist).
 *
 * Connections are served round-robin, one packet per turn: a connection that
 * still has packets after its turn goes to the back. That is what keeps one
 * fast stream (or one stalled reader) from starving the others. A Set keeps
 * insertion order and makes re-queueing idempotent.
 */
import type { VsockHeader } from '../protocol/vsock-packet.js';

export interface RxSource {
  nextPacket(buf: Buffer): VsockHeader | null;
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

  /** The next packet for the peer, RW payload read into `buf`; null when nothing is due. */
  next(buf: Buffer): VsockHeader | null {
    const ctl = this.control.shift();
    if (ctl) return ctl;
    for (const conn of this.conns) {
      this.conns.delete(conn);
      const hdr = conn.nextPacket(buf);
      if (conn.hasPendingRx()) this.conns.add(conn);
      if (hdr) return hdr;
    }
    return null;
  }

  clear(): void {
    this.conns.clear();
    this.control.length = 0;
  }
}
