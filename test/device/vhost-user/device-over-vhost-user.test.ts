/**
 * The real device core (HybridVsockDevice and its VsockEndpoint) behind the
 * vhost-user transport, with the simulated QEMU + guest driver of
 * qemu-sim.ts speaking virtio-vsock in guest memory: a guest connection to
 * host port P reaches a host listener on `<hvsock>_<P>`, bytes flow both
 * ways through the rings, and QEMU going away resets the connection.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { HybridVsockDevice } from '../../../src/device/hybrid-device.js';
import { VhostUserVsockTransport } from '../../../src/device/transport/vhost-user/vsock-transport.js';
import { makeHeader, type VsockHeader, VsockOp } from '../../../src/protocol/vsock-packet.js';
import { createLogger } from '../../../src/util/log.js';
import { FakeQemu, until } from './qemu-sim.js';

const CID = 3;
const HOST_PORT = 5555;
const GUEST_PORT = 40000;

let dir: string;
let device: HybridVsockDevice;
let transport: VhostUserVsockTransport;
let qemu: FakeQemu | null = null;
let server: net.Server | null = null;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhu-dev-'));
  const log = createLogger('test', () => {});
  device = new HybridVsockDevice({ hvsockPath: path.join(dir, 'hvsock'), guestCid: CID, log });
  transport = new VhostUserVsockTransport({ socketPath: path.join(dir, 'vhost.sock'), guestCid: CID, log });
  device.start(transport);
});

afterEach(async () => {
  qemu?.close();
  qemu = null;
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = null;
  await device.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

const guestHdr = (op: VsockOp, fwdCnt = 0) =>
  makeHeader({
    srcCid: CID,
    dstCid: 2,
    srcPort: GUEST_PORT,
    dstPort: HOST_PORT,
    op,
    bufAlloc: 256 * 1024,
    fwdCnt,
  });

it('a guest connection reaches <hvsock>_<P>, and bytes flow both ways through guest memory', async () => {
  const accepted: net.Socket[] = [];
  const hostGot: Buffer[] = [];
  server = net.createServer((s) => {
    accepted.push(s);
    s.on('data', (d) => hostGot.push(d));
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server!.listen(path.join(dir, `hvsock_${HOST_PORT}`), r));

  const q = new FakeQemu(transport.socketPath);
  qemu = q;
  await q.boot();
  const rxBufs = Array.from({ length: 4 }, () => q.postRx(4096));
  q.rx.doorbell();

  /** Packets the device put in the guest's RX buffers so far, in order. */
  const seen: { hdr: VsockHeader; data: Buffer }[] = [];
  let taken = 0;
  const pump = () => {
    for (const u of q.rx.takeUsed()) {
      const b = rxBufs.find((x) => x.head === u.id)!;
      seen.push(q.readRx(b));
      taken++;
      // Recycle the buffer, as the driver does.
      rxBufs.splice(rxBufs.indexOf(b), 1);
      rxBufs.push(q.postRx(4096));
      q.rx.doorbell();
    }
    return taken;
  };

  q.sendPacket(guestHdr(VsockOp.REQUEST));
  await until(() => pump() >= 1 && seen[0], 'RESPONSE');
  expect(seen[0]!.hdr).toMatchObject({
    op: VsockOp.RESPONSE,
    srcCid: 2,
    dstCid: CID,
    srcPort: HOST_PORT,
    dstPort: GUEST_PORT,
  });
  await until(() => accepted.length === 1, 'the host listener to accept');

  // guest → host
  q.sendPacket(guestHdr(VsockOp.RW), Buffer.from('ping from the guest'));
  await until(() => Buffer.concat(hostGot).toString() === 'ping from the guest', 'bytes at the host');

  // host → guest: the device reads the socket straight into the RX buffer
  accepted[0]!.write('pong from the host');
  await until(() => {
    pump();
    return seen.some((p) => p.hdr.op === VsockOp.RW);
  }, 'RW in the guest');
  const rw = seen.find((p) => p.hdr.op === VsockOp.RW)!;
  expect(rw.data.toString()).toBe('pong from the host');
  expect(rw.hdr.dstPort).toBe(GUEST_PORT);
  expect(transport.stats?.copies).toBe(0);
  expect(device.endpoint.size).toBe(1);

  // QEMU dies: the connection is reset and the host side sees the end.
  const hostClosed = new Promise<void>((r) => accepted[0]!.on('close', () => r()));
  q.disconnect();
  await hostClosed;
  expect(device.endpoint.size).toBe(0);
  await until(() => !transport.connected, 'the session to end');

  // And the next QEMU is served.
  q.close();
  qemu = new FakeQemu(transport.socketPath);
  await qemu.boot();
  expect(await qemu.getConfigCid()).toBe(BigInt(CID));
});

it('a guest connection to a port nobody listens on is answered with RST', async () => {
  const q = new FakeQemu(transport.socketPath);
  qemu = q;
  await q.boot();
  const b = q.postRx(4096);
  q.rx.doorbell();
  q.sendPacket(guestHdr(VsockOp.REQUEST));
  await until(() => q.rx.usedIdx() === 1, 'a reply');
  expect(q.readRx(b).hdr).toMatchObject({ op: VsockOp.RST, dstPort: GUEST_PORT });
});
