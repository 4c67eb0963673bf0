/**
 * The seam between the device core and a guest transport.
 *
 * A transport moves virtio-vsock packets between the device and a guest: the
 * loopback transport hands them to a software guest stack in this process;
 * the vhost-user transport reads and writes them in a real guest's
 * virtqueues. Packets for the guest are *pulled* (`nextPackets(bufs)` fills
 * the buffers the packets travel in, so an fd backend is read straight into
 * guest memory, several guest buffers per read), packets from the guest are
 * pushed (`handlePacket`), several at a time between `beginBatch` and
 * `endBatch` when the transport has them (a run of a TX queue).
 */
import type { VsockHeader } from '../../protocol/vsock-packet.js';

/** The device core as a transport sees it (VsockEndpoint implements it). */
export interface VsockBackend {
  /** A packet from the guest. `data` (RW payload) is read during the call, or inside a batch until `endBatch`. */
  handlePacket(hdr: VsockHeader, data?: Buffer): void;
  /** Opens a batch of guest packets: RW payloads may be referenced, not copied, until `endBatch`. */
  beginBatch(): void;
  /** Closes the batch: nothing references a payload afterwards. */
  endBatch(): void;
  /**
   * The next packets for the guest, one turn of the backend's RX queue:
   * headers into `out[0, n)`, packet i's RW payload written into
   * `bufs[i][0, out[i].len)`. Returns `n` (≤ `count`; 0 when none is due).
   */
  nextPackets(bufs: readonly Buffer[], count: number, out: VsockHeader[]): number;
  /** The next packet for the guest, RW payload written into `buf[0, hdr.len)`; null when none is due. */
  nextPacket(buf: Buffer): VsockHeader | null;
  hasPendingRx(): boolean;
  /** Set by the transport: the backend calls it when packets for the guest become due. */
  onRxPending: () => void;
  /** The guest went away (power-off, reset, transport lost): drop every connection. */
  guestGone?(reason: string): void;
}

export interface GuestTransport {
  readonly kind: 'loopback' | 'vhost-user';
  readonly guestCid: number;
  /** Connects the transport to the device core and starts moving packets. */
  attach(backend: VsockBackend): void;
  /** Stops moving packets and releases everything the transport holds. */
  close(): Promise<void>;
}
