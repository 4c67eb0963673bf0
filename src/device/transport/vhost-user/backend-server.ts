import {
  closeQuietly,
  eventfdRead,
  eventfdWrite,
  FdWatcher,
  recvWithFds,
  WOULD_BLOCK,
  writeFd,
} from '../../../../native-bindings/index.js';
import { UnixListener } from '../../../net/unix-listener.js';
import type { Logger } from '../../../util/log.js';
import type { GuestTransport, VsockBackend } from '../transport.js';
import { GuestMemory } from './guest-memory.js';
import {
  bits,
  decodeConfig,
  decodeMemoryTable,
  decodeU64,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  encodeReply,
  encodeU64,
  encodeVringState,
  Feature,
  hasBit,
  MAX_FDS_PER_MESSAGE,
  MAX_PAYLOAD_SIZE,
  MessageDecoder,
  needsReply,
  ProtocolFeature,
  Req,
  requestName,
  type VhostUserMessage,
  VhostUserProtocolError,
  type VringAddr,
  vsockConfigReply,
} from './messages.js';
import { SplitVirtqueue } from './virtqueue.js';
import { RX_QUEUE, TX_QUEUE, VSOCK_QUEUE_COUNT, VsockQueues } from './vsock-queues.js';

/** Virtio features offered: VERSION_1, PROTOCOL_FEATURES, INDIRECT_DESC, EVENT_IDX. */
export const OFFERED_FEATURES = bits(
  Feature.VIRTIO_F_VERSION_1,
  Feature.VHOST_USER_F_PROTOCOL_FEATURES,
  Feature.VIRTIO_RING_F_INDIRECT_DESC,
  Feature.VIRTIO_RING_F_EVENT_IDX,
);
/** Protocol features offered: CONFIG (GET_CONFIG answers the CID), MQ (GET_QUEUE_NUM), REPLY_ACK. */
export const OFFERED_PROTOCOL_FEATURES = bits(
  ProtocolFeature.CONFIG,
  ProtocolFeature.MQ,
  ProtocolFeature.REPLY_ACK,
);

export interface VhostUserVsockOptions {
  socketPath: string;
  guestCid: number;
  log: Logger;
}

/** One ring's setup as QEMU sent it. */
class Vring {
  num = 0;
  base = 0;
  addr: VringAddr | null = null;
  kickFd = -1;
  kickWatcher: FdWatcher | null = null;
  callFd = -1;
  errFd = -1;
  enabled = false;
  queue: SplitVirtqueue | null = null;
  /** The ring could not be built over guest memory: logged once, ignored until set up again. */
  failed = false;

  closeKick(): void {
    this.kickWatcher?.close();
    this.kickWatcher = null;
    closeQuietly(this.kickFd);
    this.kickFd = -1;
  }

  close(): void {
    this.closeKick();
    closeQuietly(this.callFd);
    closeQuietly(this.errFd);
    this.callFd = -1;
    this.errFd = -1;
    this.enabled = false;
    this.queue = null;
  }
}

/** One QEMU connection. */
class Session {
  readonly #decoder = new MessageDecoder();
  readonly #readBuf = Buffer.allocUnsafe(MAX_PAYLOAD_SIZE + 12);
  readonly #watcher: FdWatcher;
  readonly #vrings: Vring[] = Array.from({ length: VSOCK_QUEUE_COUNT }, () => new Vring());
  readonly #queues: VsockQueues;
  #mem: GuestMemory | null = null;
  #features = 0n;
  #protocolFeatures = 0n;
  /** The guest has used the device since it was set up: a stop is "the guest went away". */
  #live = false;
  #closed = false;
  #rxScheduled = false;
  #txScheduled = false;

  constructor(
    readonly fd: number,
    private readonly guestCid: number,
    private readonly backend: VsockBackend,
    private readonly log: Logger,
    private readonly onEnd: (s: Session) => void,
  ) {
    this.#queues = new VsockQueues(backend, log, (i) => this.#notify(i));
    this.#watcher = new FdWatcher(fd, () => this.#onReadable());
    this.#watcher.want(true, false);
  }

  get queues(): VsockQueues {
    return this.#queues;
  }

  // ─── control socket ────────────────────────────────────────────────────

  #onReadable(): void {
    if (this.#closed) return;
    try {
      for (;;) {
        const want = this.#decoder.bytesWanted();
        const got = recvWithFds(this.fd, this.#readBuf, MAX_FDS_PER_MESSAGE, 0, want);
        if (got === null) return;
        if (got.truncated || got.surplus > 0) {
          for (const f of got.fds) closeQuietly(f);
          throw new VhostUserProtocolError('too many fds with one message');
        }
        if (got.bytes === 0 && got.fds.length === 0) {
          this.end('QEMU disconnected');
          return;
        }
        this.#decoder.push(Buffer.from(this.#readBuf.subarray(0, got.bytes)), got.fds);
        for (let msg = this.#decoder.next(); msg; msg = this.#decoder.next()) {
          this.#handle(msg);
          if (this.#closed) return;
        }
      }
    } catch (err) {
      this.end(`vhost-user error: ${(err as Error).message}`, true);
    }
  }

  #send(buf: Buffer): void {
    const n = writeFd(this.fd, buf);
    if (n === WOULD_BLOCK || n !== buf.length) {
      throw new VhostUserProtocolError(`could not write a ${buf.length}-byte reply (${n})`);
    }
  }

  #replyU64(req: number, v: bigint): void {
    this.#send(encodeReply(req, encodeU64(v)));
  }

  #vring(index: number): Vring {
    const v = this.#vrings[index];
    if (!v) throw new VhostUserProtocolError(`queue index ${index} (this device has ${VSOCK_QUEUE_COUNT})`);
    return v;
  }

  /** Takes the single fd a message must carry (closing any extras); -1 when none came. */
  #oneFd(msg: VhostUserMessage): number {
    const [fd = -1, ...extra] = msg.fds;
    for (const f of extra) closeQuietly(f);
    msg.fds = [];
    return fd;
  }

  #handle(msg: VhostUserMessage): void {
    const { request: req, payload } = msg;
    this.log.debug(`<- ${requestName(req)} (${payload.length} bytes, ${msg.fds.length} fds)`);
    /** Whether the request has its own reply (then REPLY_ACK adds none). */
    let replied = false;
    try {
      switch (req) {
        case Req.GET_FEATURES:
          this.#replyU64(req, OFFERED_FEATURES);
          replied = true;
          break;
        case Req.SET_FEATURES: {
          const f = decodeU64(payload);
          if (f & ~OFFERED_FEATURES)
            this.log.warn(`QEMU acked features we did not offer: 0x${f.toString(16)}`);
          this.#features = f & OFFERED_FEATURES;
          // EVENT_IDX / INDIRECT_DESC shape the ring views: rebuild them.
          for (const v of this.#vrings) this.#reset(v);
          break;
        }
        case Req.GET_PROTOCOL_FEATURES:
          this.#replyU64(req, OFFERED_PROTOCOL_FEATURES);
          replied = true;
          break;
        case Req.SET_PROTOCOL_FEATURES:
          this.#protocolFeatures = decodeU64(payload) & OFFERED_PROTOCOL_FEATURES;
          break;
        case Req.GET_QUEUE_NUM:
          this.#replyU64(req, BigInt(VSOCK_QUEUE_COUNT));
          replied = true;
          break;
        case Req.SET_OWNER:
          break;
        case Req.RESET_OWNER:
        case Req.RESET_DEVICE:
          this.#stopAll(`${requestName(req)}`);
          break;
        case Req.SET_MEM_TABLE: {
          const regions = decodeMemoryTable(payload);
          const fds = msg.fds;
          msg.fds = [];
          const mem = GuestMemory.map(regions, fds); // consumes the fds
          const old = this.#mem;
          this.#mem = mem;
          // Ring views point into the old mapping: rebuild them at the indices reached.
          for (const v of this.#vrings) {
            if (v.queue) v.base = v.queue.lastAvailIdx;
            v.queue = null;
            v.failed = false;
          }
          this.#syncQueues();
          old?.close();
          this.log.info(`guest memory: ${regions.length} region(s)`);
          this.#kickAll();
          break;
        }
        case Req.SET_VRING_NUM: {
          const s = decodeVringState(payload);
          const v = this.#vring(s.index);
          v.num = s.num;
          this.#reset(v);
          break;
        }
        case Req.SET_VRING_BASE: {
          const s = decodeVringState(payload);
          const v = this.#vring(s.index);
          v.base = s.num & 0xffff;
          this.#reset(v);
          break;
        }
        case Req.SET_VRING_ADDR: {
          const a = decodeVringAddr(payload);
          const v = this.#vring(a.index);
          v.addr = a;
          this.#reset(v);
          break;
        }
        case Req.GET_VRING_BASE: {
          const s = decodeVringState(payload);
          const v = this.#vring(s.index);
          const base = v.queue ? v.queue.lastAvailIdx : v.base;
          // Stopping a ring the guest was using: the guest is going away.
          if (this.#live) this.#guestGone('guest stopped the device');
          v.closeKick();
          v.enabled = false;
          v.base = base;
          v.queue = null;
          this.#syncQueues();
          this.#send(encodeReply(req, encodeVringState({ index: s.index, num: base })));
          replied = true;
          break;
        }
        case Req.SET_VRING_KICK: {
          const ref = decodeVringFd(payload);
          const v = this.#vring(ref.index);
          const fd = this.#oneFd(msg);
          v.closeKick();
          if (ref.noFd || fd < 0) {
            closeQuietly(fd);
            this.log.warn(`queue ${ref.index}: polling mode (no kick fd) is not supported`);
            break;
          }
          v.kickFd = fd;
          v.kickWatcher = new FdWatcher(fd, () => this.#onKick(ref.index));
          v.kickWatcher.want(true, false);
          if (!hasBit(this.#features, Feature.VHOST_USER_F_PROTOCOL_FEATURES)) v.enabled = true;
          this.#kick(ref.index);
          break;
        }
        case Req.SET_VRING_CALL: {
          const ref = decodeVringFd(payload);
          const v = this.#vring(ref.index);
          const fd = this.#oneFd(msg);
          closeQuietly(v.callFd);
          v.callFd = ref.noFd ? -1 : fd;
          if (ref.noFd) closeQuietly(fd);
          break;
        }
        case Req.SET_VRING_ERR: {
          const ref = decodeVringFd(payload);
          const v = this.#vring(ref.index);
          const fd = this.#oneFd(msg);
          closeQuietly(v.errFd);
          v.errFd = ref.noFd ? -1 : fd;
          if (ref.noFd) closeQuietly(fd);
          break;
        }
        case Req.SET_VRING_ENABLE: {
          const s = decodeVringState(payload);
          const v = this.#vring(s.index);
          v.enabled = s.num !== 0;
          if (!v.enabled) {
            if (v.queue) v.base = v.queue.lastAvailIdx;
            v.queue = null;
            this.#syncQueues();
          }
          this.#kick(s.index);
          break;
        }
        case Req.GET_CONFIG:
          this.#send(vsockConfigReply(decodeConfig(payload), BigInt(this.guestCid)));
          replied = true;
          break;
        case Req.SET_CONFIG:
          // The CID is ours to decide; the guest cannot write the config space.
          break;
        default:
          throw new VhostUserProtocolError(`unsupported request ${requestName(req)}`);
      }
    } finally {
      for (const f of msg.fds) closeQuietly(f);
      msg.fds = [];
    }
    if (!replied && needsReply(msg) && hasBit(this.#protocolFeatures, ProtocolFeature.REPLY_ACK)) {
      this.#replyU64(req, 0n);
    }
  }

  // ─── rings ─────────────────────────────────────────────────────────────

  /** A ring's setup changed: drop its view (rebuilt at the next kick). */
  #reset(v: Vring): void {
    if (v.queue) v.base = v.queue.lastAvailIdx;
    v.queue = null;
    v.failed = false;
    this.#syncQueues();
  }

  /** The ring for processing, built on first use; null while it is not ready. */
  #ready(index: number): SplitVirtqueue | null {
    const v = this.#vrings[index]!;
    if (v.queue) return v.queue;
    if (!v.enabled || v.kickFd < 0 || !v.addr || !this.#mem || v.num === 0 || v.failed) return null;
    try {
      v.queue = new SplitVirtqueue(this.#mem, {
        size: v.num,
        descAddr: v.addr.descUserAddr,
        availAddr: v.addr.availUserAddr,
        usedAddr: v.addr.usedUserAddr,
        base: v.base,
        indirect: hasBit(this.#features, Feature.VIRTIO_RING_F_INDIRECT_DESC),
        eventIdx: hasBit(this.#features, Feature.VIRTIO_RING_F_EVENT_IDX),
      });
    } catch (err) {
      v.failed = true;
      this.log.error(`queue ${index} cannot be set up: ${(err as Error).message}`);
      if (v.errFd >= 0) eventfdWrite(v.errFd);
      return null;
    }
    this.#live = true;
    this.#syncQueues();
    return v.queue;
  }

  #syncQueues(): void {
    this.#queues.rx = this.#vrings[RX_QUEUE]!.queue;
    this.#queues.tx = this.#vrings[TX_QUEUE]!.queue;
  }

  #onKick(index: number): void {
    const v = this.#vrings[index];
    if (!v || v.kickFd < 0 || this.#closed) return;
    try {
      eventfdRead(v.kickFd);
    } catch (err) {
      this.end(`kick fd of queue ${index}: ${(err as Error).message}`, true);
      return;
    }
    this.#kick(index);
  }

  #kickAll(): void {
    for (let i = 0; i < VSOCK_QUEUE_COUNT; i++) this.#kick(i);
  }

  #kick(index: number): void {
    if (index === RX_QUEUE) this.scheduleRx();
    else this.#scheduleTx();
  }

  scheduleRx(): void {
    if (this.#rxScheduled || this.#closed) return;
    this.#rxScheduled = true;
    queueMicrotask(() => this.#runRx());
  }

  #scheduleTx(): void {
    if (this.#txScheduled || this.#closed) return;
    this.#txScheduled = true;
    queueMicrotask(() => this.#runTx());
  }

  #runRx(): void {
    this.#rxScheduled = false;
    if (this.#closed || !this.#ready(RX_QUEUE)) return;
    if (this.#guard(() => this.#queues.processRx())) {
      this.#rxScheduled = true;
      setImmediate(() => this.#runRx());
    }
  }

  #runTx(): void {
    this.#txScheduled = false;
    if (this.#closed || !this.#ready(TX_QUEUE)) return;
    const more = this.#guard(() => this.#queues.processTx());
    // Guest packets usually make replies due (credit, RESPONSE): fill RX too.
    this.scheduleRx();
    if (more) {
      this.#txScheduled = true;
      setImmediate(() => this.#runTx());
    }
  }

  #guard(fn: () => boolean): boolean {
    try {
      return fn();
    } catch (err) {
      this.end(`queue processing failed: ${(err as Error).stack ?? err}`, true);
      return false;
    }
  }

  #notify(index: number): void {
    const fd = this.#vrings[index]?.callFd ?? -1;
    if (fd < 0) return;
    try {
      eventfdWrite(fd);
    } catch (err) {
      this.log.warn(`call fd of queue ${index}: ${(err as Error).message}`);
    }
  }

  // ─── teardown ──────────────────────────────────────────────────────────

  #guestGone(reason: string): void {
    this.#live = false;
    try {
      this.backend.guestGone?.(reason);
    } catch (err) {
      this.log.error(`guestGone failed: ${(err as Error).message}`);
    }
  }

  #stopAll(reason: string): void {
    if (this.#live) this.#guestGone(reason);
    for (const v of this.#vrings) {
      v.closeKick();
      v.enabled = false;
      v.queue = null;
      v.base = 0;
    }
    this.#syncQueues();
  }

  /** Ends the session: guestGone, every watcher and fd closed, memory unmapped. Idempotent. */
  end(reason: string, error = false): void {
    if (this.#closed) return;
    this.#closed = true;
    if (error) this.log.error(reason);
    else this.log.info(reason);
    this.#queues.rx = null;
    this.#queues.tx = null;
    this.#watcher.close();
    for (const v of this.#vrings) v.close();
    for (const f of this.#decoder.takeFds()) closeQuietly(f);
    closeQuietly(this.fd);
    this.#mem?.close();
    this.#mem = null;
    this.#live = false;
    try {
      this.backend.guestGone?.(reason);
    } catch (err) {
      this.log.error(`guestGone failed: ${(err as Error).message}`);
    }
    this.onEnd(this);
  }
}

export class VhostUserVsockTransport implements GuestTransport {
  readonly kind = 'vhost-user';
  readonly guestCid: number;
  readonly socketPath: string;
  readonly #log: Logger;
  #backend: VsockBackend | null = null;
  #listener: UnixListener | null = null;
  #session: Session | null = null;
  #closed = false;
  /** QEMU connections served so far. */
  sessions = 0;

  constructor(opts: VhostUserVsockOptions) {
    this.guestCid = opts.guestCid;
    this.socketPath = opts.socketPath;
    this.#log = opts.log;
  }

  /** Whether a QEMU is connected. */
  get connected(): boolean {
    return this.#session !== null;
  }

  /** The current session's queue statistics (null without a QEMU). */
  get stats(): VsockQueues['stats'] | null {
    return this.#session?.queues.stats ?? null;
  }

  /** Starts listening on the socket path (a stale socket file there is replaced). */
  attach(backend: VsockBackend): void {
    if (this.#backend) throw new Error('vhost-user transport already attached');
    this.#backend = backend;
    backend.onRxPending = () => this.#session?.scheduleRx();
    // Backlog 8: QEMU does not retry a refused connect, and one is served at a time.
    this.#listener = new UnixListener(
      this.socketPath,
      (fd) => this.#accept(fd),
      (err) => this.#log.error(`accept: ${err.message}`),
      8,
    );
    this.#log.info(`vhost-user-vsock backend listening on ${this.socketPath} (guest CID ${this.guestCid})`);
  }

  #accept(fd: number): void {
    if (this.#closed || this.#session || !this.#backend) {
      closeQuietly(fd);
      return;
    }
    this.#listener?.pause(); // one QEMU at a time: the next waits in the backlog
    this.sessions++;
    this.#log.info(`QEMU connected (session ${this.sessions})`);
    try {
      this.#session = new Session(fd, this.guestCid, this.#backend, this.#log, (s) => this.#ended(s));
    } catch (err) {
      closeQuietly(fd);
      this.#log.error(`cannot serve QEMU: ${(err as Error).message}`);
      this.#listener?.resume();
    }
  }

  #ended(s: Session): void {
    if (this.#session !== s) return;
    this.#session = null;
    if (!this.#closed) {
      this.#listener?.resume();
      // A QEMU may already be waiting in the backlog.
      setImmediate(() => this.#listener?.acceptAll());
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#session?.end('backend closing');
    this.#listener?.close();
    this.#listener = null;
  }
}
