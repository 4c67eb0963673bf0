/**
 * The seam between the device core and a guest transport.
 *
 * A transport moves virtio-vsock packets between the device and a guest: the
 * loopback transport hands them to a software guest stack in this process;
 * the vhost-user transport reads and writes them in a real guest's
 * virtqueues. Packets for the guest are *pulled* (`nextPacket(buf)` fills
 * the buffer the packet travels in, so an fd backend is read straight into
 * guest memory), packets from the guest are pushed (`handlePacket`).
 */
import type { VsockHeader } from '../../protocol/vsock-packet.js';

/** The device core as a transport sees it (VsockEndpoint implements it). */
export interface VsockBackend {
  /** A packet from the guest. `data` (RW payload) is only read during the call. */
  handlePacket(hdr: VsockHeader, data?: Buffer): void;
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
