// A harness that plays the PEER of one VsockConnection. The local end is
// injected: a FakeEnd (fake-end.ts) for the unit tests, or a real
// socketpair/FIFO end (src/device/fd-end.ts) for the integration tests, where
// the test holds the socketpair's other end. A recording ConnectionOwner
// stands in for the muxer (the owner is an interface of ours, not the
// kernel); its clock is a FakeClock driving a real KillQueue, so timeouts
// happen when the test moves time (`h.clock.advance(2000)`), never by
// sleeping. Packets are fed with `send(op, ...)` and pulled with `pull()`;
// waits on real fds are event-driven: `waitRx()` resolves on the owner's
// rxPending call (or at once if a packet is already due), with a timeout.

import { closeQuietly, socketPair, writeFd } from '../../../native-bindings/index.js';
import { VsockConnection } from '../../../src/device/csm/connection.js';
import type { CreditPolicy } from '../../../src/device/csm/credit.js';
import type { LocalEnd } from '../../../src/device/csm/local-end.js';
import type { CloseReason, ConnectionOwner, ConnectionParams } from '../../../src/device/csm/types.js';
import { FdEnd } from '../../../src/device/fd-end.js';
import { KillQueue } from '../../../src/device/killq.js';
import { VSOCK_TYPE_STREAM, type VsockHeader, VsockOp } from '../../../src/protocol/vsock-packet.js';
import { withTimeout } from '../../native-bindings/helpers.js';
import { FakeClock } from './fake-clock.js';
import { FakeEnd, type FakeEndOptions } from './fake-end.js';

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
  readonly clock = new FakeClock();
  private readonly killq = new KillQueue(this.clock);
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
  armTimer(conn: VsockConnection, ms: number): void {
    this.timers.push(ms);
    this.killq.arm(conn, ms);
    this.notify();
  }
  now(): number {
    return this.clock.now();
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
  /** The peer's buf_alloc (in its REQUEST for peer-init, in every packet the test sends). */
  peerBufAlloc?: number;
  /** The connection's own credit policy (default: the device's). */
  credit?: CreditPolicy;
}

export class Harness<E extends LocalEnd = LocalEnd> {
  readonly owner = new RecordingOwner();
  readonly conn: VsockConnection;
  /** Credit figures the test (as the peer) advertises in its packets. */
  peerBufAlloc: number;
  peerFwd = 0;
  private readonly buf = Buffer.alloc(64 * 1024);

  /** Watches `end` and builds the connection over it, as the endpoint does; if this throws, the caller still owns `end`. */
  constructor(
    readonly end: E,
    opts: HarnessOptions = {},
  ) {
    this.peerBufAlloc = opts.peerBufAlloc ?? 64 * 1024;
    const params: ConnectionParams = {
      localCid: HOST,
      peerCid: GUEST,
      localPort: LOCAL_PORT,
      peerPort: PEER_PORT,
      end,
      initiator: opts.initiator ?? 'local',
    };
    if (opts.keep !== undefined) params.keep = opts.keep;
    if (opts.credit !== undefined) params.credit = opts.credit;
    if (params.initiator === 'peer') {
      params.peerBufAlloc = this.peerBufAlloc;
      params.peerFwdCnt = 0;
    }
    let conn: VsockConnection | null = null;
    end.watch((readable, writable) => conn?.onReady(readable, writable));
    conn = new VsockConnection(params, this.owner);
    this.conn = conn;
  }

  get clock(): FakeClock {
    return this.owner.clock;
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
  establish(): this {
    if (this.conn.state === 'local-init') {
      const req = this.pull();
      if (req?.hdr.op !== VsockOp.REQUEST) throw new Error(`expected REQUEST, got ${req?.hdr.op}`);
      this.send(VsockOp.RESPONSE);
    } else {
      const resp = this.pull();
      if (resp?.hdr.op !== VsockOp.RESPONSE) throw new Error(`expected RESPONSE, got ${resp?.hdr.op}`);
    }
    if (this.conn.state !== 'established') throw new Error(`state ${this.conn.state}`);
    return this;
  }

  dispose(): void {
    this.conn.close(); // idempotent; closes the local end only if still open
  }
}

/** A connection over a FakeEnd (unit tests: no fd at all). */
export function fakeHarness(opts: HarnessOptions & FakeEndOptions = {}): Harness<FakeEnd> {
  return new Harness(new FakeEnd(opts), opts);
}

/** A connection over one end of a real socketpair (integration tests); the test holds `remote`. */
export class SocketHarness extends Harness<FdEnd> {
  /** The connection's fd (owned by the connection). */
  readonly local: number;
  #remote: number;

  constructor(opts: HarnessOptions & { preRead?: Buffer } = {}) {
    const [local, remote] = socketPair(true);
    const end = new FdEnd(local, { preRead: opts.preRead });
    try {
      super(end, opts);
    } catch (err) {
      end.close();
      closeQuietly(remote);
      throw err;
    }
    this.local = local;
    this.#remote = remote;
  }

  /** The test's end of the socketpair (-1 once closed). */
  get remote(): number {
    return this.#remote;
  }

  /** Closes the test's end (the local process going away), once. */
  closeRemote(): void {
    closeQuietly(this.#remote);
    this.#remote = -1;
  }

  override dispose(): void {
    super.dispose();
    this.closeRemote();
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

export const ops = (ps: Pulled[]) => ps.map((p) => p.hdr.op);
export const payload = (ps: Pulled[]) => Buffer.concat(ps.filter((p) => p.data).map((p) => p.data!));
