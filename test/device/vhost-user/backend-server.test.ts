/**
 * The vhost-user-vsock backend against a simulated QEMU + guest driver
 * (qemu-sim.ts): real Unix socket, real memfd guest memory passed with
 * SCM_RIGHTS, real kick/call eventfds, rings built by the test.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bits, Feature, ProtocolFeature } from '../../../src/device/transport/vhost-user/features.js';
import { encodeVringState, Req } from '../../../src/device/transport/vhost-user/messages.js';
import { TRANSPORT_FEATURES } from '../../../src/device/transport/vhost-user/session.js';
import { VIRTQ_DESC_F_WRITE } from '../../../src/device/transport/vhost-user/virtqueue.js';
import { VhostUserVsockTransport } from '../../../src/device/transport/vhost-user/vsock-transport.js';
import { makeHeader, VSOCK_HDR_SIZE, VsockOp } from '../../../src/protocol/vsock-packet.js';
import { createLogger } from '../../../src/util/log.js';
import { ioTurns } from '../io-turns.js';
import { FakeBackend, FakeQemu, RAM, until } from './qemu-sim.js';

const CID = 42;

let dir: string;
let lines: string[];
let transport: VhostUserVsockTransport;
let backend: FakeBackend;
const qemus: FakeQemu[] = [];

function qemu(): FakeQemu {
  const q = new FakeQemu(transport.socketPath);
  qemus.push(q);
  return q;
}

const fromGuest = (len = 0) =>
  makeHeader({ srcCid: CID, dstCid: 2, srcPort: 1234, dstPort: 1024, op: VsockOp.RW, len, bufAlloc: 65536 });
const toGuest = (op: VsockOp = VsockOp.RW) =>
  makeHeader({ srcCid: 2, dstCid: CID, srcPort: 1024, dstPort: 1234, op, bufAlloc: 262144, fwdCnt: 7 });

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhu-'));
  lines = [];
  transport = new VhostUserVsockTransport({
    socketPath: path.join(dir, 'vhost.sock'),
    guestCid: CID,
    log: createLogger('vhost-user', (l) => lines.push(l)),
  });
  backend = new FakeBackend();
  transport.attach(backend);
});

afterEach(async () => {
  for (const q of qemus.splice(0)) q.close();
  await transport.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('vhost-user-vsock backend: control path', () => {
  it('offers the features QEMU needs, two queues, and answers GET_CONFIG with the CID', async () => {
    const q = qemu();
    const f = (await q.call(Req.GET_FEATURES)).payload.readBigUInt64LE(0);
    expect(f).toBe(TRANSPORT_FEATURES);
    for (const b of [
      Feature.VIRTIO_F_VERSION_1,
      Feature.VHOST_USER_F_PROTOCOL_FEATURES,
      Feature.VIRTIO_RING_F_EVENT_IDX,
      Feature.VIRTIO_RING_F_INDIRECT_DESC,
    ]) {
      expect(f & bits(b)).not.toBe(0n);
    }
    const pf = (await q.call(Req.GET_PROTOCOL_FEATURES)).payload.readBigUInt64LE(0);
    expect(pf).toBe(bits(ProtocolFeature.CONFIG, ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK));
    expect((await q.call(Req.GET_QUEUE_NUM)).payload.readBigUInt64LE(0)).toBe(2n);
    expect(await q.getConfigCid()).toBe(BigInt(CID));
    expect(transport.connected).toBe(true);
  });

  it('boots through the whole QEMU 7.2 sequence and acks need-reply requests', async () => {
    const q = qemu();
    await q.boot();
    expect(backend.gone).toEqual([]);
  });

  it('QEMU disconnecting calls guestGone, and the next QEMU is served', async () => {
    const q1 = qemu();
    await q1.boot();
    const q2 = qemu(); // waits in the backlog while q1 is connected
    q1.disconnect();
    await until(() => backend.gone.length > 0, 'guestGone');
    expect(backend.gone[0]).toMatch(/disconnected/);
    await q2.boot();
    expect(await q2.getConfigCid()).toBe(BigInt(CID));
    expect(transport.sessions).toBe(2);
    // The second guest's rings work.
    q2.sendPacket(fromGuest(), Buffer.from('again'));
    await until(() => backend.received.length === 1, 'a packet from the second guest');
  });

  it('a session leaves no fd behind once QEMU is gone', async () => {
    const count = () => fs.readdirSync('/proc/self/fd').length;
    const before = count();
    const q = qemu();
    await q.boot();
    q.sendPacket(fromGuest(), Buffer.from('x'));
    await until(() => backend.received.length === 1, 'a packet');
    q.close();
    await until(() => !transport.connected, 'the session to end');
    await until(() => count() === before || null, `fd count back to ${before}`);
  });

  it('GET_VRING_BASE stops a used ring, reports its index and tells the backend the guest is gone', async () => {
    const q = qemu();
    await q.boot();
    q.sendPacket(fromGuest(), Buffer.from('a'));
    q.sendPacket(fromGuest(), Buffer.from('b'));
    await until(() => backend.received.length === 2, 'two packets');
    q.send(Req.SET_VRING_ENABLE, encodeVringState({ index: 1, num: 0 }));
    const r = await q.call(Req.GET_VRING_BASE, encodeVringState({ index: 1, num: 0 }));
    expect(r.payload.readUInt32LE(0)).toBe(1);
    expect(r.payload.readUInt32LE(4)).toBe(2);
    expect(backend.gone).toHaveLength(1);
    // A kick on the stopped ring does nothing (its kick fd is not watched any more).
    q.sendPacket(fromGuest(), Buffer.from('c'));
    await ioTurns(3);
    expect(backend.received).toHaveLength(2);
  });

  it('a broken stream ends the session without crashing, and a new QEMU can connect', async () => {
    const q = qemu();
    await q.boot();
    const bad = Buffer.alloc(12);
    bad.writeUInt32LE(Req.GET_FEATURES, 0);
    bad.writeUInt32LE(0x7, 4); // version 3
    q.sendRaw(bad);
    await until(() => !transport.connected, 'the session to end');
    expect(lines.join('')).toMatch(/bad vhost-user version/);
    const q2 = qemu();
    expect(await q2.getConfigCid()).toBe(BigInt(CID));
  });
});

describe('vhost-user-vsock backend: data path', () => {
  it('a TX packet (header + payload descriptors) reaches handlePacket, and the chain is returned', async () => {
    const q = qemu();
    await q.boot();
    const data = Buffer.from('hello from the guest');
    const head = q.sendPacket(fromGuest(), data);
    await until(() => backend.received.length === 1, 'handlePacket');
    const got = backend.received[0]!;
    expect(got.hdr).toMatchObject({ srcCid: CID, dstCid: 2, srcPort: 1234, dstPort: 1024, op: VsockOp.RW });
    expect(got.hdr.len).toBe(data.length);
    expect(got.data).toEqual(data);
    await until(() => q.tx.usedIdx() === 1, 'used entry');
    expect(q.tx.takeUsed()).toEqual([{ id: head, len: 0 }]);
    await until(() => q.tx.interrupted(), 'tx interrupt');
  });

  it('TX: contiguous packets, control packets, and payloads spanning descriptors', async () => {
    const q = qemu();
    await q.boot();
    q.sendPacket(fromGuest(), Buffer.from('contiguous'), true);
    q.sendPacket(makeHeader({ ...fromGuest(), op: VsockOp.REQUEST }));
    // Payload split over two descriptors after a 44-byte header descriptor.
    const a = q.alloc(64);
    const b = q.alloc(64);
    const hdrAt = q.alloc(VSOCK_HDR_SIZE);
    q.ram.fill(0x61, a, a + 5);
    q.ram.fill(0x62, b, b + 5);
    const { encodeHeader } = await import('../../../src/protocol/vsock-packet.js');
    encodeHeader({ ...fromGuest(10) }, q.ram, hdrAt);
    q.tx.offer([
      { addr: hdrAt, len: VSOCK_HDR_SIZE },
      { addr: a, len: 5 },
      { addr: b, len: 5 },
    ]);
    q.tx.doorbell();
    await until(() => backend.received.length === 3, 'three packets');
    expect(backend.received[0]!.data?.toString()).toBe('contiguous');
    expect(backend.received[1]!.hdr.op).toBe(VsockOp.REQUEST);
    expect(backend.received[1]!.data).toBeUndefined();
    expect(backend.received[2]!.data?.toString()).toBe('aaaaabbbbb');
    expect(transport.stats?.copies).toBe(1);
  });

  it('backend packets land in the guest RX buffers and the call eventfd fires', async () => {
    const q = qemu();
    await q.boot();
    const b1 = q.postRx(4096);
    const b2 = q.postRx(4096, true);
    q.rx.doorbell();
    const payload = Buffer.alloc(3000, 0x5a);
    backend.queue(toGuest(), payload);
    backend.queue(toGuest(VsockOp.CREDIT_UPDATE));
    await until(() => q.rx.usedIdx() === 2, 'two used rx buffers');
    expect(q.rx.takeUsed()).toEqual([
      { id: b1.head, len: VSOCK_HDR_SIZE + 3000 },
      { id: b2.head, len: VSOCK_HDR_SIZE },
    ]);
    const p1 = q.readRx(b1);
    expect(p1.hdr).toMatchObject({ srcCid: 2, dstCid: CID, op: VsockOp.RW, len: 3000, fwdCnt: 7 });
    expect(p1.data.equals(payload)).toBe(true);
    expect(q.readRx(b2).hdr.op).toBe(VsockOp.CREDIT_UPDATE);
    await until(() => q.rx.interrupted(), 'rx interrupt');
    expect(transport.stats?.copies).toBe(0);
  });

  it('packets due before the guest posts buffers wait, and go out on the RX kick', async () => {
    const q = qemu();
    await q.boot();
    backend.queue(toGuest(), Buffer.from('early'));
    await ioTurns(3);
    expect(q.rx.usedIdx()).toBe(0);
    const b = q.postRx(4096);
    q.rx.doorbell();
    await until(() => q.rx.usedIdx() === 1, 'the waiting packet');
    expect(q.readRx(b).data.toString()).toBe('early');
    expect(backend.outbox).toHaveLength(0);
  });

  it('RX buffers whose payload area spans descriptors are filled through a copy', async () => {
    const q = qemu();
    await q.boot();
    const h = q.alloc(20);
    const h2 = q.alloc(24);
    const d1 = q.alloc(10);
    const d2 = q.alloc(100);
    q.rx.offer([
      { addr: h, len: 20, flags: VIRTQ_DESC_F_WRITE },
      { addr: h2, len: 24, flags: VIRTQ_DESC_F_WRITE },
      { addr: d1, len: 10, flags: VIRTQ_DESC_F_WRITE },
      { addr: d2, len: 100, flags: VIRTQ_DESC_F_WRITE },
    ]);
    q.rx.doorbell();
    backend.queue(toGuest(), Buffer.from('0123456789abcdef'));
    await until(() => q.rx.usedIdx() === 1, 'used');
    expect(q.rx.takeUsed()[0]!.len).toBe(VSOCK_HDR_SIZE + 16);
    const hdr = Buffer.concat([q.ram.subarray(h, h + 20), q.ram.subarray(h2, h2 + 24)]);
    const { decodeHeader } = await import('../../../src/protocol/vsock-packet.js');
    expect(decodeHeader(hdr).len).toBe(16);
    expect(q.ram.subarray(d1, d1 + 10).toString()).toBe('0123456789');
    expect(q.ram.subarray(d2, d2 + 6).toString()).toBe('abcdef');
  });

  it('a descriptor pointing outside guest memory is logged and skipped, not a crash', async () => {
    const q = qemu();
    await q.boot();
    const bad = q.tx.offer([{ addr: RAM + 0x1000, len: 64 }]);
    const inHole = q.tx.offer([{ addr: 0xb0000, len: 64 }]);
    q.tx.doorbell();
    q.sendPacket(fromGuest(), Buffer.from('still alive'));
    await until(() => backend.received.length === 1, 'the good packet');
    expect(backend.received[0]!.data?.toString()).toBe('still alive');
    await until(() => q.tx.usedIdx() === 3, 'three used');
    const used = q.tx.takeUsed();
    expect(used.slice(0, 2)).toEqual([
      { id: bad, len: 0 },
      { id: inHole, len: 0 },
    ]);
    const log = lines.join('');
    expect(log).toMatch(/dropped a malformed packet.*outside guest memory/);
    expect(transport.connected).toBe(true);
    expect(transport.stats?.dropped).toBe(2);
  });

  it('a malformed header (bad op, len beyond the chain) is logged and skipped', async () => {
    const q = qemu();
    await q.boot();
    const { encodeHeader } = await import('../../../src/protocol/vsock-packet.js');
    const a = q.alloc(64);
    encodeHeader({ ...fromGuest(), op: 99 }, q.ram, a);
    q.tx.offer([{ addr: a, len: VSOCK_HDR_SIZE }]);
    const b = q.alloc(64);
    encodeHeader({ ...fromGuest(1000) }, q.ram, b);
    q.tx.offer([{ addr: b, len: VSOCK_HDR_SIZE + 10 }]);
    q.tx.doorbell();
    await until(() => q.tx.usedIdx() === 2, 'both returned');
    expect(backend.received).toHaveLength(0);
    expect(transport.stats?.dropped).toBe(2);
    q.sendPacket(fromGuest(), Buffer.from('ok'));
    await until(() => backend.received.length === 1, 'the good packet');
  });

  it('works with EVENT_IDX and INDIRECT_DESC negotiated', async () => {
    const q = qemu();
    await q.boot(TRANSPORT_FEATURES);
    for (let i = 0; i < 5; i++) q.sendPacket(fromGuest(), Buffer.from(`p${i}`));
    await until(() => backend.received.length === 5, 'five packets');
    // The device publishes avail_event so the driver keeps kicking.
    expect(q.ram.readUInt16LE(q.tx.used + 4 + 8 * 8)).toBe(5);
    const b = q.postRx(4096);
    q.rx.doorbell();
    backend.queue(toGuest(), Buffer.from('evt'));
    await until(() => q.rx.usedIdx() === 1, 'rx used');
    expect(q.readRx(b).data.toString()).toBe('evt');
    await until(() => q.rx.interrupted(), 'rx interrupt');
  });
});
