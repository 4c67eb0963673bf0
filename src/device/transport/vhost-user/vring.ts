/**
 * One virtqueue of a vhost-user session: its set-up as the front-end sent it
 * (vhost-user.rst "Ring states": size, base, addresses, enable, and the
 * kick, call and err eventfds), the split-ring view built over guest memory
 * once all of that is there, and the loop every queue is served by.
 *
 * Set-up: SET_VRING_KICK / CALL / ERR go through `setFd` (the new fd
 * replaces and closes the previous one; -1 for none). A change of size,
 * addresses, features or the memory under the ring drops the view
 * (`invalidate`) at the index reached; it is rebuilt on the next run. A ring
 * that cannot be built over guest memory is logged once, signals its err
 * eventfd and stays down until its set-up changes.
 *
 * The loop (`serve`), after rust-vmm's vhost-user-backend + virtio-queue
 * pattern: while the handler wants chains and the budget lasts, take the next
 * chain (or the one held from the last run), let the handler fill or consume
 * it, give it back used; with no chain left, re-enable kicks and look once
 * more for chains that arrived meanwhile; a chain the ring cannot hand out
 * intact is returned used with length 0 (the handler counts it); a ring
 * whose indices are broken is logged once and left alone. After the run the
 * call eventfd is signalled if the driver asked for it (EVENT_IDX aware).
 * A chain the handler had nothing for is held (not returned empty, which
 * would cost the guest a buffer until it refills) and given back to the old
 * ring, while its memory is still mapped, when the view is dropped.
 */
import type { Logger } from '../../../util/log.js';
import { HOLD_CHAIN, type QueueHandler } from './device.js';
import { Feature, hasBit } from './features.js';
import { GuestMemoryError } from './memory.js';
import type { VringAddr } from './messages.js';
import type { SessionEnv } from './session-env.js';
import { type DescriptorChain, type GuestMemoryAccess, SplitVirtqueue, VirtqueueError } from './virtqueue.js';

export type VringFd = 'kick' | 'call' | 'err';

export class Vring {
  num = 0;
  base = 0;
  addr: VringAddr | null = null;
  enabled = false;
  readonly #fds: Record<VringFd, number> = { kick: -1, call: -1, err: -1 };
  #stopKick: (() => void) | null = null;
  #queue: SplitVirtqueue | null = null;
  /** The view could not be built: down until the set-up changes. */
  #failed = false;
  #reportedBroken = false;
  #held: DescriptorChain | null = null;

  constructor(
    readonly index: number,
    private readonly env: SessionEnv,
    private readonly log: Logger,
  ) {}

  get queue(): SplitVirtqueue | null {
    return this.#queue;
  }

  get kickFd(): number {
    return this.#fds.kick;
  }

  /** SET_VRING_KICK / CALL / ERR: `fd` (or -1) replaces the previous fd, which is closed. A kick fd is watched. */
  setFd(kind: VringFd, fd: number, onKick?: () => void): void {
    if (kind === 'kick') {
      this.#stopKick?.();
      this.#stopKick = null;
    }
    this.env.close(this.#fds[kind]);
    this.#fds[kind] = fd;
    if (kind === 'kick' && fd >= 0 && onKick) this.#stopKick = this.env.watchKick(fd, onKick);
  }

  /** The ring's set-up or the memory under it changed: drop the view at the index reached, retry building it. */
  invalidate(): void {
    this.dropView();
    this.#failed = false;
  }

  /** Drops the view (rebuilt on the next run), keeping the index reached; a held chain goes back first. */
  dropView(): void {
    const q = this.#queue;
    if (!q) return;
    if (this.#held) {
      try {
        q.pushUsed(this.#held.head, 0);
      } catch {
        // the ring's memory is gone: nothing to give back
      }
      this.#held = null;
    }
    this.base = q.lastAvailIdx;
    this.#queue = null;
    this.#reportedBroken = false;
  }

  /** GET_VRING_BASE: stops the ring; returns the index to resume from. */
  stop(): number {
    this.setFd('kick', -1);
    this.enabled = false;
    this.dropView();
    return this.base;
  }

  /** RESET_OWNER / RESET_DEVICE: stopped and back to index 0. */
  reset(): void {
    this.stop();
    this.base = 0;
  }

  /** The view to serve, built now if the ring is ready for it; null while it is not. */
  ready(mem: GuestMemoryAccess | null, features: bigint): SplitVirtqueue | null {
    if (this.#queue) return this.#queue;
    if (!this.enabled || this.#fds.kick < 0 || !this.addr || !mem || this.num === 0 || this.#failed)
      return null;
    try {
      this.#queue = new SplitVirtqueue(mem, {
        size: this.num,
        descAddr: this.addr.descUserAddr,
        availAddr: this.addr.availUserAddr,
        usedAddr: this.addr.usedUserAddr,
        base: this.base,
        indirect: hasBit(features, Feature.VIRTIO_RING_F_INDIRECT_DESC),
        eventIdx: hasBit(features, Feature.VIRTIO_RING_F_EVENT_IDX),
      });
    } catch (err) {
      this.#failed = true;
      this.log.error(`queue ${this.index} cannot be set up: ${(err as Error).message}`);
      this.#signal('err');
      return null;
    }
    return this.#queue;
  }

  /** One run of the loop (see the module comment). Returns true when the budget ran out with work left. */
  serve(handler: QueueHandler, budget: number): boolean {
    const q = this.#queue;
    if (!q || q.broken) return false;
    let used = 0;
    let more = false;
    try {
      while (handler.wantsChain()) {
        if (budget-- <= 0) {
          more = true;
          break;
        }
        const chain = this.#held ?? this.#pop(q, handler);
        this.#held = null;
        if (chain === undefined) {
          used++; // a malformed chain was returned
          continue;
        }
        if (chain === null) {
          // Nothing available: the driver kicks when it adds more.
          if (q.enableNotification()) continue;
          break;
        }
        if (handler.quietWhileServing) q.disableNotification();
        let len: number;
        try {
          len = handler.serve(chain);
        } catch (err) {
          q.pushUsed(chain.head, 0);
          used++;
          throw err;
        }
        if (len === HOLD_CHAIN) {
          this.#held = chain;
          break;
        }
        q.pushUsed(chain.head, len);
        used++;
      }
    } finally {
      if (used > 0 && q.needsNotify()) this.signalUsed();
    }
    return more;
  }

  /** Signals the call eventfd (used buffers for the driver). */
  signalUsed(): void {
    this.#signal('call');
  }

  #signal(kind: 'call' | 'err'): void {
    const fd = this.#fds[kind];
    if (fd < 0) return;
    try {
      this.env.signal(fd);
    } catch (err) {
      this.log.warn(`${kind} fd of queue ${this.index}: ${(err as Error).message}`);
    }
  }

  /** Ends the ring with its session: every fd closed, the view dropped (a held chain returned). */
  close(): void {
    this.stop();
    this.setFd('call', -1);
    this.setFd('err', -1);
  }

  /** The next chain; null when none; undefined when a malformed chain was consumed and returned. */
  #pop(q: SplitVirtqueue, handler: QueueHandler): DescriptorChain | null | undefined {
    try {
      return q.popChain();
    } catch (err) {
      if (err instanceof VirtqueueError && err.head !== undefined) {
        handler.malformed(`${handler.name} queue: ${err.message}`);
        q.pushUsed(err.head, 0);
        return undefined;
      }
      if (err instanceof VirtqueueError || err instanceof GuestMemoryError) {
        if (!this.#reportedBroken) {
          this.#reportedBroken = true;
          this.log.error(`${handler.name} queue stopped: ${err.message}`);
        }
        return null;
      }
      throw err;
    }
  }
}
