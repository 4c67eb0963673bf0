/**
 * The virtio-vsock device as a vhost-user device (device.ts): two queues
 * (RX and TX; QEMU keeps the event queue), no feature bits of its own, and
 * a config space holding the guest's CID, `guest_cid u64` little-endian
 * (virtio 1.2, 5.10.4), which QEMU's vhost-user-vsock reads with GET_CONFIG
 * because it has no guest-cid property of its own. Its queue handlers are
 * vsock-queues.ts; the device core behind them is a VsockBackend (the
 * hybrid device's endpoint). Packets becoming due on the backend schedule an
 * RX run; every TX run is followed by an RX run, since guest packets usually
 * make replies due (credit, RESPONSE); the guest going away reaches the
 * backend as `guestGone`.
 */
import type { Logger } from '../../../util/log.js';
import type { VsockBackend } from '../transport.js';
import type { DeviceContext, QueueHandler, VhostUserDevice } from './device.js';
import { encodeU64 } from './messages.js';
import { RX_QUEUE, TX_QUEUE, VSOCK_QUEUE_COUNT, VsockQueues } from './vsock-queues.js';

/** virtio-vsock's config space: `guest_cid u64`. */
export function vsockConfigSpace(guestCid: number | bigint): Buffer {
  return encodeU64(BigInt(guestCid));
}

export class VhostUserVsockDevice implements VhostUserDevice {
  readonly queueCount = VSOCK_QUEUE_COUNT;
  readonly features = 0n;
  readonly queues: VsockQueues;
  #ctx: DeviceContext | null = null;

  constructor(
    readonly guestCid: number,
    private readonly backend: VsockBackend,
    log: Logger,
  ) {
    this.queues = new VsockQueues(backend, log);
    backend.onRxPending = () => this.#ctx?.kick(RX_QUEUE);
  }

  configSpace(): Buffer {
    return vsockConfigSpace(this.guestCid);
  }

  queue(index: number): QueueHandler {
    return index === RX_QUEUE ? this.queues.rx : this.queues.tx;
  }

  start(ctx: DeviceContext): void {
    this.#ctx = ctx;
    this.queues.resetStats();
  }

  afterRun(index: number): void {
    if (index === TX_QUEUE) this.#ctx?.kick(RX_QUEUE);
  }

  reset(reason: string): void {
    this.backend.guestGone?.(reason);
  }

  stop(): void {
    this.#ctx = null;
  }
}
