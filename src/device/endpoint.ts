/**
 * VsockEndpoint: one side of a virtio-vsock link and its connection table,
 * the core of Firecracker's `unix/muxer.rs` without the host-specific parts.
 *
 * The device (host side, CID 2) and the loopback guest stack (guest CID)
 * each own one. The endpoint routes every packet from the peer to its
 * connection by (local port, peer port); answers packets for unknown
 * connections with RST (never an RST for an RST); hands a REQUEST for a new
 * connection to its owner (`onPeerRequest`), which decides what the local
 * end is; caps the table at `maxConnections`; and serves packets for the
 * peer from its RX queue, one connection per turn.
 *
 * The endpoint owns readiness and time for its connections: it starts each
 * local end's readiness reports and routes them to the connection's
 * `onReady`, runs the kill queue for their deadlines, and gives them its
 * clock. It does no I/O itself beyond what its connections' ends do. Its
 * credit policy (what `buf_alloc` every connection advertises and when it
 * sends CREDIT_UPDATE) is a setting, the same for all its connections.
 *
 * Batches: a transport that hands over several peer packets at once (a run
 * of a guest's TX queue) brackets them with `beginBatch`/`endBatch`; RW
 * payloads in between stay views of the transport's buffers and each
 * connection writes its share with one writev at `endBatch`, before the
 * transport gives the buffers back. Outside a batch every payload is
 * written during `handlePacket`. The endpoint counts what passes
 * (counters.ts).
 */
import { makeReplyHeader, VSOCK_TYPE_STREAM, type VsockHeader, VsockOp } from '../protocol/vsock-packet.js';
import type { Logger } from '../util/log.js';
import { LogLimiter } from '../util/log-limiter.js';
import { type Clock, systemClock } from './clock.js';
import { countPacket, type EndpointCounters, newEndpointCounters } from './counters.js';
import { VsockConnection } from './csm/connection.js';
import { type CreditPolicy, checkCreditPolicy } from './csm/credit.js';
import { type CloseReason, type ConnectionOwner, type ConnectionParams, connKey } from './csm/types.js';
import { DEVICE_CREDIT, MAX_CONNECTIONS } from './defaults.js';
import { KillQueue } from './killq.js';
import { RxQueue } from './rxq.js';

/** What the endpoint's owner says a connection's local end is. */
export type LocalEndParams = Pick<ConnectionParams, 'localPort' | 'peerPort' | 'end' | 'keep'>;

export interface EndpointHooks {
  /**
   * The peer asks for a connection to our `hdr.dstPort`. Return its local
   * end (the endpoint owns it from then on and builds the connection), or a
   * string saying why it is refused (the endpoint answers RST).
   */
  onPeerRequest(hdr: VsockHeader): LocalEndParams | string;
  onEstablished?(conn: VsockConnection): void;
  onClosed?(conn: VsockConnection, reason: CloseReason, detail?: string): void;
}

export interface EndpointOptions {
  /** Table size (default MAX_CONNECTIONS, Firecracker's). */
  maxConnections?: number;
  /** What every connection advertises (default DEVICE_CREDIT). */
  credit?: CreditPolicy;
  clock?: Clock;
}

export class TableFullError extends Error {
  constructor(max: number) {
    super(`connection table full (${max} connections)`);
    this.name = 'TableFullError';
  }
}

export class VsockEndpoint implements ConnectionOwner {
  private readonly conns = new Map<string, VsockConnection>();
  private readonly localPorts = new Map<number, number>(); // port → connections using it
  private readonly rxq = new RxQueue<VsockConnection>();
  private readonly killq: KillQueue;
  private readonly clock: Clock;
  readonly maxConnections: number;
  readonly credit: CreditPolicy;
  readonly counters: EndpointCounters = newEndpointCounters();
  /** Set by the transport: called when packets for the peer become due. */
  onRxPending: () => void = () => {};
  /** Connections with payloads staged in the open batch (null: no batch open). */
  private batch: Set<VsockConnection> | null = null;
  private readonly one: Buffer[] = [];
  private readonly oneOut: VsockHeader[] = [];
  private readonly refusedLog: LogLimiter;

  constructor(
    readonly cid: number,
    readonly peerCid: number,
    private readonly hooks: EndpointHooks,
    private readonly log: Logger,
    opts: EndpointOptions = {},
  ) {
    this.maxConnections = opts.maxConnections ?? MAX_CONNECTIONS;
    this.credit = checkCreditPolicy(opts.credit ?? DEVICE_CREDIT);
    this.clock = opts.clock ?? systemClock;
    this.killq = new KillQueue(this.clock);
    // A guest that keeps asking while the table is full must not flood the log (log-limiter.ts).
    this.refusedLog = new LogLimiter((m) => this.log.warn(m), { now: () => this.clock.now() });
  }

  get size(): number {
    return this.conns.size;
  }

  get isFull(): boolean {
    return this.conns.size >= this.maxConnections;
  }

  portInUse(port: number): boolean {
    return this.localPorts.has(port);
  }

  connections(): IterableIterator<VsockConnection> {
    return this.conns.values();
  }

  /**
   * Opens a connection we initiate (REQUEST to the peer). Throws
   * TableFullError, or the end's error when it cannot be watched; then the
   * caller still owns the end.
   */
  connect(params: LocalEndParams & Pick<ConnectionParams, 'peerBufAlloc' | 'peerFwdCnt'>): VsockConnection {
    return this.add({ ...params, localCid: this.cid, peerCid: this.peerCid, initiator: 'local' });
  }

  private add(params: ConnectionParams): VsockConnection {
    if (this.isFull) throw new TableFullError(this.maxConnections);
    const key = connKey(params.localPort, params.peerPort);
    if (this.conns.has(key)) throw new Error(`connection ${key} already exists`);
    // Readiness first: an end epoll cannot watch is refused before anything is registered.
    let conn: VsockConnection | null = null;
    params.end.watch((readable, writable) => conn?.onReady(readable, writable));
    // Registered before construction: the constructor may already ask for an RX turn.
    conn = new VsockConnection({ credit: this.credit, ...params }, this);
    this.conns.set(key, conn);
    this.counters.connectionsOpened++;
    this.localPorts.set(params.localPort, (this.localPorts.get(params.localPort) ?? 0) + 1);
    if (conn.hasPendingRx()) this.rxPending(conn);
    return conn;
  }

  /** The connection table, one line per connection, for operators. */
  dump(): string[] {
    return [...this.conns.values()].map((c) => c.describe());
  }

  // ─── ConnectionOwner ───────────────────────────────────────────────────

  rxPending(conn: VsockConnection): void {
    if (!this.conns.has(conn.key)) return;
    const wasEmpty = this.rxq.isEmpty;
    this.rxq.push(conn);
    if (wasEmpty) this.onRxPending();
  }

  deferWrites(conn: VsockConnection): boolean {
    if (!this.batch) return false;
    this.batch.add(conn);
    return true;
  }

  established(conn: VsockConnection): void {
    this.hooks.onEstablished?.(conn);
  }

  closed(conn: VsockConnection, reason: CloseReason, detail?: string): void {
    if (this.conns.get(conn.key) !== conn) return;
    this.conns.delete(conn.key);
    this.counters.connectionsClosed++;
    this.batch?.delete(conn);
    this.rxq.remove(conn);
    const users = (this.localPorts.get(conn.localPort) ?? 1) - 1;
    if (users <= 0) this.localPorts.delete(conn.localPort);
    else this.localPorts.set(conn.localPort, users);
    this.hooks.onClosed?.(conn, reason, detail);
  }

  armTimer(conn: VsockConnection, ms: number): void {
    this.killq.arm(conn, ms);
  }

  now(): number {
    return this.clock.now();
  }

  // ─── packets from the peer ─────────────────────────────────────────────

  /** Opens a batch of peer packets: RW payloads are written at `endBatch` (see the module comment). */
  beginBatch(): void {
    this.batch ??= new Set();
  }

  /** Closes the batch: every connection writes what it staged. Afterwards no payload view is referenced. */
  endBatch(): void {
    const staged = this.batch;
    this.batch = null;
    if (staged) for (const conn of staged) conn.flushStaged();
  }

  /**
   * Routes one packet from the peer. `data` is only read during this call,
   * or inside a batch until `endBatch`.
   */
  handlePacket(hdr: VsockHeader, data?: Buffer): void {
    countPacket(this.counters, 'fromPeer', hdr.op, hdr.len);
    if (hdr.dstCid !== this.cid || hdr.srcCid !== this.peerCid) {
      this.log.debug(`dropping packet for cid ${hdr.dstCid} from cid ${hdr.srcCid}`);
      return;
    }
    if (hdr.type !== VSOCK_TYPE_STREAM) {
      this.replyRst(hdr);
      return;
    }
    const conn = this.conns.get(connKey(hdr.dstPort, hdr.srcPort));
    if (conn) {
      conn.handlePacket(hdr, data);
      return;
    }
    if (hdr.op === VsockOp.REQUEST) {
      this.acceptRequest(hdr);
      return;
    }
    if (hdr.op !== VsockOp.RST) this.replyRst(hdr);
  }

  private acceptRequest(hdr: VsockHeader): void {
    if (this.isFull) {
      this.refusedLog.log(`refusing connection from port ${hdr.srcPort} to ${hdr.dstPort}: table full`);
      this.replyRst(hdr);
      return;
    }
    const local = this.hooks.onPeerRequest(hdr);
    if (typeof local === 'string') {
      this.log.debug(`refusing connection from port ${hdr.srcPort} to ${hdr.dstPort}: ${local}`);
      this.replyRst(hdr);
      return;
    }
    try {
      this.add({
        ...local,
        localCid: this.cid,
        peerCid: this.peerCid,
        initiator: 'peer',
        peerBufAlloc: hdr.bufAlloc,
        peerFwdCnt: hdr.fwdCnt,
      });
    } catch (err) {
      local.end.close();
      this.refusedLog.log(`refusing connection to ${hdr.dstPort}: ${(err as Error).message}`);
      this.replyRst(hdr);
    }
  }

  private replyRst(hdr: VsockHeader): void {
    const wasEmpty = this.rxq.isEmpty;
    const queued = this.rxq.pushControl(
      makeReplyHeader(hdr, VsockOp.RST, { bufAlloc: this.credit.bufAlloc }),
    );
    if (queued && wasEmpty) this.onRxPending();
  }

  // ─── packets for the peer ──────────────────────────────────────────────

  hasPendingRx(): boolean {
    return !this.rxq.isEmpty;
  }

  /**
   * The next packets for the peer into `out[0, n)`, returning `n`: one
   * connection's turn, RW payloads read into `bufs[0, count)` (one packet
   * per buffer used). 0 when nothing is due.
   */
  nextPackets(bufs: readonly Buffer[], count: number, out: VsockHeader[]): number {
    const n = this.rxq.next(bufs, count, out);
    for (let i = 0; i < n; i++) countPacket(this.counters, 'toPeer', out[i]!.op, out[i]!.len);
    return n;
  }

  /** The next packet for the peer (RW payload read into `buf`), or null. */
  nextPacket(buf: Buffer): VsockHeader | null {
    this.one[0] = buf;
    return this.nextPackets(this.one, 1, this.oneOut) > 0 ? this.oneOut[0]! : null;
  }

  /** The peer went away (power-off, reset, transport lost): every connection is closed; we keep serving. */
  guestGone(reason: string): void {
    const n = this.conns.size;
    this.closeAll('shutdown');
    if (n > 0) this.log.info(`peer gone (${reason}): closed ${n} connection(s)`);
  }

  /** Closes every connection without telling the peer (it is gone, or we are). */
  closeAll(reason: CloseReason = 'shutdown'): void {
    for (const conn of [...this.conns.values()]) conn.close(reason);
    this.rxq.clear();
    this.killq.clear();
  }
}
