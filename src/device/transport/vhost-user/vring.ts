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
 * pattern: while the handler wants chains and the budget lasts, take a batch
 * of chains (the ones held from the last run first, then new ones from the
 * ring, up to the handler's batch size), let the handler fill or consume
 * them, and give back used the ones it served; chains it had nothing for
 * are held (not returned empty, which would cost the guest buffers until it
 * refills) for the next run, and given back to the old ring, while its
 * memory is still mapped, when the view is dropped. With no chain left,
 * kicks are re-enabled and the ring looked at once more for chains that
 * arrived meanwhile. A chain the ring cannot hand out intact is returned
 * used with length 0 (the handler counts it); a ring whose indices are
 * broken (the driver broke the virtio rules: nothing in it can be trusted or
 * given back, not even the chains of the batch being taken) is left alone
 * and reported to the session (`onBroken`), which marks the whole device as
 * needing a reset. The call eventfd is signalled at most once per event-loop
 * turn (setImmediate, after every readiness callback of the turn ran its
 * runs), after all their used chains, and only if the driver asked for it
 * (EVENT_IDX: `used_event`; else the NO_INTERRUPT flag): with several
 * connections ready at once, one run each, the guest gets one interrupt, not
 * one per run. A view dropped meanwhile decides its call first, so no used
 * chain goes unannounced.
 *
 * Counters for operators: kicks read, calls signalled, runs, chains used,
 * and when the last kick and call happened (`describe`, with the ring's
 * indices).
 */
import type { Logger } from '../../../util/log.js';
import type { QueueHandler } from './device.js';
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
  /** Chains taken from the ring that the handler had nothing for yet. */
  #held: DescriptorChain[] = [];
  readonly #batch: DescriptorChain[] = [];
  readonly #lens: number[] = [];
  /** Used chains were pushed this loop turn: the call is decided at its end. */
  #callDue: NodeJS.Immediate | null = null;
  /** Kicks read, calls signalled, runs, chains used; when the last kick/call happened (ms since the epoch). */
  readonly stats = { kicks: 0, calls: 0, runs: 0, chains: 0, lastKick: 0, lastCall: 0 };

  constructor(
    readonly index: number,
    private readonly env: SessionEnv,
    private readonly log: Logger,
    /** The ring's indices are broken: the device needs a reset (session.ts). */
    private readonly onBroken: (reason: string) => void = () => {},
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
    if (this.#callDue) this.#decideCall();
    for (const chain of this.#held) {
      try {
        q.pushUsed(chain.head, 0);
      } catch {
        // the ring's memory is gone: nothing to give back
      }
    }
    this.#held = [];
    this.base = q.lastAvailIdx;
    this.#queue = null;
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
      this.signalError();
      return null;
    }
    return this.#queue;
  }

  /** One run of the loop (see the module comment). Returns true when the budget ran out with work left. */
  serve(handler: QueueHandler, budget: number): boolean {
    const q = this.#queue;
    if (!q || q.broken) return false;
    this.stats.runs++;
    let used = 0;
    let more = false;
    const batch = this.#batch;
    try {
      while (handler.wantsChain()) {
        if (budget <= 0) {
          more = true;
          break;
        }
        batch.length = 0;
        for (const chain of this.#held) batch.push(chain);
        this.#held = [];
        const want = Math.max(batch.length, Math.min(handler.batch, budget));
        while (batch.length < want) {
          const chain = this.#pop(q, handler);
          if (chain === null) break;
          if (chain === undefined)
            used++; // a malformed chain was returned
          else batch.push(chain);
        }
        if (q.broken) break; // reported by #pop; nothing taken is given back
        if (batch.length === 0) {
          // Nothing available: the driver kicks when it adds more.
          if (q.enableNotification()) continue;
          break;
        }
        if (handler.quietWhileServing) q.disableNotification();
        let n: number;
        try {
          n = handler.serve(batch, this.#lens);
        } catch (err) {
          for (const chain of batch) q.pushUsed(chain.head, 0);
          used += batch.length;
          batch.length = 0;
          throw err;
        }
        for (let i = 0; i < n; i++) q.pushUsed(batch[i]!.head, this.#lens[i]!);
        used += n;
        budget -= n;
        if (n < batch.length) {
          this.#held = batch.slice(n);
          break;
        }
      }
    } finally {
      batch.length = 0;
      this.stats.chains += used;
      if (used > 0) this.#callDue ??= setImmediate(() => this.#decideCall());
    }
    return more;
  }

  /** One call for every run since the last decision, if the driver wants one now. */
  #decideCall(): void {
    if (this.#callDue) clearImmediate(this.#callDue);
    this.#callDue = null;
    const q = this.#queue;
    if (!q || q.broken) return;
    try {
      if (q.needsNotify()) this.signalUsed();
    } catch {
      // the ring's memory is gone: the driver is not looking any more
    }
  }

  /** A kick was read from the driver (counted for operators). */
  kicked(): void {
    this.stats.kicks++;
    this.stats.lastKick = Date.now();
  }

  /** The ring for operators: its indices, held chains, counters and the last kick and call. */
  describe(now = Date.now()): string {
    const ago = (t: number) => (t === 0 ? '-' : `${now - t}ms`);
    const q = this.#queue;
    const ring = q
      ? q.describe()
      : `no view (enabled=${this.enabled} kick=${this.#fds.kick >= 0} base=${this.base})`;
    const { kicks, calls, runs, chains } = this.stats;
    return (
      `queue ${this.index}: ${ring} held=${this.#held.length} kicks=${kicks} calls=${calls} runs=${runs} ` +
      `chains=${chains} lastKick=${ago(this.stats.lastKick)} lastCall=${ago(this.stats.lastCall)}`
    );
  }

  /** Signals the call eventfd (used buffers for the driver). */
  signalUsed(): void {
    this.stats.calls++;
    this.stats.lastCall = Date.now();
    this.#signal('call');
  }

  /** Signals the err eventfd: QEMU then marks the device DEVICE_NEEDS_RESET for the guest (virtio_error). */
  signalError(): void {
    this.#signal('err');
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
        this.onBroken(`${handler.name} queue: ${err.message}`);
        return null;
      }
      throw err;
    }
  }
}
