/**
 * What a vhost-user device is to the generic layer (after rust-vmm's
 * `VhostUserBackend` trait): its queues, its own feature bits and its config
 * space, and for each queue a handler that serves batches of descriptor
 * chains. Everything else is generic and written once: the message
 * dispatch, feature negotiation, memory table, ring set-up and the
 * kick/call/err eventfds (session.ts), the loop that takes chains from a
 * ring in batches, returns them used, suppresses and re-enables kicks and
 * signals the call eventfd once per run (vring.ts), and the scheduling of
 * queue runs. A device is one small file:
 * the vsock device (vsock-device.ts) is the first; a console or a
 * vhost-user-fs would be the next.
 */
import type { Logger } from '../../../util/log.js';
import type { DescriptorChain } from './virtqueue.js';

/** How one queue's descriptor chains are served. */
export interface QueueHandler {
  /** For logs ('rx', 'tx'). */
  readonly name: string;
  /**
   * Ask the driver not to kick while chains are being taken (a hint,
   * ignored with EVENT_IDX; kicks are re-enabled before the run ends).
   */
  readonly quietWhileServing: boolean;
  /** The most chains one `serve` call is given. */
  readonly batch: number;
  /** Whether to take more chains now (RX: packets are due; TX: whatever the driver made available). */
  wantsChain(): boolean;
  /**
   * Serves a batch of chains, in ring order: puts the bytes written into
   * the writable buffers of `chains[i]` in `lens[i]` (its used length; 0
   * for a chain only read, or one dropped as malformed after saying so with
   * `malformed`) for the first `n` chains and returns `n`. Chains after
   * those (the device had nothing for them) are held for the next run, not
   * returned. Every chain's buffers may be used until `serve` returns, not
   * after: the chains go back to the driver then.
   */
  serve(chains: readonly DescriptorChain[], lens: number[]): number;
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
