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
 * Data path. Peer → local: an RW payload is written straight to the local
 * end; what it does not take waits in the TxBuf (capacity = our `buf_alloc`)
 * until the end turns writable. Credit (credit.ts) is only returned for
 * bytes the end accepted. Local → peer: packets are *pulled*
 * (`nextPacket(buf)`) into the buffer they will travel in (a guest RX
 * buffer, the loopback link's buffer), never more than the peer's credit;
 * the connection stays in the RX queue while the end is readable and credit
 * lasts, goes back to waiting on readiness at WOULD_BLOCK, and without credit
 * sends one CREDIT_REQUEST and waits for the peer's update.
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
import { DEVICE_CREDIT, REQUEST_TIMEOUT_MS, SHUTDOWN_DRAIN_TIMEOUT_MS } from '../defaults.js';
import { Credit } from './credit.js';
import { type LocalEnd, WOULD_BLOCK } from './local-end.js';
import { TxBuf } from './txbuf.js';
import {
  type CloseReason,
  type ConnectionOwner,
  type ConnectionParams,
  type ConnState,
  connKey,
  PendingRx,
} from './types.js';

const { RST: P_RST, REQUEST: P_REQUEST, RESPONSE: P_RESPONSE, RW: P_RW, SHUTDOWN: P_SHUTDOWN } = PendingRx;
const { CREDIT_UPDATE: P_CREDIT_UPDATE, CREDIT_REQUEST: P_CREDIT_REQUEST } = PendingRx;

export class VsockConnection {
  readonly localCid: number;
  readonly peerCid: number;
  readonly localPort: number;
  readonly peerPort: number;
  readonly keep: boolean;
  state: ConnState;

  private readonly end: LocalEnd;

  private pending = 0;
  private readonly credit: Credit;
  private readonly txbuf: TxBuf;

  private localEof = false; // we sent SHUTDOWN(SEND)
  private localClosedBoth = false; // the local end was closed outright (at EOF)
  private sentShutdownBoth = false; // we sent SHUTDOWN(RCV|SEND): waiting for the peer's RST
  private peerShutSend = false;
  private peerShutRcv = false;
  private localWriteShut = false; // the local end's write side was shut
  private readParked = false; // keep: local hang-up seen, reading stopped
  /** When each wait this connection is in ends (0: not waiting): for RESPONSE, for the drain, for the peer's RST. */
  private readonly deadline = { request: 0, drain: 0, close: 0 };

  constructor(
    params: ConnectionParams,
    private readonly owner: ConnectionOwner,
  ) {
    this.localCid = params.localCid;
    this.peerCid = params.peerCid;
    this.localPort = params.localPort;
    this.peerPort = params.peerPort;
    this.keep = params.keep ?? false;
    this.end = params.end;
    this.credit = new Credit(params.credit ?? DEVICE_CREDIT, params.peerBufAlloc, params.peerFwdCnt);
    this.txbuf = new TxBuf(this.credit.bufAlloc);
    if (params.initiator === 'local') {
      this.state = 'local-init';
      this.schedule(P_REQUEST);
      this.startWait('request', REQUEST_TIMEOUT_MS);
    } else {
      this.state = 'peer-init';
      this.schedule(P_RESPONSE);
    }
  }

  get key(): string {
    return connKey(this.localPort, this.peerPort);
  }

  get closed(): boolean {
    return this.state === 'closed';
  }

  /** The peer's free receive space, as far as we know. */
  get peerCredit(): number {
    return this.credit.peerCredit;
  }

  /** Bytes from the peer buffered here because the local end was full. */
  get buffered(): number {
    return this.txbuf.length;
  }

  /** One line for operators (`kill -USR2 <vmm>` dumps the table). */
  describe(): string {
    const { credit: c, pending } = this;
    const flags = [this.localEof && 'local-eof', this.localClosedBoth && 'local-closed']
      .concat([this.peerShutSend && 'peer-no-send', this.peerShutRcv && 'peer-no-rcv'])
      .concat([this.sentShutdownBoth && 'sent-shutdown-both', this.keep && 'keep']);
    return (
      `${this.localPort}↔${this.peerPort} ${this.state} ${this.end.describe()} pending=${pending.toString(2)} ` +
      `buffered=${this.txbuf.length} peerCredit=${c.peerCredit} fwd=${c.fwdCnt} rx=${c.rxCnt} tx=${c.txCnt} ` +
      flags.filter(Boolean).join(',')
    );
  }

  hasPendingRx(): boolean {
    return this.pending !== 0;
  }

  // ─── peer → local ──────────────────────────────────────────────────────

  /** Handles one packet from the peer addressed to this connection. */
  handlePacket(hdr: VsockHeader, data: Buffer | undefined): void {
    if (this.state === 'closed') return;
    if (hdr.op === VsockOp.RST) {
      this.finish(this.state === 'local-init' ? 'refused' : 'peer-reset');
      return;
    }
    this.credit.peerSays(hdr.bufAlloc, hdr.fwdCnt);
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
          this.pending &= ~P_RW;
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
    let written = 0;
    if (this.txbuf.isEmpty) {
      try {
        written = this.end.write(data);
      } catch (err) {
        this.localFailure(err);
        return;
      }
      if (written === WOULD_BLOCK) written = 0;
      this.credit.delivered(written);
    }
    if (written < data.length && !this.txbuf.push(data.subarray(written))) {
      this.reset('protocol', 'peer sent more than its credit');
      return;
    }
    if (this.credit.updateDue()) this.schedule(P_CREDIT_UPDATE);
  }

  // ─── local end readiness ───────────────────────────────────────────────

  /** The local end is readable (or hung up) and/or writable: called by the owner's readiness routing. */
  onReady(readable: boolean, writable: boolean): void {
    if (this.state === 'closed') return;
    if (writable && !this.txbuf.isEmpty) {
      let n: number;
      try {
        n = this.txbuf.flushTo(this.end);
      } catch (err) {
        this.localFailure(err);
        return;
      }
      this.credit.delivered(n);
      if (this.credit.updateDue()) this.schedule(P_CREDIT_UPDATE);
      this.maybeFinish();
      if (this.closed) return;
    }
    if (readable && this.wantsLocalRead()) this.schedule(P_RW);
    this.refreshInterest();
  }

  private wantsLocalRead(): boolean {
    return (
      this.state === 'established' &&
      this.end.canRead &&
      !this.localEof &&
      !this.peerShutRcv &&
      !this.readParked &&
      (this.pending & P_RW) === 0
    );
  }

  /** Asks the local end for exactly the readiness that can make progress now. */
  private refreshInterest(): void {
    if (this.state === 'closed' || this.pending & P_RST) return;
    const read = this.wantsLocalRead() && this.peerCredit > 0;
    this.end.want(read, !this.txbuf.isEmpty);
    if (this.wantsLocalRead() && this.credit.shouldRequest()) this.schedule(P_CREDIT_REQUEST);
  }

  // ─── local → peer ──────────────────────────────────────────────────────

  /**
   * Produces the next packet for the peer, RW payload read straight into
   * `buf` (at most `buf.length` bytes). Returns null when nothing is due.
   */
  nextPacket(buf: Buffer): VsockHeader | null {
    while (this.pending !== 0) {
      if (this.pending & P_RST) {
        this.pending = 0;
        const hdr = this.header(VsockOp.RST);
        this.finish(this.resetReason, this.resetDetail);
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
      if (this.pending & P_RW) {
        const hdr = this.readForPeer(buf);
        if (hdr) return hdr;
        continue;
      }
      if (this.pending & P_SHUTDOWN) {
        this.pending &= ~P_SHUTDOWN;
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
    }
    return null;
  }

  private readForPeer(buf: Buffer): VsockHeader | null {
    const room = Math.min(buf.length, this.peerCredit);
    if (room === 0 || this.state !== 'established' || this.localEof || this.peerShutRcv) {
      this.pending &= ~P_RW;
      this.refreshInterest();
      return null;
    }
    let n: number;
    try {
      n = this.end.read(buf, 0, room);
    } catch (err) {
      this.pending &= ~P_RW;
      this.localFailure(err);
      return this.pending & P_RST ? this.nextPacket(buf) : null;
    }
    if (n === WOULD_BLOCK) {
      this.pending &= ~P_RW;
      this.refreshInterest();
      return null;
    }
    if (n === 0) {
      this.pending &= ~P_RW;
      this.onLocalEof();
      return null;
    }
    this.credit.sent(n);
    const hdr = this.header(VsockOp.RW);
    hdr.len = n;
    return hdr;
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

  // ─── ending ────────────────────────────────────────────────────────────

  private resetReason: CloseReason = 'done';
  private resetDetail: string | undefined;
  /** Sends RST to the peer (next pull) and closes once it is out. */
  reset(reason: CloseReason, detail?: string): void {
    if (this.state === 'closed' || this.pending & P_RST) return;
    this.resetReason = reason;
    this.resetDetail = detail;
    this.pending = P_RST;
    this.end.want(false, false);
    this.owner.rxPending(this);
  }

  /**
   * Kill-queue callback. Timers are not cancelled when the wait ends (the
   * kill queue is a plain queue, as Firecracker's), so each call re-checks
   * the deadline this connection itself holds.
   */
  onTimer(now = this.owner.now()): void {
    const { request, drain, close } = this.deadline;
    if (this.state === 'local-init' && now >= request) {
      this.reset('timeout', 'no RESPONSE within 2 s');
    } else if (drain !== 0 && !this.txbuf.isEmpty && now >= drain) {
      this.reset('timeout', `shutdown not drained within 2 s (${this.txbuf.length} bytes left)`);
    } else if (close !== 0 && now >= close) {
      this.reset('done', 'peer did not reset within 2 s of our SHUTDOWN');
    }
  }

  /** Closes without telling the peer (the owner is going away or the peer already forgot us). */
  close(reason: CloseReason = 'shutdown'): void {
    this.finish(reason);
  }

  /** The local end failed (EPIPE, ...): RST, closed as local-error with the errno name. */
  localFailure(err: unknown): void {
    const code = (err as { code?: unknown } | null)?.code;
    this.reset('local-error', typeof code === 'string' ? code : String(err));
  }

  private maybeFinish(): void {
    if (this.state !== 'established') return;
    if (this.peerShutSend && this.txbuf.isEmpty && !this.localWriteShut && this.end.canWrite) {
      // Pass the peer's end of stream on to the local reader.
      this.localWriteShut = true;
      this.end.shutdownWrite();
    }
    // Who sends RST, as in Linux: the side that *received* a full SHUTDOWN, once it
    // has delivered everything. The side that finished first sends SHUTDOWN(RCV|SEND)
    // and waits for that RST, so the peer never drops bytes it still had to deliver.
    if (this.peerShutSend && this.peerShutRcv && this.txbuf.isEmpty && (this.pending & P_SHUTDOWN) === 0) {
      this.reset('done');
      return;
    }
    if (this.finishedLocally() && !this.sentShutdownBoth && (this.pending & P_SHUTDOWN) === 0) {
      this.schedule(P_SHUTDOWN);
    }
    // Only a peer that will send nothing more starts the drain clock (Firecracker): after
    // SHUTDOWN(RCV) alone the peer is still sending and a slow local reader is just slow.
    // An end whose slow reader is backpressure (a FIFO) has no drain clock at all: a dead
    // reader surfaces as EPIPE instead.
    const drainable = !this.end.slowReaderIsBackpressure && !this.deadline.drain;
    if (drainable && this.peerShutSend && !this.txbuf.isEmpty)
      this.startWait('drain', SHUTDOWN_DRAIN_TIMEOUT_MS);
  }

  private startWait(wait: keyof VsockConnection['deadline'], ms: number): void {
    this.deadline[wait] = this.owner.now() + ms;
    this.owner.armTimer(this, ms);
  }

  /**
   * Nothing more will pass in either direction on our side: we read EOF, and
   * either the local end was closed outright or the peer will send nothing
   * more and all it sent is delivered.
   */
  private finishedLocally(): boolean {
    // A write-only local end (a stdout FIFO) never sends: it is "at EOF" from the start.
    const noMoreToSend = this.localEof || !this.end.canRead;
    return noMoreToSend && (this.localClosedBoth || (this.peerShutSend && this.txbuf.isEmpty));
  }

  private finish(reason: CloseReason, detail?: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.pending = 0;
    this.end.close();
    this.txbuf.release();
    this.owner.closed(this, reason, detail);
  }

  private schedule(bit: number): void {
    if (this.state === 'closed') return;
    const was = this.pending;
    this.pending |= bit;
    if (was === 0) this.owner.rxPending(this);
  }
}
