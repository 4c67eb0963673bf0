/**
 * What a connection is, owes and how it ends: the half of VsockConnection
 * (connection.ts, which has the state diagram and the data paths) that holds
 * its identity and protocol state (states, shutdown flags, the packets owed
 * to the peer as bits, the deadlines, credit, the bytes on their way to the
 * local end) and the rules for ending: when to pass the peer's end of stream
 * on, who sends RST (as Linux: the side that received the full SHUTDOWN,
 * once it delivered everything), the waits and their deadlines (an
 * unanswered REQUEST, a shutdown that has to drain, the peer's RST after our
 * full SHUTDOWN, credit that does not come back), and closing.
 */
import { DEVICE_CREDIT, REQUEST_TIMEOUT_MS, SHUTDOWN_DRAIN_TIMEOUT_MS } from '../defaults.js';
import type { VsockConnection } from './connection.js';
import { Credit } from './credit.js';
import type { LocalEnd } from './local-end.js';
import { LocalWriter } from './local-writer.js';
import {
  type CloseReason,
  type ConnectionOwner,
  type ConnectionParams,
  type ConnState,
  connKey,
  PendingRx,
} from './types.js';

const { RST: P_RST, REQUEST: P_REQUEST, RESPONSE: P_RESPONSE, RW: P_RW, SHUTDOWN: P_SHUTDOWN } = PendingRx;
const { CREDIT_REQUEST: P_CREDIT_REQUEST } = PendingRx;

export abstract class ConnectionLifecycle {
  readonly localCid: number;
  readonly peerCid: number;
  readonly localPort: number;
  readonly peerPort: number;
  readonly keep: boolean;
  state: ConnState;

  protected readonly end: LocalEnd;
  /** Packets owed to the peer (PendingRx bits). */
  protected pending = 0;
  protected readonly credit: Credit;
  protected readonly writer: LocalWriter;

  protected localEof = false; // we sent SHUTDOWN(SEND)
  protected localClosedBoth = false; // the local end was closed outright (at EOF)
  protected sentShutdownBoth = false; // we sent SHUTDOWN(RCV|SEND): waiting for the peer's RST
  protected peerShutSend = false;
  protected peerShutRcv = false;
  protected localWriteShut = false; // the local end's write side was shut
  protected readParked = false; // keep: local hang-up seen, reading stopped
  /** A read is due (RW pending) and the end reported readable again meanwhile: reports off until it is read dry. */
  protected readIdle = false;
  /** The interest last asked of the end. */
  protected wantRead = false;
  protected wantWrite = false;
  /**
   * When each wait this connection is in ends (0: not waiting): for RESPONSE,
   * for the drain, for the peer's RST, and for credit (out of it with data
   * to read: ask for it then, if the peer has not sent any on its own).
   */
  protected readonly deadline = { request: 0, drain: 0, close: 0, credit: 0 };
  private resetReason: CloseReason = 'done';
  private resetDetail: string | undefined;

  constructor(
    params: ConnectionParams,
    protected readonly owner: ConnectionOwner,
  ) {
    this.localCid = params.localCid;
    this.peerCid = params.peerCid;
    this.localPort = params.localPort;
    this.peerPort = params.peerPort;
    this.keep = params.keep ?? false;
    this.end = params.end;
    this.credit = new Credit(params.credit ?? DEVICE_CREDIT, params.peerBufAlloc, params.peerFwdCnt);
    this.writer = new LocalWriter(this.credit.bufAlloc);
    if (params.initiator === 'local') {
      this.state = 'local-init';
      this.schedule(P_REQUEST);
      this.startWait('request', REQUEST_TIMEOUT_MS);
    } else {
      this.state = 'peer-init';
      this.schedule(P_RESPONSE);
    }
  }

  /** This connection as its owner knows it. */
  protected abstract self(): VsockConnection;

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

  /** Bytes from the peer waiting for the local end (staged in this batch, or held because it was full). */
  get buffered(): number {
    return this.writer.length;
  }

  /** Memory the connection holds for its peer's bytes (its TxBuf ring, once one was needed). */
  get bufferMemory(): number {
    return this.writer.held.allocated;
  }

  hasPendingRx(): boolean {
    return this.pending !== 0;
  }

  /** Sends RST to the peer (next pull) and closes once it is out. */
  reset(reason: CloseReason, detail?: string): void {
    if (this.state === 'closed' || this.pending & P_RST) return;
    this.resetReason = reason;
    this.resetDetail = detail;
    this.pending = P_RST;
    this.readIdle = false;
    this.want(false, false);
    this.owner.rxPending(this.self());
  }

  /** The RST owed to the peer was built: the connection ends with the reason given to `reset`. */
  protected resetSent(): void {
    this.finish(this.resetReason, this.resetDetail);
  }

  /**
   * Kill-queue callback. Timers are not cancelled when the wait ends (the
   * kill queue is a plain queue, as Firecracker's), so each call re-checks
   * the deadline this connection itself holds.
   */
  onTimer(now = this.owner.now()): void {
    const { request, drain, close, credit } = this.deadline;
    if (credit !== 0 && now >= credit) {
      // Every peer we know (Linux, this stack, Firecracker) sends CREDIT_UPDATE on its own once its
      // reader makes room; asking at once on every empty window only costs the guest a packet and an
      // answer. Asking late is the fallback for a peer that does not, or for an update that was lost.
      this.deadline.credit = 0;
      if (this.canReadLocal() && this.credit.shouldRequest()) this.schedule(P_CREDIT_REQUEST);
    }
    if (this.state === 'local-init' && now >= request) {
      this.reset('timeout', 'no RESPONSE within 2 s');
    } else if (drain !== 0 && !this.writer.isEmpty && now >= drain) {
      this.reset('timeout', `shutdown not drained within 2 s (${this.writer.length} bytes left)`);
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

  /** Asks the end for `read`/`write` readiness reports (counted when it changes: an epoll_ctl for the loop). */
  protected want(read: boolean, write: boolean): void {
    if (read === this.wantRead && write === this.wantWrite) return;
    this.wantRead = read;
    this.wantWrite = write;
    this.owner.counters.interestChanges++;
    this.end.want(read, write);
  }

  /** Reading the local end can make progress, credit aside. */
  protected canReadLocal(): boolean {
    return (
      this.state === 'established' &&
      this.end.canRead &&
      !this.localEof &&
      !this.peerShutRcv &&
      !this.readParked
    );
  }

  /** No read is due any more (and so the end is not idle behind one). */
  protected stopReading(): void {
    this.pending &= ~P_RW;
    this.readIdle = false;
  }

  protected maybeFinish(): void {
    if (this.state !== 'established') return;
    const delivered = this.writer.isEmpty;
    if (this.peerShutSend && delivered && !this.localWriteShut && this.end.canWrite) {
      // Pass the peer's end of stream on to the local reader.
      this.localWriteShut = true;
      this.end.shutdownWrite();
    }
    // Who sends RST, as in Linux: the side that *received* a full SHUTDOWN, once it
    // has delivered everything. The side that finished first sends SHUTDOWN(RCV|SEND)
    // and waits for that RST, so the peer never drops bytes it still had to deliver.
    if (this.peerShutSend && this.peerShutRcv && delivered && (this.pending & P_SHUTDOWN) === 0) {
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
    if (drainable && this.peerShutSend && !delivered) this.startWait('drain', SHUTDOWN_DRAIN_TIMEOUT_MS);
  }

  protected startWait(wait: keyof ConnectionLifecycle['deadline'], ms: number): void {
    this.deadline[wait] = this.owner.now() + ms;
    this.owner.armTimer(this.self(), ms);
  }

  /**
   * Nothing more will pass in either direction on our side: we read EOF, and
   * either the local end was closed outright or the peer will send nothing
   * more and all it sent is delivered.
   */
  protected finishedLocally(): boolean {
    // A write-only local end (a stdout FIFO) never sends: it is "at EOF" from the start.
    const noMoreToSend = this.localEof || !this.end.canRead;
    return noMoreToSend && (this.localClosedBoth || (this.peerShutSend && this.writer.isEmpty));
  }

  protected finish(reason: CloseReason, detail?: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.pending = 0;
    this.end.close();
    this.writer.held.release(); // its pages go back to the kernel now, not at some later GC
    this.owner.closed(this.self(), reason, detail);
  }

  protected schedule(bit: number): void {
    if (this.state === 'closed') return;
    const was = this.pending;
    this.pending |= bit;
    if (was === 0) this.owner.rxPending(this.self());
  }
}
