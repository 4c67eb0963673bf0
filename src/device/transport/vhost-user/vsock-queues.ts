/**
 * The virtio-vsock device's two data queues over guest memory, as queue
 * handlers of the generic layer (device.ts): RX (queue 0, host to guest) and
 * TX (queue 1, guest to host). QEMU keeps the event queue (queue 2) for
 * itself. The loop around them (taking chains, returning them used, kick
 * suppression, the call eventfd, budgets) is the generic one in vring.ts;
 * what is here is what a vsock packet does in one chain.
 *
 * RX: while the backend has packets due, each chain gets one: the backend
 * writes the RW payload straight into the chain's writable bytes after the
 * 44-byte header, the header goes in front of it, and the chain's used
 * length is the packet's. The payload goes through no intermediate buffer
 * whenever the bytes from offset 44 of the chain lie in one descriptor:
 * Linux 6.1 posts a 44-byte header descriptor and a 4 KiB buffer descriptor
 * per receive buffer (newer kernels one contiguous buffer), both are that
 * case, so an fd the backend reads lands directly in guest memory. Only a
 * payload area scattered over several descriptors is gathered in a scratch
 * buffer and copied. A chain taken when the backend then has nothing after
 * all (a connection waiting for credit) is held for the next packet.
 *
 * TX: each chain the guest made available is one packet: the header is
 * decoded from its readable bytes and the payload handed to the backend as a
 * view into guest memory (copied only when it spans descriptors); the chain
 * goes back with length 0.
 *
 * Trust: every chain comes from the guest. A header that does not decode, a
 * length that does not fit the chain, or a chain the ring cannot hand out
 * intact is logged and counted (`dropped`), the chain returned used with
 * length 0: the packet is lost, the queue and the process go on.
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
import { HOLD_CHAIN, type QueueHandler } from './device.js';
import type { DescriptorChain } from './virtqueue.js';

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
/** Queues the backend serves (QEMU handles the event queue). */
export const VSOCK_QUEUE_COUNT = 2;

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
  readonly stats: VsockQueueStats = {
    rxPackets: 0,
    rxBytes: 0,
    txPackets: 0,
    txBytes: 0,
    dropped: 0,
    copies: 0,
  };
  /** Host → guest: one due packet per chain. */
  readonly rx: QueueHandler;
  /** Guest → host: one packet per chain. */
  readonly tx: QueueHandler;
  readonly #scratch = Buffer.allocUnsafe(VSOCK_MAX_PKT_PAYLOAD);
  readonly #hdr = Buffer.allocUnsafe(VSOCK_HDR_SIZE);

  constructor(
    private readonly backend: VsockBackend,
    private readonly log: Logger,
  ) {
    const malformed = (why: string) => this.#drop(why);
    this.rx = {
      name: 'rx',
      quietWhileServing: false,
      wantsChain: () => backend.hasPendingRx(),
      serve: (chain) => this.#fillRx(chain),
      malformed,
    };
    this.tx = {
      name: 'tx',
      quietWhileServing: true,
      wantsChain: () => true,
      serve: (chain) => {
        this.#deliverTx(chain);
        return 0;
      },
      malformed,
    };
  }

  /** Zeroes the counters (a new front-end session). */
  resetStats(): void {
    for (const k of Object.keys(this.stats) as (keyof VsockQueueStats)[]) this.stats[k] = 0;
  }

  // ─── RX: host → guest ──────────────────────────────────────────────────

  /**
   * Writes one packet into `chain`; returns the bytes written (0: the chain
   * is unusable, return it empty; HOLD_CHAIN: the backend had nothing).
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
    if (!hdr) return HOLD_CHAIN;
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

  #drop(why: string): void {
    this.stats.dropped++;
    this.log.warn(`dropped a malformed packet: ${why}`);
  }
}

/**
 * Copies `len` bytes between a flat buffer and a chain's segments, starting
 * at stream offset `at` of the segments: into them (`scatter`) or out of them
 * (`gather`).
 */
function copySegments(segs: readonly Buffer[], at: number, flat: Buffer, len: number, into: boolean): void {
  let done = 0;
  for (const seg of segs) {
    if (done >= len) return;
    if (at >= seg.length) {
      at -= seg.length;
      continue;
    }
    const n = Math.min(seg.length - at, len - done);
    if (into) flat.copy(seg, at, done, done + n);
    else seg.copy(flat, done, at, at + n);
    done += n;
    at = 0;
  }
}

const scatter = (segs: readonly Buffer[], at: number, src: Buffer, len: number) =>
  copySegments(segs, at, src, len, true);
const gather = (segs: readonly Buffer[], at: number, dst: Buffer, len: number) =>
  copySegments(segs, at, dst, len, false);
