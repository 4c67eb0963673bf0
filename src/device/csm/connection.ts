/**
 * One vsock stream connection, seen from one end: a local fd on one side, the
 * peer's packets on the other. The device uses it with the host fd as the local
 * end (a passed FIFO, a CONNECT socket, a `<uds>_<P>` socket) and the guest as
 * the peer; the loopback guest stack uses the very same class with a guest
 * process's socketpair as the local end and the device as the peer, since
 * both ends of virtio-vsock speak one symmetric protocol.
 *
 * State machine (after Firecracker's `csm/connection.rs`):
 *
 *   LocalInit ──RESPONSE──▶ Established ◀──(RESPONSE sent)── PeerInit
 *      │  └─2 s, no answer: RST ─▶ Closed      │
 *      └─RST (refused) ─▶ Closed                ├─ local EOF: SHUTDOWN(SEND) to peer (half-close;
 *                                               │  setting RCV too would make the peer's next send
 *                                               │  fail with EPIPE), keep writing what the peer sends
 *                                               ├─ peer SHUTDOWN(SEND): flush, then SHUT_WR the local
 *                                               │  socket so its reader sees EOF
 *                                               ├─ peer SHUTDOWN(RCV): stop reading the local fd
 *                                               ├─ we are finished (local EOF, and the local socket
 *                                               │  closed outright or the peer done sending and all
 *                                               │  delivered): SHUTDOWN(RCV|SEND), wait ≤ 2 s for the
 *                                               │  peer's RST ─▶ Closed
 *                                               ├─ peer SHUTDOWN(RCV|SEND) and nothing left to write:
 *                                               │  RST to the peer ─▶ Closed (as Linux: the side that
 *                                               │  receives the full shutdown resets, so the side that
 *                                               │  closed first never cuts the other's delivery short)
 *                                               ├─ peer shut down but buffered bytes not written
 *                                               │  within 2 s: RST ─▶ Closed
 *                                               └─ peer RST, local I/O error, credit violation ─▶ Closed
 *
 * Data path. Peer → local: an RW payload is written straight to the fd; what
 * the fd does not take is copied into the TxBuf (capacity = our `buf_alloc`)
 * and flushed when the fd turns writable. `fwd_cnt` counts bytes the fd
 * accepted, so credit is only returned for bytes really delivered: a slow
 * local reader slows the peer down instead of growing memory.
 * Local → peer: packets are *pulled* (`nextPacket(buf)`): the owner hands
 * over the buffer the packet will travel in (a guest RX buffer, or the
 * loopback link's buffer) and the fd is read straight into it, never more
 * than the peer's credit `peer_buf_alloc - (tx_cnt - peer_fwd_cnt)` allows.
 * While the fd is readable and credit lasts the connection stays in the RX
 * queue; at EAGAIN it goes back to waiting on readiness, and with no credit
 * it asks for some (CREDIT_REQUEST) and waits for the peer's update.
 *
 * `keep` (Dragonball's passfd option): a hang-up of the local fd must not end
 * the connection, so a writer can come back (`ctr attach`). A FIFO in
 * level-triggered epoll reports a hang-up forever once its last writer is
 * gone, so for a FIFO the connection holds a *keeper*: the same FIFO reopened
 * through /proc/self/fd in the other direction. With a keeper the FIFO never
 * hangs up and a new writer simply resumes the flow. For other fds a hang-up
 * with `keep` stops reading and leaves the connection open.
 */
import fs from 'node:fs';
import {
  accessMode,
  closeQuietly,
  FdWatcher,
  fdKind,
  O_NONBLOCK,
  O_RDONLY,
  O_WRONLY,
  POLLHUP,
  pollOnce,
  readFd,
  SHUT_WR,
  SysError,
  shutdownFd,
  WOULD_BLOCK,
  writeFd,
} from '../../../native-bindings/index.js';
import {
  SHUTDOWN_BOTH,
  ShutdownFlag,
  VSOCK_TYPE_STREAM,
  type VsockHeader,
  VsockOp,
} from '../../protocol/vsock-packet.js';
import {
  BUF_ALLOC,
  CREDIT_UPDATE_THRESHOLD,
  REQUEST_TIMEOUT_MS,
  SHUTDOWN_DRAIN_TIMEOUT_MS,
} from '../defaults.js';
import { TxBuf } from './txbuf.js';

export type ConnState = 'local-init' | 'peer-init' | 'established' | 'closed';

/** Why a connection ended, for logs and for the party waiting on it. */
export type CloseReason =
  | 'done' // both sides finished cleanly
  | 'refused' // peer answered our REQUEST with RST
  | 'timeout' // REQUEST unanswered / shutdown not drained in time
  | 'peer-reset' // peer sent RST
  | 'local-error' // the local fd failed (EPIPE, EBADF, ...)
  | 'protocol' // the peer broke the protocol (credit overflow, bad op)
  | 'shutdown'; // the owner is going away

/** What a connection needs from whoever multiplexes it (the muxer). */
export interface ConnectionOwner {
  /** The connection has packets for the peer: put it in the RX queue. */
  rxPending(conn: VsockConnection): void;
  /** The peer accepted our REQUEST. */
  established(conn: VsockConnection): void;
  /** The connection is gone (fd closed): drop it from the table and free its port. */
  closed(conn: VsockConnection, reason: CloseReason, detail?: string): void;
  /** Call `conn.onTimer()` after `ms` (the kill queue). */
  armTimer(conn: VsockConnection, ms: number): void;
}

export interface ConnectionParams {
  localCid: number;
  peerCid: number;
  localPort: number;
  peerPort: number;
  /**
   * The local end. Once the constructor returns, the connection owns it and
   * closes it; if the constructor throws, the caller still owns it.
   */
  fd: number;
  /** Who sent REQUEST: us ('local') or the peer ('peer'). */
  initiator: 'local' | 'peer';
  keep?: boolean;
  /** The peer's credit figures from its REQUEST (peer-initiated connections). */
  peerBufAlloc?: number;
  peerFwdCnt?: number;
  /** Bytes already read from the local end that belong to the stream (e.g. after `CONNECT <port>\n`). */
  preRead?: Buffer;
  /** Our receive buffer as advertised to the peer (`buf_alloc`; default BUF_ALLOC). */
  bufAlloc?: number;
}

// Pending-to-peer operations, as bits.
const P_RST = 1;
const P_REQUEST = 2;
const P_RESPONSE = 4;
const P_CREDIT_UPDATE = 8;
const P_CREDIT_REQUEST = 16;
const P_RW = 32;
const P_SHUTDOWN = 64;

const U32 = 0x1_0000_0000;
const wrap = (n: number) => ((n % U32) + U32) % U32;

export class VsockConnection {
  readonly localCid: number;
  readonly peerCid: number;
  readonly localPort: number;
  readonly peerPort: number;
  readonly keep: boolean;
  state: ConnState;

  private fd: number;
  private keeperFd = -1;
  private watcher: FdWatcher | null = null;
  private readonly canRead: boolean;
  private readonly canWrite: boolean;
  private readonly isSocket: boolean;
  private readonly isFifo: boolean;
  private preRead: Buffer | null;

  private pending = 0;
  private readonly bufAlloc: number;
  private readonly txbuf: TxBuf;
  /** Bytes from the peer the local fd has accepted (our `fwd_cnt`). */
  private fwdCnt = 0;
  /** `fwd_cnt` as last told to the peer. */
  private lastFwdCntSent = 0;
  /** Bytes received from the peer (its `tx_cnt`, as we count it). */
  private rxCnt = 0;
  /** Bytes sent to the peer, and the peer's latest credit figures. */
  private txCnt = 0;
  private peerBufAlloc = 0;
  private peerFwdCnt = 0;
  private creditRequested = false;

  private localEof = false; // we sent SHUTDOWN(SEND)
  private localClosedBoth = false; // the local socket was closed outright (POLLHUP at EOF)
  private sentShutdownBoth = false; // we sent SHUTDOWN(RCV|SEND): waiting for the peer's RST
  private closeDeadline = 0;
  private peerShutSend = false;
  private peerShutRcv = false;
  private localWriteShut = false; // SHUT_WR done on the local socket
  private readParked = false; // keep: local hang-up seen, reading stopped
  private requestDeadline = 0;
  private drainDeadline = 0;

  constructor(
    params: ConnectionParams,
    private readonly owner: ConnectionOwner,
  ) {
    this.localCid = params.localCid;
    this.peerCid = params.peerCid;
    this.localPort = params.localPort;
    this.peerPort = params.peerPort;
    this.keep = params.keep ?? false;
    this.bufAlloc = params.bufAlloc ?? BUF_ALLOC;
    this.txbuf = new TxBuf(this.bufAlloc);
    this.fd = params.fd;
    this.peerBufAlloc = params.peerBufAlloc ?? 0;
    this.peerFwdCnt = params.peerFwdCnt ?? 0;
    this.preRead = params.preRead && params.preRead.length > 0 ? params.preRead : null;
    const mode = accessMode(this.fd);
    this.canRead = mode !== 'w';
    this.canWrite = mode !== 'r';
    const kind = fdKind(this.fd);
    this.isSocket = kind === 'socket';
    this.isFifo = kind === 'fifo';
    // The watcher first: it refuses fds epoll cannot watch (regular files) before anything is opened.
    this.watcher = new FdWatcher(this.fd, (ev) => this.onReady(ev.readable || ev.hangup, ev.writable));
    if (this.keep && kind === 'fifo' && mode !== 'rw') {
      // Reopening a FIFO through /proc gives a new open file on the same pipe.
      const flags = (mode === 'r' ? O_WRONLY : O_RDONLY) | O_NONBLOCK; // libuv adds O_CLOEXEC
      try {
        this.keeperFd = fs.openSync(`/proc/self/fd/${this.fd}`, flags);
      } catch (err) {
        this.watcher.close();
        throw err;
      }
    }
    if (params.initiator === 'local') {
      this.state = 'local-init';
      this.schedule(P_REQUEST);
      this.requestDeadline = Date.now() + REQUEST_TIMEOUT_MS;
      this.owner.armTimer(this, REQUEST_TIMEOUT_MS);
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
    return Math.max(0, this.peerBufAlloc - wrap(this.txCnt - this.peerFwdCnt));
  }

  /** Bytes from the peer buffered here because the local fd was full. */
  get buffered(): number {
    return this.txbuf.length;
  }

  /** One line for operators (`kill -USR2 <vmm>` dumps the table). */
  describe(): string {
    const flags = [
      this.localEof && 'local-eof',
      this.localClosedBoth && 'local-closed',
      this.peerShutSend && 'peer-no-send',
      this.peerShutRcv && 'peer-no-rcv',
      this.sentShutdownBoth && 'sent-shutdown-both',
      this.keep && 'keep',
    ].filter(Boolean);
    return (
      `${this.localPort}↔${this.peerPort} ${this.state} fd=${this.fd} pending=${this.pending.toString(2)} ` +
      `buffered=${this.txbuf.length} peerCredit=${this.peerCredit} fwd=${this.fwdCnt} rx=${this.rxCnt} tx=${this.txCnt} ` +
      `watch=${this.watcher?.wantsRead ? 'r' : ''}${this.watcher?.wantsWrite ? 'w' : ''} ${flags.join(',')}`
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
    this.peerBufAlloc = hdr.bufAlloc;
    this.peerFwdCnt = hdr.fwdCnt;
    switch (hdr.op) {
      case VsockOp.RESPONSE:
        if (this.state !== 'local-init') {
          this.reset('protocol', 'unexpected RESPONSE');
          return;
        }
        this.state = 'established';
        this.owner.established(this);
        this.refreshInterest();
        if (this.preRead) this.schedule(P_RW);
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
    if (this.peerCredit > 0) this.creditRequested = false;
    // Bytes read before the connection existed do not wait for readiness: resume them on credit.
    if (this.preRead && this.peerCredit > 0 && this.wantsLocalRead()) this.schedule(P_RW);
    this.refreshInterest();
    this.maybeFinish();
  }

  private receiveData(data: Buffer): void {
    this.rxCnt = wrap(this.rxCnt + data.length);
    if (this.peerShutSend) {
      this.reset('protocol', 'RW after the peer shut down sending');
      return;
    }
    if (!this.canWrite) {
      this.reset('local-error', 'data for a read-only fd');
      return;
    }
    let written = 0;
    if (this.txbuf.isEmpty) {
      try {
        written = writeFd(this.fd, data);
      } catch (err) {
        this.localFailure(err);
        return;
      }
      if (written === WOULD_BLOCK) written = 0;
      this.fwdCnt = wrap(this.fwdCnt + written);
    }
    if (written < data.length && !this.txbuf.push(data.subarray(written))) {
      this.reset('protocol', 'peer sent more than its credit');
      return;
    }
    this.creditUpdateIfLow();
  }

  /** Schedules a CREDIT_UPDATE when the free space the peer last saw is under the threshold. */
  private creditUpdateIfLow(): void {
    const peerSeesFree = this.bufAlloc - wrap(this.rxCnt - this.lastFwdCntSent);
    if (peerSeesFree < CREDIT_UPDATE_THRESHOLD && this.fwdCnt !== this.lastFwdCntSent) {
      this.schedule(P_CREDIT_UPDATE);
    }
  }

  // ─── local fd readiness ────────────────────────────────────────────────

  private onReady(readable: boolean, writable: boolean): void {
    if (this.state === 'closed') return;
    if (writable && !this.txbuf.isEmpty) {
      let n: number;
      try {
        n = this.txbuf.flushTo(this.fd);
      } catch (err) {
        this.localFailure(err);
        return;
      }
      this.fwdCnt = wrap(this.fwdCnt + n);
      this.creditUpdateIfLow();
      this.maybeFinish();
      if (this.closed) return;
    }
    if (readable && this.wantsLocalRead()) this.schedule(P_RW);
    this.refreshInterest();
  }

  private wantsLocalRead(): boolean {
    return (
      this.state === 'established' &&
      this.canRead &&
      !this.localEof &&
      !this.peerShutRcv &&
      !this.readParked &&
      (this.pending & P_RW) === 0
    );
  }

  /** Watches the fd for exactly what can make progress now. */
  private refreshInterest(): void {
    if (!this.watcher) return;
    const read = this.wantsLocalRead() && this.peerCredit > 0;
    this.watcher.want(read, !this.txbuf.isEmpty);
    if (this.wantsLocalRead() && this.peerCredit === 0 && !this.creditRequested) {
      this.creditRequested = true;
      this.schedule(P_CREDIT_REQUEST);
    }
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
          this.closeDeadline = Date.now() + SHUTDOWN_DRAIN_TIMEOUT_MS;
          this.owner.armTimer(this, SHUTDOWN_DRAIN_TIMEOUT_MS);
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
    if (this.preRead) {
      n = Math.min(room, this.preRead.length);
      this.preRead.copy(buf, 0, 0, n);
      this.preRead = n < this.preRead.length ? this.preRead.subarray(n) : null;
    } else {
      try {
        n = readFd(this.fd, buf, 0, room);
      } catch (err) {
        this.pending &= ~P_RW;
        this.localFailure(err);
        return this.pending & P_RST ? this.nextPacket(buf) : null;
      }
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
    this.txCnt = wrap(this.txCnt + n);
    const hdr = this.header(VsockOp.RW);
    hdr.len = n;
    return hdr;
  }

  private onLocalEof(): void {
    if (this.keep) {
      // Only non-FIFO fds get here with keep (a FIFO has its keeper): park reading.
      this.readParked = true;
      this.refreshInterest();
      return;
    }
    this.localEof = true;
    // A socket whose far end was closed outright (POLLHUP: both directions shut)
    // can receive nothing more either: say so, as Linux does on close(). A plain
    // read EOF (half-close, FIFO writer gone) stays SEND only.
    this.localClosedBoth = this.isSocket && (pollOnce([{ fd: this.fd, events: 0 }])[0]! & POLLHUP) !== 0;
    this.schedule(P_SHUTDOWN);
    this.refreshInterest();
  }

  private header(op: VsockOp): VsockHeader {
    this.lastFwdCntSent = this.fwdCnt;
    return {
      srcCid: this.localCid,
      dstCid: this.peerCid,
      srcPort: this.localPort,
      dstPort: this.peerPort,
      len: 0,
      type: VSOCK_TYPE_STREAM,
      op,
      flags: 0,
      bufAlloc: this.bufAlloc,
      fwdCnt: this.fwdCnt,
    };
  }

  /**
   * Writes bytes of the owner's own to the local fd, ahead of any stream
   * data: the `OK <port>\n` a CONNECT client reads before its stream. Such a
   * line always fits an empty socket buffer; if it does not, the local end is
   * unusable and the connection is reset.
   */
  writeLocal(data: Buffer): void {
    try {
      if (writeFd(this.fd, data) !== data.length)
        this.reset('local-error', 'local end would not take the reply');
    } catch (err) {
      this.localFailure(err);
    }
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
    this.watcher?.want(false, false);
    this.owner.rxPending(this);
  }

  /**
   * Kill-queue callback. Timers are not cancelled when the wait ends (the
   * kill queue is a plain queue, as Firecracker's), so each call re-checks
   * the deadline this connection itself holds.
   */
  onTimer(now = Date.now()): void {
    if (this.state === 'local-init' && now >= this.requestDeadline) {
      this.reset('timeout', 'no RESPONSE within 2 s');
    } else if (this.drainDeadline !== 0 && !this.txbuf.isEmpty && now >= this.drainDeadline) {
      this.reset('timeout', `shutdown not drained within 2 s (${this.txbuf.length} bytes left)`);
    } else if (this.closeDeadline !== 0 && now >= this.closeDeadline) {
      this.reset('done', 'peer did not reset within 2 s of our SHUTDOWN');
    }
  }

  /** Closes without telling the peer (the owner is going away or the peer already forgot us). */
  close(reason: CloseReason = 'shutdown'): void {
    this.finish(reason);
  }

  private localFailure(err: unknown): void {
    const code = err instanceof SysError ? err.code : String(err);
    this.reset('local-error', code);
  }

  private maybeFinish(): void {
    if (this.state !== 'established') return;
    if (this.peerShutSend && this.txbuf.isEmpty && this.isSocket && !this.localWriteShut && this.canWrite) {
      // Pass the peer's end of stream on to the local reader.
      this.localWriteShut = true;
      try {
        shutdownFd(this.fd, SHUT_WR);
      } catch {
        // The local peer is gone already: nothing to tell it.
      }
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
    // A FIFO is exempt: its slow reader is backpressure (containerd, or `ctr attach` coming
    // back to a keeper-held FIFO), never a dead peer; a dead reader surfaces as EPIPE instead.
    if (this.peerShutSend && !this.txbuf.isEmpty && this.drainDeadline === 0 && !this.isFifo) {
      this.drainDeadline = Date.now() + SHUTDOWN_DRAIN_TIMEOUT_MS;
      this.owner.armTimer(this, SHUTDOWN_DRAIN_TIMEOUT_MS);
    }
  }

  /**
   * Nothing more will pass in either direction on our side: we read EOF, and
   * either the local socket was closed outright or the peer will send nothing
   * more and all it sent is delivered.
   */
  private finishedLocally(): boolean {
    // A write-only local fd (a stdout FIFO) never sends: it is "at EOF" from the start.
    const noMoreToSend = this.localEof || !this.canRead;
    return noMoreToSend && (this.localClosedBoth || (this.peerShutSend && this.txbuf.isEmpty));
  }

  private finish(reason: CloseReason, detail?: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.pending = 0;
    this.watcher?.close();
    this.watcher = null;
    closeQuietly(this.fd);
    closeQuietly(this.keeperFd);
    this.fd = -1;
    this.keeperFd = -1;
    this.owner.closed(this, reason, detail);
  }

  private schedule(bit: number): void {
    if (this.state === 'closed') return;
    const was = this.pending;
    this.pending |= bit;
    if (was === 0) this.owner.rxPending(this);
  }
}

export function connKey(localPort: number, peerPort: number): string {
  return `${localPort}:${peerPort}`;
}
