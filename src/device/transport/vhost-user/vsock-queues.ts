/**
 * The virtio-vsock device's two data queues over guest memory, as queue
 * handlers of the generic layer (device.ts): RX (queue 0, host to guest) and
 * TX (queue 1, guest to host). QEMU keeps the event queue (queue 2) for
 * itself. The loop around them (taking chains in batches, returning them
 * used, kick suppression, the call eventfd, budgets) is the generic one in
 * vring.ts; what is here is what vsock packets do in a batch of chains.
 *
 * RX: while the backend has packets due, each chain gets one. The backend
 * writes RW payloads straight into the chains' writable bytes after the
 * 44-byte header, several chains per turn: one turn is offered the payload
 * areas of consecutive chains up to 64 KiB (one read(2)/readv(2) of the
 * host fd fills them, one packet per chain), then the headers go in front.
 * A chain's payload area is used in place when it lies in one descriptor
 * from offset 44 (or at least a full page of it does): Linux 6.1 posts a
 * 44-byte header descriptor and a 4 KiB buffer descriptor per receive
 * buffer, newer kernels one contiguous buffer; both are that case. Only a
 * payload area scattered over small descriptors is gathered in a scratch
 * buffer (one chain per turn then) and copied. Chains left when the backend
 * has nothing more (a connection waiting for credit) are held for later.
 *
 * TX: each chain the guest made available is one packet: the header is
 * decoded from its readable bytes and the payload handed to the backend as a
 * view into guest memory (copied only when it spans descriptors); the chain
 * goes back with length 0. A batch of chains is one backend batch, so the
 * payloads a connection gets in it are written with one writev before the
 * chains go back to the guest.
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
  type VsockHeader,
  VsockPacketError,
} from '../../../protocol/vsock-packet.js';
import type { Logger } from '../../../util/log.js';
import type { VsockBackend } from '../transport.js';
import type { QueueHandler } from './device.js';
import type { DescriptorChain } from './virtqueue.js';

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
/** Queues the backend serves (QEMU handles the event queue). */
export const VSOCK_QUEUE_COUNT = 2;
/** Chains per batch, each queue. */
export const VSOCK_BATCH = 64;
/** Payload room offered to one connection's turn on RX: one packet's worth (Linux sends up to 64 KiB per packet). */
const RX_TURN_BYTES = VSOCK_MAX_PKT_PAYLOAD;

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

  /** One RX turn's payload areas and the headers the backend wrote for them. */
  readonly #areas: Buffer[] = [];
  readonly #hdrs: VsockHeader[] = [];

  constructor(
    private readonly backend: VsockBackend,
    private readonly log: Logger,
  ) {
    const malformed = (why: string) => this.#drop(why);
    this.rx = {
      name: 'rx',
      quietWhileServing: false,
      batch: VSOCK_BATCH,
      wantsChain: () => backend.hasPendingRx(),
      serve: (chains, lens) => this.#fillRx(chains, lens),
      malformed,
    };
    this.tx = {
      name: 'tx',
      quietWhileServing: true,
      batch: VSOCK_BATCH,
      wantsChain: () => true,
      serve: (chains, lens) => {
        backend.beginBatch();
        try {
          for (let i = 0; i < chains.length; i++) {
            this.#deliverTx(chains[i]!);
            lens[i] = 0;
          }
        } finally {
          backend.endBatch();
        }
        return chains.length;
      },
      malformed,
    };
  }

  /** Zeroes the counters (a new front-end session). */
  resetStats(): void {
    for (const k of Object.keys(this.stats) as (keyof VsockQueueStats)[]) this.stats[k] = 0;
  }

  // ─── RX: host → guest ──────────────────────────────────────────────────

  /** Fills `chains` with packets, turn by turn; returns how many chains were used (the rest are held). */
  #fillRx(chains: readonly DescriptorChain[], lens: number[]): number {
    let i = 0;
    while (i < chains.length && this.backend.hasPendingRx()) {
      const first = this.#payloadArea(chains[i]!);
      if (first === null) {
        lens[i++] = 0; // dropped: too small for a header
        continue;
      }
      // One turn: this chain's payload area, and the next chains' while they are direct, up to RX_TURN_BYTES.
      const areas = this.#areas;
      areas.length = 0;
      areas.push(first.area);
      let room = first.area.length;
      for (let j = i + 1; first.direct && j < chains.length && room < RX_TURN_BYTES; j++) {
        const next = this.#payloadArea(chains[j]!);
        if (next === null || !next.direct) break;
        areas.push(next.area);
        room += next.area.length;
      }
      const n = this.backend.nextPackets(areas, areas.length, this.#hdrs);
      if (n === 0) break;
      for (let k = 0; k < n; k++, i++)
        lens[i] = this.#finishRx(chains[i]!, this.#hdrs[k]!, areas[k]!, first.direct);
    }
    return i;
  }

  /**
   * Where `chain`'s payload goes: the bytes from offset 44 when they lie in
   * one descriptor (or at least a page of them does), else the scratch
   * buffer (`direct` false). Null for a chain too small for a header (dropped).
   */
  #payloadArea(chain: DescriptorChain): { area: Buffer; direct: boolean } | null {
    const segs = chain.writable;
    if (chain.writableLen < VSOCK_HDR_SIZE) {
      this.#drop(`rx chain ${chain.head} of ${chain.writableLen} bytes cannot hold a vsock header`);
      return null;
    }
    // Where the payload starts: segment `pi`, offset `po`.
    let pi = 0;
    let po = VSOCK_HDR_SIZE;
    while (pi < segs.length && po >= segs[pi]!.length) {
      po -= segs[pi]!.length;
      pi++;
    }
    const room = Math.min(chain.writableLen - VSOCK_HDR_SIZE, VSOCK_MAX_PKT_PAYLOAD);
    if (pi < segs.length) {
      const seg = segs[pi]!;
      const inSeg = Math.min(seg.length - po, VSOCK_MAX_PKT_PAYLOAD);
      // One descriptor holds the payload area (or at least a full page of it): fill it in place.
      if (inSeg === room || inSeg >= 4096) return { area: seg.subarray(po, po + inSeg), direct: true };
    }
    return { area: this.#scratch.subarray(0, room), direct: false };
  }

  /** Puts `hdr` (and a payload gathered in scratch) into `chain`; returns its used length (0: packet lost). */
  #finishRx(chain: DescriptorChain, hdr: VsockHeader, area: Buffer, direct: boolean): number {
    const segs = chain.writable;
    if (hdr.len > area.length) {
      // A backend bug, not the guest's: never write past the chain.
      this.log.error(
        `backend produced ${hdr.len} payload bytes for a ${area.length}-byte buffer; packet lost`,
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
        // A copy of its own: the batch may keep the payload until it ends.
        data = Buffer.allocUnsafe(hdr.len);
        gather(segs, VSOCK_HDR_SIZE, data, hdr.len);
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
