/**
 * What a vhost-user device is to the generic layer (after rust-vmm's
 * `VhostUserBackend` trait): its queues, its own feature bits and its config
 * space, and for each queue a handler that serves one descriptor chain at a
 * time. Everything else is generic and written once: the message dispatch,
 * feature negotiation, memory table, ring set-up and the kick/call/err
 * eventfds (session.ts), the loop that takes chains from a ring, returns
 * them used, suppresses and re-enables kicks and signals the call eventfd
 * (vring.ts), and the scheduling of queue runs. A device is one small file:
 * the vsock device (vsock-device.ts) is the first; a console or a
 * vhost-user-fs would be the next.
 */
import type { Logger } from '../../../util/log.js';
import type { DescriptorChain } from './virtqueue.js';

/** `QueueHandler.serve` has nothing for this chain after all: keep it for the next run. */
export const HOLD_CHAIN = -1;

/** How one queue's descriptor chains are served. */
export interface QueueHandler {
  /** For logs ('rx', 'tx'). */
  readonly name: string;
  /**
   * Ask the driver not to kick while chains are being taken (a hint,
   * ignored with EVENT_IDX; kicks are re-enabled before the run ends).
   */
  readonly quietWhileServing: boolean;
  /** Whether to take another chain now (RX: packets are due; TX: whatever the driver made available). */
  wantsChain(): boolean;
  /**
   * Serves one chain: returns the bytes written into its writable buffers
   * (its used length; 0 for a chain only read, or one dropped as malformed,
   * after saying so with `malformed`), or HOLD_CHAIN to keep it for later.
   */
  serve(chain: DescriptorChain): number;
  /** A chain was dropped as malformed (by the ring, or by `serve`): count it, log it. */
  malformed(why: string): void;
}

/** What the session gives its device. */
export interface DeviceContext {
  /** Schedules a run of queue `index` (a device-side event: data became due). */
  kick(index: number): void;
  readonly log: Logger;
}

export interface VhostUserDevice {
  /** Queues the backend serves (GET_QUEUE_NUM); queue i is served by `queue(i)`. */
  readonly queueCount: number;
  /** The device's own virtio feature bits (the session adds the ring and vhost-user ones). */
  readonly features: bigint;
  /** The config space GET_CONFIG reads windows of; null for none (CONFIG is then not offered). */
  configSpace(): Buffer | null;
  queue(index: number): QueueHandler;
  /** A front-end connected: device-side events go to `ctx.kick` from now on. */
  start(ctx: DeviceContext): void;
  /** A run of queue `index` finished (vsock: guest packets make replies due, so RX runs next). */
  afterRun?(index: number): void;
  /** The guest stopped using the device, or the front-end went away: drop all guest state. */
  reset(reason: string): void;
  /** The front-end is gone (after `reset`): no more kicks. */
  stop(): void;
}
