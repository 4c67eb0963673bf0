/**
 * One front-end's vhost-user session, generic over the device it serves
 * (device.ts), after rust-vmm's vhost-user-backend: the front-end (QEMU)
 * sends requests, the session answers and keeps the state they set, and the
 * device only ever sees ready rings and chains.
 *
 * Dispatch (vhost-user.rst "Front-end message types"):
 *   GET/SET_FEATURES            the ring and vhost-user bits (VERSION_1,
 *                               INDIRECT_DESC, EVENT_IDX, PROTOCOL_FEATURES)
 *                               plus the device's own; SET drops the ring
 *                               views (the ring bits shape them)
 *   GET/SET_PROTOCOL_FEATURES   MQ, REPLY_ACK, and CONFIG when the device has
 *                               a config space
 *   GET_QUEUE_NUM               the device's queue count
 *   SET_OWNER                   nothing to do (one front-end per session)
 *   RESET_OWNER, RESET_DEVICE   every ring stopped and back to index 0
 *   SET_MEM_TABLE               the new table mapped, every ring view dropped
 *                               (held chains go back to the old rings while
 *                               the old memory is still mapped), the old
 *                               table unmapped, every queue run once
 *   SET_VRING_NUM/ADDR/BASE     the ring's set-up; its view is rebuilt
 *   SET_VRING_KICK/CALL/ERR     one code path (`Vring.setFd`): the new fd
 *                               replaces and closes the old; NOFD means none
 *   SET_VRING_ENABLE            enable, or park the ring (view dropped)
 *   GET_VRING_BASE              the ring stopped; its next index returned
 *   GET_CONFIG / SET_CONFIG     a window of the device's config space / ignored
 * Anything else, or a payload that does not decode, throws
 * VhostUserProtocolError: the caller ends the session. REPLY_ACK, when
 * negotiated, answers every need-reply request that has no reply of its own.
 * Fds that arrive with a message are closed after it unless a request took
 * them.
 *
 * Lifecycle: a ring is served once it is enabled, kicked (has a kick fd),
 * addressed, sized and mapped; the device has been "live" since a ring was
 * first built. Stopping a live ring (GET_VRING_BASE) or resetting means the
 * guest went away: the device is reset. `end` (the front-end left, or the
 * session failed) closes every ring's fds, unmaps the memory and resets the
 * device; it is idempotent.
 *
 * Queue runs are written once for every queue: a kick (the guest's eventfd,
 * or the device's own `ctx.kick`) schedules a run in a microtask; a run
 * serves up to QUEUE_BUDGET chains and, when work is left, runs again after
 * the event loop has had its turn. Processing that throws ends the session.
 *
 * I/O goes through the injected SessionEnv (session-env.ts), so the whole
 * dispatch runs in tests from decoded messages, without a socket.
 */
import type { Logger } from '../../../util/log.js';
import type { VhostUserDevice } from './device.js';
import { bits, Feature, hasBit, ProtocolFeature } from './features.js';
import {
  decodeConfig,
  decodeMemoryTable,
  decodeU64,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  encodeConfigReply,
  encodeReply,
  encodeU64,
  encodeVringState,
  needsReply,
  Req,
  requestName,
  type VhostUserMessage,
  VhostUserProtocolError,
} from './messages.js';
import type { MappedMemory, SessionEnv } from './session-env.js';
import { Vring } from './vring.js';

/** Virtio feature bits every device gets from this layer: VERSION_1, PROTOCOL_FEATURES, INDIRECT_DESC, EVENT_IDX. */
export const TRANSPORT_FEATURES = bits(
  Feature.VIRTIO_F_VERSION_1,
  Feature.VHOST_USER_F_PROTOCOL_FEATURES,
  Feature.VIRTIO_RING_F_INDIRECT_DESC,
  Feature.VIRTIO_RING_F_EVENT_IDX,
);

/** Chains per queue per run before yielding to the event loop. */
export const QUEUE_BUDGET = 256;

export function offeredFeatures(device: VhostUserDevice): bigint {
  return TRANSPORT_FEATURES | device.features;
}

/** MQ (GET_QUEUE_NUM), REPLY_ACK, and CONFIG for a device with a config space. */
export function offeredProtocolFeatures(device: VhostUserDevice): bigint {
  const config = device.configSpace() ? [ProtocolFeature.CONFIG] : [];
  return bits(...config, ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK);
}

export class VhostUserSession {
  readonly #vrings: Vring[];
  readonly #scheduled: boolean[];
  readonly #offered: bigint;
  readonly #offeredProtocol: bigint;
  #mem: MappedMemory | null = null;
  #features = 0n;
  #protocolFeatures = 0n;
  /** The guest has used the device since it was set up: stopping it is "the guest went away". */
  #live = false;
  #closed = false;

  constructor(
    private readonly device: VhostUserDevice,
    private readonly env: SessionEnv,
    private readonly log: Logger,
    private readonly onEnd: () => void = () => {},
  ) {
    this.#vrings = Array.from({ length: device.queueCount }, (_, i) => new Vring(i, env, log));
    this.#scheduled = this.#vrings.map(() => false);
    this.#offered = offeredFeatures(device);
    this.#offeredProtocol = offeredProtocolFeatures(device);
    device.start({ kick: (i) => this.kick(i), log });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The ring `index` (for tests and operators). */
  vring(index: number): Vring {
    const v = this.#vrings[index];
    if (!v) throw new VhostUserProtocolError(`queue index ${index} (this device has ${this.#vrings.length})`);
    return v;
  }

  // ─── requests ──────────────────────────────────────────────────────────

  /** Handles one request (see the module comment). Throws on a request the session cannot honour. */
  handle(msg: VhostUserMessage): void {
    const { request: req, payload } = msg;
    this.log.debug(`<- ${requestName(req)} (${payload.length} bytes, ${msg.fds.length} fds)`);
    /** Whether the request has its own reply (then REPLY_ACK adds none). */
    let replied = true;
    try {
      switch (req) {
        case Req.GET_FEATURES:
          this.#replyU64(req, this.#offered);
          break;
        case Req.GET_PROTOCOL_FEATURES:
          this.#replyU64(req, this.#offeredProtocol);
          break;
        case Req.GET_QUEUE_NUM:
          this.#replyU64(req, BigInt(this.#vrings.length));
          break;
        case Req.GET_VRING_BASE: {
          const s = decodeVringState(payload);
          const v = this.vring(s.index);
          // Stopping a ring the guest was using: the guest is going away.
          if (this.#live) this.#guestGone('guest stopped the device');
          const base = v.stop();
          this.env.send(encodeReply(req, encodeVringState({ index: s.index, num: base })));
          break;
        }
        case Req.GET_CONFIG:
          this.env.send(
            encodeConfigReply(decodeConfig(payload), this.device.configSpace() ?? Buffer.alloc(0)),
          );
          break;
        default:
          replied = false;
          this.#set(msg);
      }
    } finally {
      for (const f of msg.fds) this.env.close(f);
      msg.fds = [];
    }
    if (!replied && needsReply(msg) && hasBit(this.#protocolFeatures, ProtocolFeature.REPLY_ACK)) {
      this.#replyU64(req, 0n);
    }
  }

  /** The requests without a reply of their own. */
  #set(msg: VhostUserMessage): void {
    const { request: req, payload } = msg;
    switch (req) {
      case Req.SET_FEATURES: {
        const f = decodeU64(payload);
        if (f & ~this.#offered) this.log.warn(`QEMU acked features we did not offer: 0x${f.toString(16)}`);
        this.#features = f & this.#offered;
        for (const v of this.#vrings) v.invalidate(); // EVENT_IDX / INDIRECT_DESC shape the ring views
        return;
      }
      case Req.SET_PROTOCOL_FEATURES:
        this.#protocolFeatures = decodeU64(payload) & this.#offeredProtocol;
        return;
      case Req.SET_OWNER:
      case Req.SET_CONFIG: // the config space is the device's; the guest cannot write it
        return;
      case Req.RESET_OWNER:
      case Req.RESET_DEVICE:
        if (this.#live) this.#guestGone(requestName(req));
        for (const v of this.#vrings) v.reset();
        return;
      case Req.SET_MEM_TABLE:
        this.#setMemTable(msg);
        return;
      case Req.SET_VRING_NUM: {
        const s = decodeVringState(payload);
        const v = this.vring(s.index);
        v.invalidate();
        v.num = s.num;
        return;
      }
      case Req.SET_VRING_BASE: {
        const s = decodeVringState(payload);
        const v = this.vring(s.index);
        v.invalidate();
        v.base = s.num & 0xffff;
        return;
      }
      case Req.SET_VRING_ADDR: {
        const a = decodeVringAddr(payload);
        const v = this.vring(a.index);
        v.invalidate();
        v.addr = a;
        return;
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR:
        this.#setVringFd(msg);
        return;
      case Req.SET_VRING_ENABLE: {
        const s = decodeVringState(payload);
        const v = this.vring(s.index);
        v.enabled = s.num !== 0;
        if (!v.enabled) v.dropView();
        this.kick(s.index);
        return;
      }
      default:
        throw new VhostUserProtocolError(`unsupported request ${requestName(req)}`);
    }
  }

  #setMemTable(msg: VhostUserMessage): void {
    const regions = decodeMemoryTable(msg.payload);
    const fds = msg.fds;
    msg.fds = [];
    const mem = this.env.mapMemory(regions, fds); // consumes the fds
    const old = this.#mem;
    this.#mem = mem;
    // Ring views point into the old mapping: rebuild them at the indices reached.
    for (const v of this.#vrings) v.invalidate();
    old?.close();
    this.log.info(`guest memory: ${regions.length} region(s)`);
    for (let i = 0; i < this.#vrings.length; i++) this.kick(i);
  }

  /** SET_VRING_KICK / CALL / ERR: one fd (or NOFD) for one ring. */
  #setVringFd(msg: VhostUserMessage): void {
    const ref = decodeVringFd(msg.payload);
    const v = this.vring(ref.index);
    const [fd = -1, ...extra] = msg.fds;
    for (const f of extra) this.env.close(f);
    msg.fds = [];
    if (ref.noFd) this.env.close(fd);
    const given = ref.noFd ? -1 : fd;
    if (msg.request === Req.SET_VRING_CALL) v.setFd('call', given);
    else if (msg.request === Req.SET_VRING_ERR) v.setFd('err', given);
    else if (given < 0) {
      v.setFd('kick', -1);
      this.log.warn(`queue ${ref.index}: polling mode (no kick fd) is not supported`);
    } else {
      v.setFd('kick', given, () => this.#onKick(ref.index));
      if (!hasBit(this.#features, Feature.VHOST_USER_F_PROTOCOL_FEATURES)) v.enabled = true;
      this.kick(ref.index);
    }
  }

  #replyU64(req: number, v: bigint): void {
    this.env.send(encodeReply(req, encodeU64(v)));
  }

  // ─── queue runs ────────────────────────────────────────────────────────

  #onKick(index: number): void {
    const v = this.#vrings[index];
    if (!v || v.kickFd < 0 || this.#closed) return;
    try {
      this.env.readKick(v.kickFd);
    } catch (err) {
      this.end(`kick fd of queue ${index}: ${(err as Error).message}`, true);
      return;
    }
    this.kick(index);
  }

  /** Schedules a run of queue `index` (a guest kick, or the device's own event). */
  kick(index: number): void {
    if (this.#closed || this.#scheduled[index] !== false) return;
    this.#scheduled[index] = true;
    queueMicrotask(() => this.#run(index));
  }

  #run(index: number): void {
    this.#scheduled[index] = false;
    if (this.#closed) return;
    const v = this.#vrings[index]!;
    if (!v.queue) {
      if (!v.ready(this.#mem, this.#features)) return;
      this.#live = true;
    }
    let more: boolean;
    try {
      more = v.serve(this.device.queue(index), QUEUE_BUDGET);
    } catch (err) {
      this.end(`queue processing failed: ${(err as Error).stack ?? err}`, true);
      return;
    }
    this.device.afterRun?.(index);
    if (more && !this.#closed) {
      this.#scheduled[index] = true;
      setImmediate(() => this.#run(index));
    }
  }

  // ─── teardown ──────────────────────────────────────────────────────────

  #guestGone(reason: string): void {
    this.#live = false;
    try {
      this.device.reset(reason);
    } catch (err) {
      this.log.error(`guestGone failed: ${(err as Error).message}`);
    }
  }

  /** Ends the session: every ring's fds closed, memory unmapped, the device reset. Idempotent. */
  end(reason: string, error = false): void {
    if (this.#closed) return;
    this.#closed = true;
    if (error) this.log.error(reason);
    else this.log.info(reason);
    for (const v of this.#vrings) v.close(); // held chains go back while the memory is mapped
    this.#mem?.close();
    this.#mem = null;
    this.#guestGone(reason);
    this.device.stop();
    this.onEnd();
  }
}
