// A harness that plays the PEER of one VsockConnection: the local end is a
// real socketpair end (or FIFO) owned by the connection, the test holds the
// other end, and a recording ConnectionOwner stands in for the muxer (the
// owner is an interface of ours, not the kernel). Packets are fed with
// `send(op, ...)` and pulled with `pull()`; waits are event-driven: `waitRx()`
// resolves on the owner's rxPending call (or at once if a packet is already
// due), with a timeout.

import { closeQuietly, FdWatcher, makePipe, socketPair, writeFd } from '../../../native-bindings/index.js';
import {
  type CloseReason,
  type ConnectionOwner,
  type ConnectionParams,
  VsockConnection,
} from '../../../src/device/csm/connection.js';
import { VSOCK_TYPE_STREAM, type VsockHeader, VsockOp } from '../../../src/protocol/vsock-packet.js';
import { withTimeout } from '../../native-bindings/helpers.js';

export const HOST = 2;
export const GUEST = 3;
export const LOCAL_PORT = 2 ** 30 + 5;
export const PEER_PORT = 1027;

export interface Pulled {
  hdr: VsockHeader;
  data?: Buffer;
}

/** Records every owner call; `waitFor(pred)` resolves once `pred()` holds after some call. */
export class RecordingOwner implements ConnectionOwner {
  rxCalls = 0;
  establishedCalls = 0;
  closedCalls: { reason: CloseReason; detail: string | undefined }[] = [];
  timers: number[] = [];
  private waiters: { pred: () => boolean; resolve: () => void }[] = [];

  rxPending(_conn: VsockConnection): void {
    this.rxCalls++;
    this.notify();
  }
  established(_conn: VsockConnection): void {
    this.establishedCalls++;
    this.notify();
  }
  closed(_conn: VsockConnection, reason: CloseReason, detail?: string): void {
    this.closedCalls.push({ reason, detail });
    this.notify();
  }
  armTimer(_conn: VsockConnection, ms: number): void {
    this.timers.push(ms);
    this.notify();
  }

  private notify(): void {
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred()) return true;
      w.resolve();
      return false;
    });
  }

  waitFor(pred: () => boolean, ms: number, label: string): Promise<void> {
    if (pred()) return Promise.resolve();
    return withTimeout(new Promise<void>((resolve) => this.waiters.push({ pred, resolve })), ms, label);
  }
}

export interface HarnessOptions {
  initiator?: 'local' | 'peer';
  keep?: boolean;
  preRead?: Buffer;
  /** The peer's buf_alloc (in its REQUEST for peer-init, in every packet the test sends). */
  peerBufAlloc?: number;
  /** An fd to use as the local end instead of a fresh socketpair end. */
  fd?: number;
  /** The connection's own buf_alloc (default: the device's BUF_ALLOC). */
  bufAlloc?: number;
}

export class Harness {
  readonly owner = new RecordingOwner();
  readonly conn: VsockConnection;
  /** The connection's fd (owned by the connection). */
  readonly local: number;
  /** The test's end of the socketpair (-1 when `fd` was given). */
  readonly remote: number;
  /** Credit figures the test (as the peer) advertises in its packets. */
  peerBufAlloc: number;
  peerFwd = 0;
  private readonly buf = Buffer.alloc(64 * 1024);

  constructor(opts: HarnessOptions = {}) {
    if (opts.fd !== undefined) {
      this.local = opts.fd;
      this.remote = -1;
    } else {
      [this.local, this.remote] = socketPair(true);
    }
    this.peerBufAlloc = opts.peerBufAlloc ?? 64 * 1024;
    const params: ConnectionParams = {
      localCid: HOST,
      peerCid: GUEST,
      localPort: LOCAL_PORT,
      peerPort: PEER_PORT,
      fd: this.local,
      initiator: opts.initiator ?? 'local',
    };
    if (opts.keep !== undefined) params.keep = opts.keep;
    if (opts.bufAlloc !== undefined) params.bufAlloc = opts.bufAlloc;
    if (opts.preRead) params.preRead = opts.preRead;
    if (params.initiator === 'peer') {
      params.peerBufAlloc = this.peerBufAlloc;
      params.peerFwdCnt = 0;
    }
    try {
      this.conn = new VsockConnection(params, this.owner);
    } catch (err) {
      if (opts.fd === undefined) {
        closeQuietly(this.local);
        closeQuietly(this.remote);
      }
      throw err;
    }
  }

  /** A header from the peer (guest) to this connection. */
  hdr(op: VsockOp, fields: Partial<VsockHeader> = {}): VsockHeader {
    return {
      srcCid: GUEST,
      dstCid: HOST,
      srcPort: PEER_PORT,
      dstPort: LOCAL_PORT,
      len: 0,
      type: VSOCK_TYPE_STREAM,
      op,
      flags: 0,
      bufAlloc: this.peerBufAlloc,
      fwdCnt: this.peerFwd,
      ...fields,
    };
  }

  send(op: VsockOp, data?: Buffer, fields: Partial<VsockHeader> = {}): void {
    this.conn.handlePacket(this.hdr(op, { len: data?.length ?? 0, ...fields }), data);
  }

  /** The next packet for the peer (RW payload copied out), or null. */
  pull(bufLen = this.buf.length): Pulled | null {
    const b = bufLen === this.buf.length ? this.buf : Buffer.alloc(bufLen);
    const hdr = this.conn.nextPacket(b);
    if (!hdr) return null;
    if (hdr.op === VsockOp.RW) return { hdr, data: Buffer.from(b.subarray(0, hdr.len)) };
    return { hdr };
  }

  /** Pulls until nothing is due. */
  pullAll(): Pulled[] {
    const out: Pulled[] = [];
    for (let i = 0; i < 10_000; i++) {
      const p = this.pull();
      if (!p) return out;
      out.push(p);
    }
    throw new Error('nextPacket never ran dry');
  }

  /** Resolves when the connection has a packet due (event-driven: the owner's rxPending call). */
  waitRx(ms = 3000): Promise<void> {
    return this.owner.waitFor(() => this.conn.hasPendingRx(), ms, 'rxPending');
  }

  waitClosed(ms = 3000): Promise<void> {
    return this.owner.waitFor(() => this.owner.closedCalls.length > 0, ms, 'closed');
  }

  /** Pulls (waiting for rxPending between pulls) until `pred` says the collected packets suffice. */
  async collect(pred: (got: Pulled[]) => boolean, ms = 5000): Promise<Pulled[]> {
    const got: Pulled[] = [];
    const deadline = Date.now() + ms;
    while (!pred(got)) {
      await this.waitRx(Math.max(1, deadline - Date.now()));
      let p = this.pull();
      while (p) {
        got.push(p);
        if (pred(got)) return got;
        p = this.pull();
      }
    }
    return got;
  }

  /** Pull REQUEST (local-init) and answer RESPONSE, or pull RESPONSE (peer-init). */
  establish(): void {
    if (this.conn.state === 'local-init') {
      const req = this.pull();
      if (req?.hdr.op !== VsockOp.REQUEST) throw new Error(`expected REQUEST, got ${req?.hdr.op}`);
      this.send(VsockOp.RESPONSE);
    } else {
      const resp = this.pull();
      if (resp?.hdr.op !== VsockOp.RESPONSE) throw new Error(`expected RESPONSE, got ${resp?.hdr.op}`);
    }
    if (this.conn.state !== 'established') throw new Error(`state ${this.conn.state}`);
  }

  dispose(): void {
    this.conn.close(); // idempotent; closes the local fd only if still open
    if (this.remote >= 0) closeQuietly(this.remote);
  }
}

/** Writes into `fd` until it would block; returns what went in (so the test can read it back). */
export function fill(fd: number): Buffer {
  const chunk = Buffer.alloc(512, 0x23);
  const parts: Buffer[] = [];
  for (let i = 0; i < 100_000; i++) {
    const n = writeFd(fd, chunk);
    if (n < 0) return Buffer.concat(parts);
    parts.push(chunk.subarray(0, n));
  }
  throw new Error(`fd ${fd} never filled up`);
}

/**
 * Resolves after the event loop has polled for I/O at least `turns` times
 * since the call: a pipe made readable on purpose is watched, level-triggered,
 * and each report is one poll phase. Used to show that something did NOT
 * happen after an event that would have caused it.
 */
export async function ioTurns(turns = 2, ms = 2000): Promise<void> {
  const [r, w] = makePipe(true);
  writeFd(w, Buffer.from('t'));
  let seen = 0;
  let watcher: FdWatcher | null = null;
  try {
    await withTimeout(
      new Promise<void>((resolve) => {
        watcher = new FdWatcher(r, () => {
          if (++seen >= turns) resolve();
        });
        watcher.want(true, false);
      }),
      ms,
      'event-loop turns',
    );
  } finally {
    (watcher as FdWatcher | null)?.close();
    closeQuietly(r);
    closeQuietly(w);
  }
}
