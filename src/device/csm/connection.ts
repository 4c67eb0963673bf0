/**
 * One vsock stream connection, seen from one end: a local end on one side,
 * the peer's packets on the other. The device uses it with a host fd as the
 * local end (a passed FIFO, a CONNECT socket, a `<uds>_<P>` socket) and the
 * guest as the peer; the loopback guest stack uses the very same class with
 * a guest process's socketpair as the local end and the device as the peer,
 * since both ends of virtio-vsock speak one symmetric protocol.
 *
 * The connection is a state machine without I/O of its own (after
 * Firecracker's `VsockConnection<S: VsockConnectionBackend>`): it reads,
 * writes, shuts down and asks for readiness through an injected LocalEnd
 * (local-end.ts), takes time from its owner's clock, and is driven by three
 * inputs: packets from the peer (`handlePacket`), readiness of the local end
 * (`onReady`, routed by the owner) and deadlines (`onTimer`, the kill queue).
 * Its identity, protocol state and the rules for ending are in its base
 * class (lifecycle.ts); this file has the data paths.
 *
 * State machine (after Firecracker's `csm/connection.rs`):
 *
 *   LocalInit ──RESPONSE──▶ Established ◀──(RESPONSE sent)── PeerInit
 *      │  └─2 s, no answer: RST ─▶ Closed      │
 *      └─RST (refused) ─▶ Closed                ├─ local EOF: SHUTDOWN(SEND) to peer (half-close;
 *                                               │  setting RCV too would make the peer's next send
 *                                               │  fail with EPIPE), keep writing what the peer sends
 *                                               ├─ peer SHUTDOWN(SEND): flush, then shut the local
 *                                               │  end's write side so its reader sees EOF
 *                                               ├─ peer SHUTDOWN(RCV): stop reading the local end
 *                                               ├─ we are finished (local EOF, and the local end
 *                                               │  closed outright or the peer done sending and all
 *                                               │  delivered): SHUTDOWN(RCV|SEND), wait ≤ 2 s for the
 *                                               │  peer's RST ─▶ Closed
 *                                               ├─ peer SHUTDOWN(RCV|SEND) and nothing left to write:
 *                                               │  RST to the peer ─▶ Closed (as Linux: the side that
 *                                               │  receives the full shutdown resets, so the side that
 *                                               │  closed first never cuts the other's delivery short)
 *                                               ├─ peer done sending but buffered bytes not written
 *                                               │  within 2 s: RST ─▶ Closed (unless the end says a
 *                                               │  slow reader is backpressure)
 *                                               └─ peer RST, local I/O error, credit violation ─▶ Closed
 *
 * Data path. Peer → local: an RW payload is staged (a view) and written to
 * the local end when the owner's batch of peer packets ends, several
 * payloads in one writev (local-writer.ts; at once when there is no batch);
 * what the end does not take is copied into the TxBuf (capacity = our
 * `buf_alloc`) and written when the end turns writable. Credit (credit.ts)
 * is only returned for bytes the end accepted. Local → peer: packets are
 * *pulled* (`nextPackets(bufs)`) into the buffers they will travel in
 * (guest RX buffers, the loopback link's buffer): one readv fills several
 * buffers, one RW packet each, never more than the peer's credit. The
 * connection stays in the RX queue while the end may hold more and credit
 * lasts; without credit it waits for the peer's CREDIT_UPDATE, and sends
 * one CREDIT_REQUEST only if none has come after CREDIT_REQUEST_AFTER_MS.
 *
 * Read interest is kept armed while reading can make progress (established,
 * credit left), not switched off and on around every packet: a readiness
 * report while a read is already due only marks the end `readIdle` (the
 * reports stop until the RX side has read it dry), and a read that returns
 * less than asked counts as dry (level-triggered readiness reports anything
 * that arrives afterwards), so a round trip costs no epoll_ctl.
 *
 * `keep` (Dragonball's passfd option): a hang-up of the local end must not
 * end the connection, so a writer can come back (`ctr attach`). Reading end
 * of stream with `keep` stops reading and leaves the connection open. (A
 * FIFO passed with `keep` never gets there: its local end holds a keeper,
 * see fifo-end.ts, so it never hangs up and a new writer simply resumes.)
 */
import {
  SHUTDOWN_BOTH,
  ShutdownFlag,
  VSOCK_TYPE_STREAM,
  type VsockHeader,
  VsockOp,
} from '../../protocol/vsock-packet.js';
import { CREDIT_REQUEST_AFTER_MS, SHUTDOWN_DRAIN_TIMEOUT_MS } from '../defaults.js';
import { ConnectionLifecycle } from './lifecycle.js';
import { WOULD_BLOCK } from './local-end.js';
import { PendingRx } from './types.js';

const { RST: P_RST, REQUEST: P_REQUEST, RESPONSE: P_RESPONSE, RW: P_RW, SHUTDOWN: P_SHUTDOWN } = PendingRx;
const { CREDIT_UPDATE: P_CREDIT_UPDATE, CREDIT_REQUEST: P_CREDIT_REQUEST } = PendingRx;

export class VsockConnection extends ConnectionLifecycle {
  /** When the last packet came from the peer / went to it (the owner's clock), for operators. */
  private lastFromPeer = 0;
  private lastToPeer = 0;
  /** `nextPacket`'s one-buffer arguments, reused. */
  private readonly one: Buffer[] = [];
  private readonly oneOut: VsockHeader[] = [];

  protected override self(): VsockConnection {
    return this;
  }

  /** One line for operators (`kill -USR2 <vmm>` dumps the table; the VM suite's stall test too). */
  describe(): string {
    const { credit: c, pending } = this;
    const flags = [this.localEof && 'local-eof', this.localClosedBoth && 'local-closed']
      .concat([this.peerShutSend && 'peer-no-send', this.peerShutRcv && 'peer-no-rcv'])
      .concat([
        this.sentShutdownBoth && 'sent-shutdown-both',
        this.keep && 'keep',
        this.readIdle && 'read-idle',
      ]);
    const now = this.owner.now();
    const ago = (t: number) => (t === 0 ? '-' : `${now - t}ms`);
    return (
      `${this.localPort}↔${this.peerPort} ${this.state} ${this.end.describe()} pending=${pending.toString(2)} ` +
      `held=${this.writer.length} peerCredit=${c.peerCredit} peerBufAlloc=${c.peerBufAlloc} ` +
      `peerFwd=${c.peerFwdCnt} tx=${c.txCnt} rx=${c.rxCnt} fwd=${c.fwdCnt} fwdSent=${c.fwdCntSent} ` +
      `lastFromPeer=${ago(this.lastFromPeer)} lastToPeer=${ago(this.lastToPeer)} ` +
      flags.filter(Boolean).join(',')
    );
  }

  // ─── peer → local ──────────────────────────────────────────────────────

  /** Handles one packet from the peer addressed to this connection (`data`: see ConnectionOwner.deferWrites). */
  handlePacket(hdr: VsockHeader, data: Buffer | undefined): void {
    if (this.state === 'closed') return;
    this.lastFromPeer = this.owner.now();
    // Anything but more data comes after the data staged before it.
    if (hdr.op !== VsockOp.RW && this.writer.hasStaged) {
      this.flushStaged();
      if (this.closed) return;
    }
    if (hdr.op === VsockOp.RST) {
      this.finish(this.state === 'local-init' ? 'refused' : 'peer-reset');
      return;
    }
    this.credit.peerSays(hdr.bufAlloc, hdr.fwdCnt);
    if (this.peerCredit > 0) this.deadline.credit = 0;
    switch (hdr.op) {
      case VsockOp.RESPONSE:
        if (this.state !== 'local-init') {
          this.reset('protocol', 'unexpected RESPONSE');
          return;
        }
        this.state = 'established';
        this.owner.established(this);
        this.refreshInterest();
        if (this.end.readableNow) this.schedule(P_RW);
        return;
      case VsockOp.REQUEST:
        // A REQUEST for a connection that already exists: the peer lost track of it.
        this.reset('protocol', 'REQUEST on an existing connection');
        return;
      case VsockOp.RW:
        if (this.state !== 'established') {
          this.reset('protocol', 'RW before the connection was set up');
          return;
        }
        this.receiveData(data ?? Buffer.alloc(0));
        break;
      case VsockOp.CREDIT_REQUEST:
        this.schedule(P_CREDIT_UPDATE);
        break;
      case VsockOp.CREDIT_UPDATE:
        break;
      case VsockOp.SHUTDOWN:
        if (hdr.flags & ShutdownFlag.SEND) this.peerShutSend = true;
        if (hdr.flags & ShutdownFlag.RCV) {
          this.peerShutRcv = true;
          this.stopReading();
        }
        break;
      default:
        this.reset('protocol', `unexpected op ${hdr.op}`);
        return;
    }
    if (this.closed) return;
    // Bytes the end holds already (read before the connection existed) get no readiness report: resume on credit.
    if (this.end.readableNow && this.peerCredit > 0 && this.wantsLocalRead()) this.schedule(P_RW);
    this.refreshInterest();
    this.maybeFinish();
  }

  private receiveData(data: Buffer): void {
    this.credit.received(data.length);
    if (this.peerShutSend) {
      this.reset('protocol', 'RW after the peer shut down sending');
      return;
    }
    if (!this.end.canWrite) {
      this.reset('local-error', 'data for a read-only fd');
      return;
    }
    if (this.credit.overrun) {
      this.reset('protocol', 'peer sent more than its credit');
      return;
    }
    this.writer.add(data);
    if (this.writer.hasStaged) {
      if (!this.owner.deferWrites(this)) this.flushStaged();
    } else if (this.credit.updateDue()) {
      // Held behind bytes the end has not taken: the window the peer sees shrinks all the same.
      this.schedule(P_CREDIT_UPDATE);
    }
  }

  /** Writes the payloads staged in this batch (the owner calls it when its batch ends). */
  flushStaged(): void {
    if (this.closed || !this.writer.hasStaged) return;
    let n: number;
    try {
      n = this.writer.flushStaged(this.end, this.owner.counters);
    } catch (err) {
      this.localFailure(err);
      return;
    }
    this.delivered(n);
  }

  /** `n` bytes reached the local end: credit, and whatever that unblocks. */
  private delivered(n: number): void {
    this.credit.delivered(n);
    if (this.credit.updateDue()) this.schedule(P_CREDIT_UPDATE);
    this.maybeFinish();
    if (!this.closed) this.refreshInterest();
  }

  // ─── local end readiness ───────────────────────────────────────────────

  /** The local end is readable (or hung up) and/or writable: called by the owner's readiness routing. */
  onReady(readable: boolean, writable: boolean): void {
    if (this.state === 'closed') return;
    if (writable && !this.writer.held.isEmpty) {
      let n: number;
      try {
        n = this.writer.flushHeld(this.end, this.owner.counters);
      } catch (err) {
        this.localFailure(err);
        return;
      }
      this.delivered(n);
      if (this.closed) return;
    }
    if (readable) {
      if (this.wantsLocalRead()) this.schedule(P_RW);
      else if (this.pending & P_RW) this.readIdle = true;
    }
    this.refreshInterest();
  }

  /** A read may be scheduled now (none is due yet). */
  private wantsLocalRead(): boolean {
    return this.canReadLocal() && (this.pending & P_RW) === 0;
  }

  /** Asks the local end for exactly the readiness that can make progress now. */
  private refreshInterest(): void {
    if (this.state === 'closed' || this.pending & P_RST) return;
    const canRead = this.canReadLocal();
    const credit = this.peerCredit;
    this.want(canRead && credit > 0 && !this.readIdle, !this.writer.held.isEmpty);
    // Out of credit: wait for the peer's update, and ask only if none comes (lifecycle.ts, onTimer).
    if (canRead && credit === 0 && this.deadline.credit === 0)
      this.startWait('credit', CREDIT_REQUEST_AFTER_MS);
  }

  // ─── local → peer ──────────────────────────────────────────────────────

  /**
   * Produces the next packets for the peer into `out[0, n)`, returning `n`:
   * a control packet alone, or RW packets read with one readv into
   * `bufs[0, count)`, one packet per buffer used (at most each buffer's
   * length). Returns 0 when nothing is due.
   */
  nextPackets(bufs: readonly Buffer[], count: number, out: VsockHeader[]): number {
    while (this.pending !== 0) {
      const ctl = this.nextControl();
      if (ctl) {
        out[0] = ctl;
        this.lastToPeer = this.owner.now();
        return 1;
      }
      if (this.pending & P_RW) {
        const n = this.readForPeer(bufs, count, out);
        if (n > 0) {
          this.lastToPeer = this.owner.now();
          return n;
        }
        continue;
      }
      if (this.pending & P_SHUTDOWN) {
        this.pending &= ~P_SHUTDOWN;
        out[0] = this.shutdownPacket();
        this.lastToPeer = this.owner.now();
        return 1;
      }
    }
    return 0;
  }

  /** `nextPackets` with one buffer: the next packet, its RW payload in `buf`, or null. */
  nextPacket(buf: Buffer): VsockHeader | null {
    this.one[0] = buf;
    return this.nextPackets(this.one, 1, this.oneOut) > 0 ? this.oneOut[0]! : null;
  }

  /** The next control packet due before data (RST, REQUEST, RESPONSE, credit), or null. */
  private nextControl(): VsockHeader | null {
    if (this.pending & P_RST) {
      this.pending = 0;
      const hdr = this.header(VsockOp.RST);
      this.resetSent();
      return hdr;
    }
    if (this.pending & P_REQUEST) {
      this.pending &= ~P_REQUEST;
      return this.header(VsockOp.REQUEST);
    }
    if (this.pending & P_RESPONSE) {
      this.pending &= ~P_RESPONSE;
      this.state = 'established';
      this.refreshInterest();
      return this.header(VsockOp.RESPONSE);
    }
    if (this.pending & P_CREDIT_UPDATE) {
      this.pending &= ~P_CREDIT_UPDATE;
      return this.header(VsockOp.CREDIT_UPDATE);
    }
    if (this.pending & P_CREDIT_REQUEST) {
      this.pending &= ~P_CREDIT_REQUEST;
      return this.header(VsockOp.CREDIT_REQUEST);
    }
    return null;
  }

  private shutdownPacket(): VsockHeader {
    const hdr = this.header(VsockOp.SHUTDOWN);
    if (this.finishedLocally()) {
      hdr.flags = SHUTDOWN_BOTH;
      this.sentShutdownBoth = true;
      this.startWait('close', SHUTDOWN_DRAIN_TIMEOUT_MS);
    } else {
      hdr.flags = ShutdownFlag.SEND;
    }
    this.maybeFinish();
    return hdr;
  }

  /** One RW turn: a readv into `bufs`, split into packets; 0 when no packet came of it. */
  private readForPeer(bufs: readonly Buffer[], count: number, out: VsockHeader[]): number {
    let room = 0;
    for (let i = 0; i < count; i++) room += bufs[i]!.length;
    room = Math.min(room, this.peerCredit);
    if (room === 0 || this.state !== 'established' || this.localEof || this.peerShutRcv) {
      this.stopReading();
      this.refreshInterest();
      return 0;
    }
    const io = this.owner.counters;
    let n: number;
    try {
      if (count === 1) io.reads++;
      else io.readvs++;
      n = this.end.readv(bufs, count, room);
    } catch (err) {
      this.stopReading();
      this.localFailure(err);
      return 0;
    }
    if (n === WOULD_BLOCK) {
      io.wouldBlocks++;
      this.stopReading();
      this.refreshInterest();
      return 0;
    }
    if (n === 0) {
      this.stopReading();
      this.onLocalEof();
      return 0;
    }
    this.credit.sent(n);
    let packets = 0;
    for (let left = n; left > 0; packets++) {
      const hdr = this.header(VsockOp.RW);
      hdr.len = Math.min(left, bufs[packets]!.length);
      left -= hdr.len;
      out[packets] = hdr;
    }
    // Less than asked: the end is dry for now (readiness reports what comes next).
    if (n < room && !this.end.readableNow) {
      this.stopReading();
      this.refreshInterest();
    }
    return packets;
  }

  private onLocalEof(): void {
    if (this.keep) {
      this.readParked = true;
      this.refreshInterest();
      return;
    }
    this.localEof = true;
    // A socket whose far end was closed outright can receive nothing more either: say so,
    // as Linux does on close(). A plain read EOF (half-close, FIFO writer gone) stays SEND only.
    this.localClosedBoth = this.end.closedOutright();
    this.schedule(P_SHUTDOWN);
    this.refreshInterest();
  }

  private header(op: VsockOp): VsockHeader {
    return {
      srcCid: this.localCid,
      dstCid: this.peerCid,
      srcPort: this.localPort,
      dstPort: this.peerPort,
      len: 0,
      type: VSOCK_TYPE_STREAM,
      op,
      flags: 0,
      bufAlloc: this.credit.bufAlloc,
      fwdCnt: this.credit.advertise(),
    };
  }
}
