/**
 * virtio-vsock credit for one connection (virtio 1.2, 5.10.6.3), both ways.
 *
 * Toward the peer: we may have at most `peer_buf_alloc - (tx_cnt -
 * peer_fwd_cnt)` bytes in flight; the peer's figures arrive in every header
 * it sends. From the peer: we advertise `bufAlloc` and `fwd_cnt`, the bytes
 * the local end has accepted (not merely received), so a slow local reader
 * slows the peer down instead of growing memory. An unsolicited
 * CREDIT_UPDATE is due when the free space the peer last saw drops under
 * the policy's threshold and there is news (fwd_cnt moved since we last
 * told it). Counters are u32 and wrap.
 *
 * The policy is per endpoint (the device and the loopback guest advertise
 * different buffers): `CreditPolicy`, defaults in defaults.ts.
 */

export interface CreditPolicy {
  /** Our receive buffer, advertised as `buf_alloc` (and the capacity of the connection's TxBuf). */
  readonly bufAlloc: number;
  /** Send CREDIT_UPDATE unasked once the free space the peer last saw drops under this. */
  readonly updateThreshold: number;
}

const U32 = 0x1_0000_0000;
export const wrapU32 = (n: number): number => ((n % U32) + U32) % U32;

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

  /** Whether the peer should hear our fwd_cnt now, unasked. */
  updateDue(): boolean {
    const peerSeesFree = this.policy.bufAlloc - wrapU32(this.rxCnt - this.lastFwdCntSent);
    return peerSeesFree < this.policy.updateThreshold && this.fwdCnt !== this.lastFwdCntSent;
  }

  /** The fwd_cnt to put in an outgoing header (the peer knows it from then on). */
  advertise(): number {
    this.lastFwdCntSent = this.fwdCnt;
    return this.fwdCnt;
  }
}
