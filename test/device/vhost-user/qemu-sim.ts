/**
 * A test double that plays QEMU and the guest's virtio-vsock driver against
 * the vhost-user backend: the vhost-user messages QEMU 7.2 sends, with real
 * memfd guest memory (two regions with a hole, as QEMU's pc machine gives),
 * real kick/call eventfds, and split rings the "driver" builds itself in that
 * memory. Packets are placed and read the way Linux 6.1's driver does it
 * (a 44-byte header descriptor plus a payload descriptor).
 */
import {
  closeQuietly,
  connectUnix,
  dupFd,
  eventfd,
  eventfdRead,
  eventfdWrite,
  type Mapping,
  memfdCreate,
  mmapShared,
  readFd,
  sendWithFds,
  WOULD_BLOCK,
} from '../../../native-bindings/index.js';
import type { VsockBackend } from '../../../src/device/transport/transport.js';
import { bits, Feature, ProtocolFeature } from '../../../src/device/transport/vhost-user/features.js';
import {
  decodeHeader as decodeMsgHeader,
  encodeConfig,
  encodeMemoryTable,
  encodeRequest,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  FLAG_REPLY,
  HEADER_SIZE,
  Req,
} from '../../../src/device/transport/vhost-user/messages.js';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../../src/device/transport/vhost-user/virtqueue.js';
import {
  decodeHeader,
  encodeHeader,
  VSOCK_HDR_SIZE,
  type VsockHeader,
} from '../../../src/protocol/vsock-packet.js';

export const RAM = 2 << 20;
/** QEMU's user address of guest-physical 0. */
export const UVA = 0x7f12_3400_0000;
export const HOLE_START = 0xa0000;
export const HOLE_END = 0xc0000;
export const QSIZE = 8;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a value other than null/undefined/false. */
export async function until<T>(
  probe: () => T | null | undefined | false,
  what: string,
  ms = 3000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

export interface Desc {
  addr: number;
  len: number;
  flags?: number;
}

/** The guest driver's side of one split queue, rings at guest-physical `base`. */
export class DriverQueue {
  availIdx = 0;
  seenUsed = 0;
  nextDesc = 0;
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  /** Real eventfds for a real backend; -1 when the test fakes them (session tests without fds). */
  readonly kick: number;
  call: number;

  constructor(
    readonly ram: Buffer,
    base: number,
    eventfds = true,
  ) {
    this.kick = eventfds ? eventfd() : -1;
    this.call = eventfds ? eventfd() : -1;
    this.desc = base;
    this.avail = base + 0x1000;
    this.used = base + 0x2000;
  }

  /** Writes a chain of descriptors (linked with NEXT) and makes it available; returns the head. */
  offer(descs: Desc[]): number {
    const idxs = descs.map(() => {
      const i = this.nextDesc;
      this.nextDesc = (this.nextDesc + 1) % QSIZE;
      return i;
    });
    descs.forEach((d, k) => {
      const o = this.desc + 16 * idxs[k]!;
      const last = k === descs.length - 1;
      this.ram.writeBigUInt64LE(BigInt(d.addr), o);
      this.ram.writeUInt32LE(d.len, o + 8);
      this.ram.writeUInt16LE((d.flags ?? 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), o + 12);
      this.ram.writeUInt16LE(last ? 0 : idxs[k + 1]!, o + 14);
    });
    const head = idxs[0]!;
    this.ram.writeUInt16LE(head, this.avail + 4 + 2 * (this.availIdx % QSIZE));
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.ram.writeUInt16LE(this.availIdx, this.avail + 2);
    return head;
  }

  doorbell(): void {
    eventfdWrite(this.kick);
  }

  usedIdx(): number {
    return this.ram.readUInt16LE(this.used + 2);
  }

  /** The used entries the device added since the last call. */
  takeUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const idx = this.usedIdx();
    while (this.seenUsed !== idx) {
      const o = this.used + 4 + 8 * (this.seenUsed % QSIZE);
      out.push({ id: this.ram.readUInt32LE(o), len: this.ram.readUInt32LE(o + 4) });
      this.seenUsed = (this.seenUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Whether the call eventfd was signalled (reads and resets it). */
  interrupted(): boolean {
    return eventfdRead(this.call) !== null;
  }

  close(): void {
    closeQuietly(this.kick);
    closeQuietly(this.call);
  }
}

export interface Reply {
  request: number;
  flags: number;
  payload: Buffer;
}

/** QEMU plus the guest driver. */
export class FakeQemu {
  readonly sock: number;
  readonly memfd: number;
  readonly map: Mapping;
  readonly rx: DriverQueue;
  readonly tx: DriverQueue;
  /** Next free guest-physical address for packet buffers. */
  #bufTop = 0x100000;

  constructor(socketPath: string) {
    this.sock = connectUnix(socketPath, true);
    this.memfd = memfdCreate('fake-guest-ram', RAM);
    this.map = mmapShared(this.memfd, 0, RAM);
    this.rx = new DriverQueue(this.ram, HOLE_END);
    this.tx = new DriverQueue(this.ram, HOLE_END + 0x4000);
  }

  get ram(): Buffer {
    return this.map.view;
  }

  /** `len` bytes of guest RAM for a packet buffer. */
  alloc(len: number): number {
    const a = this.#bufTop;
    this.#bufTop += (len + 63) & ~63;
    return a;
  }

  send(req: number, payload?: Buffer, fds: number[] = [], needReply = false): void {
    const msg = encodeRequest(req, payload, needReply);
    const n = sendWithFds(this.sock, msg, fds);
    if (n !== msg.length) throw new Error(`short send ${n}`);
  }

  /** Sends raw bytes (for malformed-stream tests). */
  sendRaw(bytes: Buffer): void {
    sendWithFds(this.sock, bytes, []);
  }

  async reply(): Promise<Reply> {
    const head = Buffer.alloc(HEADER_SIZE);
    await this.#readExactly(head);
    const h = decodeMsgHeader(head);
    const payload = Buffer.alloc(h.size);
    await this.#readExactly(payload);
    return { request: h.request, flags: h.flags, payload };
  }

  async #readExactly(buf: Buffer): Promise<void> {
    let got = 0;
    await until(() => {
      while (got < buf.length) {
        const n = readFd(this.sock, buf, got, buf.length - got);
        if (n === WOULD_BLOCK) return false;
        if (n === 0) throw new Error('backend closed the socket');
        got += n;
      }
      return true;
    }, 'a vhost-user reply');
  }

  async call(req: number, payload?: Buffer): Promise<Reply> {
    this.send(req, payload);
    const r = await this.reply();
    if (r.request !== req || (r.flags & FLAG_REPLY) === 0) throw new Error(`bad reply to ${req}`);
    return r;
  }

  /** A request with need-reply: resolves with the u64 status (0 = success). */
  async acked(req: number, payload?: Buffer, fds: number[] = []): Promise<bigint> {
    this.send(req, payload, fds, true);
    const r = await this.reply();
    if (r.request !== req) throw new Error(`ack for ${r.request}, expected ${req}`);
    return r.payload.readBigUInt64LE(0);
  }

  async getConfigCid(): Promise<bigint> {
    const r = await this.call(
      Req.GET_CONFIG,
      encodeConfig({ offset: 0, flags: 0, payload: Buffer.alloc(8) }),
    );
    return r.payload.readBigUInt64LE(12);
  }

  /** QEMU 7.2's start-up messages, then the guest driver's set-up of both rings, in the order QEMU sends them. */
  async boot(
    features = bits(Feature.VIRTIO_F_VERSION_1, Feature.VHOST_USER_F_PROTOCOL_FEATURES),
  ): Promise<void> {
    await this.call(Req.GET_FEATURES);
    await this.call(Req.GET_PROTOCOL_FEATURES);
    this.send(
      Req.SET_PROTOCOL_FEATURES,
      encodeU64(bits(ProtocolFeature.CONFIG, ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK)),
    );
    await this.call(Req.GET_QUEUE_NUM);
    this.send(Req.SET_OWNER);
    await this.call(Req.GET_FEATURES);
    for (const q of [0, 1]) {
      const early = eventfd();
      this.send(Req.SET_VRING_CALL, encodeVringFd({ index: q, noFd: false }), [early]);
      closeQuietly(early);
      const err = eventfd();
      this.send(Req.SET_VRING_ERR, encodeVringFd({ index: q, noFd: false }), [err]);
      closeQuietly(err);
    }
    await this.getConfigCid();
    // The guest driver loads.
    this.send(Req.SET_FEATURES, encodeU64(features));
    const low = this.memfd;
    const high = dupFd(this.memfd);
    const table = encodeMemoryTable([
      { guestPhysAddr: 0n, memorySize: BigInt(HOLE_START), userspaceAddr: BigInt(UVA), mmapOffset: 0n },
      {
        guestPhysAddr: BigInt(HOLE_END),
        memorySize: BigInt(RAM - HOLE_END),
        userspaceAddr: BigInt(UVA + HOLE_END),
        mmapOffset: BigInt(HOLE_END),
      },
    ]);
    const st = await this.acked(Req.SET_MEM_TABLE, table, [low, high]);
    closeQuietly(high);
    if (st !== 0n) throw new Error(`SET_MEM_TABLE failed: ${st}`);
    for (const [i, q] of [this.rx, this.tx].entries()) {
      this.send(Req.SET_VRING_NUM, encodeVringState({ index: i, num: QSIZE }));
      this.send(Req.SET_VRING_BASE, encodeVringState({ index: i, num: 0 }));
      this.send(
        Req.SET_VRING_ADDR,
        encodeVringAddr({
          index: i,
          flags: 0,
          descUserAddr: BigInt(UVA + q.desc),
          usedUserAddr: BigInt(UVA + q.used),
          availUserAddr: BigInt(UVA + q.avail),
          logGuestAddr: 0n,
        }),
      );
      this.send(Req.SET_VRING_KICK, encodeVringFd({ index: i, noFd: false }), [q.kick]);
    }
    for (const i of [0, 1]) this.send(Req.SET_VRING_ENABLE, encodeVringState({ index: i, num: 1 }));
    // The new call fds are the ones that interrupt.
    for (const [i, q] of [this.rx, this.tx].entries()) {
      this.send(Req.SET_VRING_CALL, encodeVringFd({ index: i, noFd: false }), [q.call]);
    }
    const st2 = await this.acked(Req.SET_OWNER); // a barrier: everything above is handled
    if (st2 !== 0n) throw new Error('barrier failed');
  }

  /** Guest to host: a header descriptor and a payload descriptor, as Linux 6.1 sends. */
  sendPacket(hdr: VsockHeader, data?: Buffer, contiguous = false): number {
    const len = data?.length ?? 0;
    const h = { ...hdr, len };
    if (contiguous) {
      const a = this.alloc(VSOCK_HDR_SIZE + len);
      encodeHeader(h, this.ram, a);
      data?.copy(this.ram, a + VSOCK_HDR_SIZE);
      const head = this.tx.offer([{ addr: a, len: VSOCK_HDR_SIZE + len }]);
      this.tx.doorbell();
      return head;
    }
    const ha = this.alloc(VSOCK_HDR_SIZE);
    encodeHeader(h, this.ram, ha);
    const descs: Desc[] = [{ addr: ha, len: VSOCK_HDR_SIZE }];
    if (data && len > 0) {
      const da = this.alloc(len);
      data.copy(this.ram, da);
      descs.push({ addr: da, len });
    }
    const head = this.tx.offer(descs);
    this.tx.doorbell();
    return head;
  }

  /** Posts a receive buffer: a 44-byte header descriptor and a `size`-byte buffer (or one contiguous one). */
  postRx(size = 4096, contiguous = false): { head: number; at: number; dataAt: number } {
    if (contiguous) {
      const a = this.alloc(VSOCK_HDR_SIZE + size);
      const head = this.rx.offer([{ addr: a, len: VSOCK_HDR_SIZE + size, flags: VIRTQ_DESC_F_WRITE }]);
      return { head, at: a, dataAt: a + VSOCK_HDR_SIZE };
    }
    const ha = this.alloc(VSOCK_HDR_SIZE);
    const da = this.alloc(size);
    const head = this.rx.offer([
      { addr: ha, len: VSOCK_HDR_SIZE, flags: VIRTQ_DESC_F_WRITE },
      { addr: da, len: size, flags: VIRTQ_DESC_F_WRITE },
    ]);
    return { head, at: ha, dataAt: da };
  }

  readRx(buf: { at: number; dataAt: number }): { hdr: VsockHeader; data: Buffer } {
    const hdr = decodeHeader(this.ram, buf.at);
    return { hdr, data: Buffer.from(this.ram.subarray(buf.dataAt, buf.dataAt + hdr.len)) };
  }

  /** Drops the connection, as a QEMU that exits or is killed. */
  disconnect(): void {
    closeQuietly(this.sock);
  }

  close(): void {
    this.disconnect();
    this.rx.close();
    this.tx.close();
    closeQuietly(this.memfd);
    this.map.unmap();
  }
}

/** The device core as the transport sees it, scripted by the test. */
export class FakeBackend implements VsockBackend {
  received: { hdr: VsockHeader; data?: Buffer }[] = [];
  outbox: { hdr: VsockHeader; data?: Buffer }[] = [];
  gone: string[] = [];
  onRxPending: () => void = () => {};

  handlePacket(hdr: VsockHeader, data?: Buffer): void {
    this.received.push(data ? { hdr, data: Buffer.from(data) } : { hdr });
  }

  nextPacket(buf: Buffer): VsockHeader | null {
    const p = this.outbox.shift();
    if (!p) return null;
    const len = p.data?.length ?? 0;
    if (len > buf.length) throw new Error(`test packet of ${len} bytes for a ${buf.length}-byte buffer`);
    p.data?.copy(buf);
    return { ...p.hdr, len };
  }

  hasPendingRx(): boolean {
    return this.outbox.length > 0;
  }

  queue(hdr: VsockHeader, data?: Buffer): void {
    const was = this.outbox.length === 0;
    this.outbox.push(data ? { hdr, data } : { hdr });
    if (was) this.onRxPending();
  }

  guestGone(reason: string): void {
    this.gone.push(reason);
  }
}
