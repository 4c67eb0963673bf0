/**
 * The virtio-vsock device's two data queues over guest memory: RX (queue 0,
 * host to guest) and TX (queue 1, guest to host). QEMU keeps the event queue
 * (queue 2) for itself.
 *
 * RX: while the backend has packets due and the guest has posted receive
 * chains, take a chain, let the backend write the RW payload straight into
 * the chain's writable bytes after the 44-byte header, write the header in
 * front of it, and give the chain back with the packet's length. The payload
 * goes through no intermediate buffer whenever the bytes from offset 44 of the
 * chain lie in one descriptor: Linux 6.1 posts a 44-byte header descriptor and
 * a 4 KiB buffer descriptor per receive buffer (newer kernels one contiguous
 * buffer), both are that case, so an fd the backend reads lands directly in
 * guest memory. Only a payload area scattered over several descriptors is
 * gathered in a scratch buffer and copied.
 *
 * TX: take each chain the guest made available, decode the header from its
 * readable bytes, hand the payload to the backend as a view into guest memory
 * (copied only when it spans descriptors), return the chain with length 0.
 *
 * Trust: every chain comes from the guest. A chain that breaks the virtqueue
 * rules, a header that does not decode, or a length that does not fit the
 * chain is logged and the chain is returned used (len 0): the packet is
 * dropped, the queue and the process go on. A queue whose indices are broken
 * (`SplitVirtqueue.broken`) is logged once and left alone until QEMU sets it
 * up again.
 *
 * Notifications: processing runs with guest kicks suppressed where the ring
 * allows it, re-enables them before stopping and re-checks for buffers that
 * arrived meanwhile; after a batch of used entries the call eventfd is
 * signalled only when the driver asked for it (`needsNotify`, EVENT_IDX aware).
 * A batch is bounded (`budget`): the caller reschedules when `true` ("more")
 * comes back, so one busy queue cannot starve the event loop.
 */
import {
  decodeHeader,
  encodeHeader,
  VSOCK_HDR_SIZE,
  VSOCK_MAX_PKT_PAYLOAD,
  VsockPacketError,
} from '../../../protocol/vsock-packet.js';
import type { Logger } from '../../../util/log.js';
import type { VsockBackend } from '../transport.js';
import { GuestMemoryError } from './guest-memory.js';
import { type DescriptorChain, type SplitVirtqueue, VirtqueueError } from './virtqueue.js';

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
/** Queues the backend serves (QEMU handles the event queue). */
export const VSOCK_QUEUE_COUNT = 2;
/** Packets per queue per run before yielding to the event loop. */
export const QUEUE_BUDGET = 256;

export interface VsockQueueStats {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  /** Chains dropped as malformed (both queues). */
  dropped: number;
  /** Payloads that had to be copied because they spanned descriptors. */
  copies: number;
}

export class VsockQueues {
  /** Set by the owner once the ring is enabled, kicked and mapped; null otherwise. */
  tx: SplitVirtqueue | null = null;
  #rx: SplitVirtqueue | null = null;
  /**
   * A receive chain taken while the backend had a packet announced but then
   * produced none (e.g. a connection waiting for credit): kept for the next
   * packet instead of being returned empty, which would cost the guest a
   * buffer until it refills.
   */
  #heldRx: DescriptorChain | null = null;
  readonly stats: VsockQueueStats = {
    rxPackets: 0,
    rxBytes: 0,
    txPackets: 0,
    txBytes: 0,
    dropped: 0,
    copies: 0,
  };
  readonly #scratch = Buffer.allocUnsafe(VSOCK_MAX_PKT_PAYLOAD);
  readonly #hdr = Buffer.allocUnsafe(VSOCK_HDR_SIZE);
  readonly #reportedBroken = new Set<SplitVirtqueue>();

  constructor(
    private readonly backend: VsockBackend,
    private readonly log: Logger,
    /** Signals the queue's call eventfd. */
    private readonly notify: (queueIndex: number) => void,
  ) {}

  // ─── RX: host → guest ──────────────────────────────────────────────────

  get rx(): SplitVirtqueue | null {
    return this.#rx;
  }

  /** Replacing the RX ring first returns a held chain to the old one (its memory is still mapped then). */
  set rx(q: SplitVirtqueue | null) {
    if (q === this.#rx) return;
    if (this.#heldRx && this.#rx) {
      try {
        this.#rx.pushUsed(this.#heldRx.head, 0);
      } catch {
        // the old ring is gone with its memory: nothing to give back
      }
    }
    this.#heldRx = null;
    this.#rx = q;
  }

  /** Fills guest receive buffers with due packets. Returns true when the budget ran out with work left. */
  processRx(budget = QUEUE_BUDGET): boolean {
    const q = this.#rx;
    if (!q || q.broken) return false;
    let used = 0;
    let more = false;
    try {
      while (this.backend.hasPendingRx()) {
        if (budget-- <= 0) {
          more = true;
          break;
        }
        const chain = this.#heldRx ?? this.#pop(q, 'rx');
        this.#heldRx = null;
        if (chain === undefined) {
          used++; // a malformed chain was returned
          continue;
        }
        if (chain === null) {
          // No buffers: the guest kicks when it posts more.
          if (q.enableNotification()) continue;
          break;
        }
        const n = this.#fillRx(chain);
        if (n < 0) {
          this.#heldRx = chain; // nothing was due after all
          break;
        }
        q.pushUsed(chain.head, n);
        used++;
      }
    } finally {
      if (used > 0 && q.needsNotify()) this.notify(RX_QUEUE);
    }
    return more;
  }

  /**
   * Writes one packet into `chain`; returns the bytes written (0: the chain is
   * unusable, return it empty; -1: the backend had nothing, keep the chain).
   */
  #fillRx(chain: DescriptorChain): number {
    const segs = chain.writable;
    if (chain.writableLen < VSOCK_HDR_SIZE) {
      this.#drop(`rx chain ${chain.head} of ${chain.writableLen} bytes cannot hold a vsock header`);
      return 0;
    }
    // Where the payload starts: segment `pi`, offset `po`.
    let pi = 0;
    let po = VSOCK_HDR_SIZE;
    while (pi < segs.length && po >= segs[pi]!.length) {
      po -= segs[pi]!.length;
      pi++;
    }
    const room = Math.min(chain.writableLen - VSOCK_HDR_SIZE, VSOCK_MAX_PKT_PAYLOAD);
    let direct: Buffer | null = null;
    if (pi < segs.length) {
      const seg = segs[pi]!;
      const inSeg = Math.min(seg.length - po, VSOCK_MAX_PKT_PAYLOAD);
      // One descriptor holds the payload area (or at least a full page of it): fill it in place.
      if (inSeg === room || inSeg >= 4096) direct = seg.subarray(po, po + inSeg);
    }
    const target = direct ?? this.#scratch.subarray(0, room);
    const hdr = this.backend.nextPacket(target);
    if (!hdr) return -1;
    if (hdr.len > target.length) {
      // A backend bug, not the guest's: never write past the chain.
      this.log.error(
        `backend produced ${hdr.len} payload bytes for a ${target.length}-byte buffer; packet lost`,
      );
      this.stats.dropped++;
      return 0;
    }
    if (segs[0]!.length >= VSOCK_HDR_SIZE) {
      encodeHeader(hdr, segs[0]!, 0);
    } else {
      encodeHeader(hdr, this.#hdr, 0);
      scatter(segs, 0, this.#hdr, VSOCK_HDR_SIZE);
    }
    if (!direct && hdr.len > 0) {
      scatter(segs, VSOCK_HDR_SIZE, this.#scratch, hdr.len);
      this.stats.copies++;
    }
    this.stats.rxPackets++;
    this.stats.rxBytes += hdr.len;
    return VSOCK_HDR_SIZE + hdr.len;
  }

  // ─── TX: guest → host ──────────────────────────────────────────────────

  /** Hands the guest's packets to the backend. Returns true when the budget ran out with work left. */
  processTx(budget = QUEUE_BUDGET): boolean {
    const q = this.tx;
    if (!q || q.broken) return false;
    let used = 0;
    let more = false;
    try {
      for (;;) {
        if (budget-- <= 0) {
          more = true;
          break;
        }
        const chain = this.#pop(q, 'tx');
        if (chain === undefined) {
          used++;
          continue;
        }
        if (chain === null) {
          if (q.enableNotification()) continue;
          break;
        }
        q.disableNotification();
        try {
          this.#deliverTx(chain);
        } finally {
          q.pushUsed(chain.head, 0);
          used++;
        }
      }
    } finally {
      if (used > 0 && q.needsNotify()) this.notify(TX_QUEUE);
    }
    return more;
  }

  #deliverTx(chain: DescriptorChain): void {
    const segs = chain.readable;
    if (chain.readableLen < VSOCK_HDR_SIZE) {
      this.#drop(`tx chain ${chain.head} of ${chain.readableLen} readable bytes has no vsock header`);
      return;
    }
    let hdrBuf: Buffer;
    if (segs[0]!.length >= VSOCK_HDR_SIZE) hdrBuf = segs[0]!;
    else {
      gather(segs, 0, this.#hdr, VSOCK_HDR_SIZE);
      hdrBuf = this.#hdr;
    }
    let hdr: ReturnType<typeof decodeHeader>;
    try {
      hdr = decodeHeader(hdrBuf, 0);
    } catch (err) {
      if (err instanceof VsockPacketError) {
        this.#drop(`tx chain ${chain.head}: ${err.message}`);
        return;
      }
      throw err;
    }
    if (chain.readableLen - VSOCK_HDR_SIZE < hdr.len) {
      this.#drop(
        `tx chain ${chain.head}: header says ${hdr.len} payload bytes, chain has ${chain.readableLen - VSOCK_HDR_SIZE}`,
      );
      return;
    }
    let data: Buffer | undefined;
    if (hdr.len > 0) {
      let pi = 0;
      let po = VSOCK_HDR_SIZE;
      while (po >= segs[pi]!.length) {
        po -= segs[pi]!.length;
        pi++;
      }
      const seg = segs[pi]!;
      if (seg.length - po >= hdr.len) data = seg.subarray(po, po + hdr.len);
      else {
        gather(segs, VSOCK_HDR_SIZE, this.#scratch, hdr.len);
        data = this.#scratch.subarray(0, hdr.len);
        this.stats.copies++;
      }
    }
    this.stats.txPackets++;
    this.stats.txBytes += hdr.len;
    try {
      this.backend.handlePacket(hdr, data);
    } catch (err) {
      // The backend must not throw; if it does, the packet is lost but the queue goes on.
      this.log.error(`backend failed on a guest packet: ${(err as Error).stack ?? err}`);
    }
  }

  // ─── shared ────────────────────────────────────────────────────────────

  /** The next chain; null when none; undefined when a malformed chain was consumed and returned. */
  #pop(q: SplitVirtqueue, name: string): DescriptorChain | null | undefined {
    try {
      return q.popChain();
    } catch (err) {
      if (err instanceof VirtqueueError && err.head !== undefined) {
        this.#drop(`${name} queue: ${err.message}`);
        q.pushUsed(err.head, 0);
        return undefined;
      }
      if (err instanceof VirtqueueError || err instanceof GuestMemoryError) {
        if (!this.#reportedBroken.has(q)) {
          this.#reportedBroken.add(q);
          this.log.error(`${name} queue stopped: ${err.message}`);
        }
        return null;
      }
      throw err;
    }
  }

  #drop(why: string): void {
    this.stats.dropped++;
    this.log.warn(`dropped a malformed packet: ${why}`);
  }
}

/** Copies `len` bytes of `src` into the segments from stream offset `at`. */
function scatter(segs: readonly Buffer[], at: number, src: Buffer, len: number): void {
  let done = 0;
  for (const seg of segs) {
    if (done >= len) return;
    if (at >= seg.length) {
      at -= seg.length;
      continue;
    }
    const n = Math.min(seg.length - at, len - done);
    src.copy(seg, at, done, done + n);
    done += n;
    at = 0;
  }
}

/** Copies `len` bytes from the segments, starting at stream offset `at`, into `dst`. */
function gather(segs: readonly Buffer[], at: number, dst: Buffer, len: number): void {
  let done = 0;
  for (const seg of segs) {
    if (done >= len) return;
    if (at >= seg.length) {
      at -= seg.length;
      continue;
    }
    const n = Math.min(seg.length - at, len - done);
    seg.copy(dst, done, at, at + n);
    done += n;
    at = 0;
  }
}
