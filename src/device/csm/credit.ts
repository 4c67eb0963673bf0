/**
 * virtio-vsock credit for one connection (virtio 1.2, 5.10.6.3), both ways.
 *
 * Toward the peer: we may have at most `peer_buf_alloc - (tx_cnt -
 * peer_fwd_cnt)` bytes in flight; the peer's figures arrive in every header
 * it sends. From the peer: we advertise `bufAlloc` and `fwd_cnt`, the bytes
 * the local end has accepted (not merely received), so a slow local reader
 * slows the peer down instead of growing memory: what we hold for the peer
 * (`rx_cnt - fwd_cnt`) never exceeds `bufAlloc`, and a peer that sends more
 * breaks the protocol (`overrun`). Counters are u32 and wrap.
 *
 * When to tell the peer, unasked (CREDIT_UPDATE): every header we send
 * carries our fwd_cnt, but a peer that only sends hears nothing back, so an
 * update is due when there is news (fwd_cnt moved since we last told it)
 * and either `updateAfter` bytes were forwarded since then, or the free
 * space the peer last saw has dropped under `lowWater`. The first rule keeps
 * a streaming sender from ever draining its window while the local reader
 * keeps up; the second wakes a sender that is waiting on a nearly full
 * window as soon as space frees up.
 *
 * The policy is a setting of the endpoint (every connection of a device or
 * of the loopback guest advertises the same); the named policies and their
 * reasons are in defaults.ts.
 */

export interface CreditPolicy {
  /** Our receive buffer, advertised as `buf_alloc` (and the most a connection holds for the peer). */
  readonly bufAlloc: number;
  /** Send CREDIT_UPDATE unasked once this many bytes were forwarded since the peer last heard our fwd_cnt. */
  readonly updateAfter: number;
  /** ... or once the free space the peer last saw drops under this (and fwd_cnt moved). */
  readonly lowWater: number;
}

const U32 = 0x1_0000_0000;
export const wrapU32 = (n: number): number => ((n % U32) + U32) % U32;

/** Checks a policy's numbers; throws a RangeError naming the bad one. */
export function checkCreditPolicy(p: CreditPolicy): CreditPolicy {
  const ok = (n: number, max: number) => Number.isSafeInteger(n) && n >= 0 && n <= max;
  if (!ok(p.bufAlloc, U32 - 1) || p.bufAlloc < 1) throw new RangeError(`bad buf_alloc ${p.bufAlloc}`);
  if (!ok(p.updateAfter, p.bufAlloc) || p.updateAfter < 1)
    throw new RangeError(`credit update after ${p.updateAfter} bytes: must be 1..buf_alloc (${p.bufAlloc})`);
  if (!ok(p.lowWater, p.bufAlloc))
    throw new RangeError(`credit low water ${p.lowWater}: must be 0..buf_alloc (${p.bufAlloc})`);
  return p;
}

export class Credit {
  /** Bytes from the peer the local end has accepted (our `fwd_cnt`). */
  fwdCnt = 0;
  /** `fwd_cnt` as last told to the peer. */
  private lastFwdCntSent = 0;
  /** Bytes received from the peer (its `tx_cnt`, as we count it). */
  rxCnt = 0;
  /** Bytes sent to the peer. */
  txCnt = 0;
  peerBufAlloc: number;
  peerFwdCnt: number;
  /** A CREDIT_REQUEST went out and no credit came back since. */
  private requested = false;

  constructor(
    readonly policy: CreditPolicy,
    peerBufAlloc = 0,
    peerFwdCnt = 0,
  ) {
    this.peerBufAlloc = peerBufAlloc;
    this.peerFwdCnt = peerFwdCnt;
  }

  get bufAlloc(): number {
    return this.policy.bufAlloc;
  }

  /** The peer's free receive space, as far as we know. */
  get peerCredit(): number {
    return Math.max(0, this.peerBufAlloc - wrapU32(this.txCnt - this.peerFwdCnt));
  }

  /** Bytes received from the peer and not yet accepted by the local end. */
  get held(): number {
    return wrapU32(this.rxCnt - this.fwdCnt);
  }

  /** The peer sent more than we ever allowed it to (a protocol error). */
  get overrun(): boolean {
    return this.held > this.policy.bufAlloc;
  }

  /** fwd_cnt as last advertised (for operators). */
  get fwdCntSent(): number {
    return this.lastFwdCntSent;
  }

  /** The peer's figures from a header it sent. */
  peerSays(bufAlloc: number, fwdCnt: number): void {
    this.peerBufAlloc = bufAlloc;
    this.peerFwdCnt = fwdCnt;
    if (this.peerCredit > 0) this.requested = false;
  }

  /** With data to send and no credit left: true once (send CREDIT_REQUEST), until credit comes back. */
  shouldRequest(): boolean {
    if (this.peerCredit > 0 || this.requested) return false;
    this.requested = true;
    return true;
  }

  received(n: number): void {
    this.rxCnt = wrapU32(this.rxCnt + n);
  }

  delivered(n: number): void {
    this.fwdCnt = wrapU32(this.fwdCnt + n);
  }

  sent(n: number): void {
    this.txCnt = wrapU32(this.txCnt + n);
  }

  /** Whether the peer should hear our fwd_cnt now, unasked (see the module comment). */
  updateDue(): boolean {
    const news = wrapU32(this.fwdCnt - this.lastFwdCntSent);
    if (news === 0) return false;
    if (news >= this.policy.updateAfter) return true;
    const peerSeesFree = this.policy.bufAlloc - wrapU32(this.rxCnt - this.lastFwdCntSent);
    return peerSeesFree < this.policy.lowWater;
  }

  /** The fwd_cnt to put in an outgoing header (the peer knows it from then on). */
  advertise(): number {
    this.lastFwdCntSent = this.fwdCnt;
    return this.fwdCnt;
  }
}
