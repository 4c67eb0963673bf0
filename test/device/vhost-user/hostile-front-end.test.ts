/**
 * A hostile vhost-user front-end against the real `vmm --vhost-user`
 * process (issue 10, items 5 and 6), written here with the stand-in QEMU of
 * qemu-sim.ts over the real socket and real memfds:
 * - memory tables that would make the backend fault (a region larger than
 *   its memfd, an mmap_offset past its end, a memfd that cannot be sealed)
 *   are refused with a logged error; a sealable memfd gets F_SEAL_SHRINK, so
 *   the front-end's later truncate fails instead of killing the vmm;
 * - a guest driver that puts a head index of 50 in a ring of 8 loses its
 *   device (err eventfd signalled: DEVICE_NEEDS_RESET, its connections
 *   reset, one log line), while the session, the vmm and the next front-end
 *   carry on.
 * After each case the vmm is alive and back at its fd baseline.
 */
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventfdRead, truncateFd } from '../../../native-bindings/index.js';
import { encodeVringState, Req } from '../../../src/device/transport/vhost-user/messages.js';
import {
  Captured,
  fdCount,
  fdsSettle,
  spawnCli,
  stopAll,
  stopChild,
  tmpDir,
  waitForPath,
} from '../../support/cli.js';
import { FakeQemu, qemuMemoryTable, RAM, type RamSeals, until } from './qemu-sim.js';

const CID = 3;
const HOST_PORT = 5600;

let vmm: ChildProcess;
let log: Captured;
let vu: string;
let hvsock: string;
let baseline: number;
const hostSide: net.Socket[] = [];
let server: net.Server;

beforeAll(async () => {
  const dir = tmpDir();
  vu = path.join(dir, 'vu.sock');
  hvsock = path.join(dir, 'h.sock');
  server = net.createServer((s) => {
    hostSide.push(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(`${hvsock}_${HOST_PORT}`, r));
  vmm = spawnCli(['vmm', '--hvsock', hvsock, '--vhost-user', vu, '--guest-cid', String(CID)], {
    env: { ...process.env, PASSFD_LOG: 'info' },
  });
  log = new Captured(vmm.stderr);
  await waitForPath(vu);
  // Warm up: one full session, then take the fd baseline.
  const q = new FakeQemu(vu);
  await q.boot();
  await connectFromGuest(q, 40000);
  q.close();
  await log.waitFor(/QEMU disconnected/);
  await new Promise((r) => setTimeout(r, 300));
  baseline = fdCount(vmm.pid!);
});

afterAll(async () => {
  for (const s of hostSide) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
  if (vmm) await stopChild(vmm);
  await stopAll();
});

function alive(): void {
  expect(vmm.exitCode).toBeNull();
  expect(vmm.signalCode).toBeNull();
}

/** A guest connection to HOST_PORT from `guestPort`, established; returns the host's socket. */
async function connectFromGuest(q: FakeQemu, guestPort: number): Promise<net.Socket> {
  const before = hostSide.length;
  await q.connectToHost(CID, guestPort, HOST_PORT);
  await until(() => hostSide.length > before, 'the host listener to accept');
  return hostSide.at(-1)!;
}

/** After a case: the vmm lives, serves a fresh front-end end to end, and is back at its fd baseline. */
async function servesAgain(): Promise<void> {
  alive();
  const q = new FakeQemu(vu);
  try {
    await q.boot();
    await connectFromGuest(q, 41000 + Math.floor(Math.random() * 1000));
  } finally {
    q.close();
  }
  expect(await fdsSettle(vmm.pid!, baseline, 5000)).toBeLessThanOrEqual(baseline);
  alive();
}

describe('a hostile vhost-user front-end: guest memory', () => {
  const refused: [string, RamSeals, () => ReturnType<typeof qemuMemoryTable>, RegExp][] = [
    [
      'a region larger than its memfd',
      'qemu',
      () => {
        const t = qemuMemoryTable();
        t[1]!.memorySize += BigInt(RAM);
        return t;
      },
      /memory region 1 .* ends past its fd's 0x200000 bytes/,
    ],
    [
      'an mmap_offset past the end of its memfd',
      'qemu',
      () => {
        const t = qemuMemoryTable();
        t[1]!.mmapOffset = BigInt(4 * RAM);
        return t;
      },
      /memory region 1 \(mmap_offset 0x800000 .* ends past its fd's/,
    ],
    [
      'a memfd that cannot be sealed against shrinking',
      'none',
      qemuMemoryTable,
      /memory region 0: its file cannot be sealed against shrinking/,
    ],
  ];

  it.each(refused)(
    '%s: SET_MEM_TABLE refused with a logged error, nothing mapped',
    async (_, seals, table, why) => {
      const q = new FakeQemu(vu, seals);
      try {
        await expect(q.boot(undefined, table())).rejects.toThrow(/closed the socket/);
        const line = await log.waitFor(new RegExp(`error .*vhost-user error: ${why.source}`));
        expect(line[0]).toMatch(why);
      } finally {
        q.close();
      }
      await servesAgain();
    },
  );

  it('a sealable memfd is sealed by the backend: the front-end cannot shrink it under the vmm', async () => {
    const q = new FakeQemu(vu, 'sealable');
    try {
      await q.boot();
      await log.waitFor(/memory region 0: sealed its memfd against shrinking/);
      expect(() => truncateFd(q.memfd, 4096)).toThrow(/EPERM/);
      await connectFromGuest(q, 42000); // the backend still reads and writes all of it
    } finally {
      q.close();
    }
    await servesAgain();
  });
});

describe('a hostile guest driver: bad descriptor head', () => {
  it('head 50 in a ring of 8: that device needs reset, its connections are reset; the session and the next front-end carry on', async () => {
    const q = new FakeQemu(vu);
    try {
      await q.boot();
      const host = await connectFromGuest(q, 43000);
      const hostClosed = new Promise<void>((r) => host.once('close', () => r()));
      // The driver publishes a head index outside its ring of 8.
      const slot = q.tx.avail + 4 + 2 * (q.tx.availIdx % 8);
      q.ram.writeUInt16LE(50, slot);
      q.tx.availIdx = (q.tx.availIdx + 1) & 0xffff;
      q.ram.writeUInt16LE(q.tx.availIdx, q.tx.avail + 2);
      q.tx.doorbell();
      await log.waitFor(
        /error .*the guest driver broke the virtio rules \(tx queue: head index 50 outside a queue of 8\): device needs reset/,
      );
      await hostClosed; // the guest's connection was reset, its host socket closed
      await until(() => q.errFds.every((fd) => eventfdRead(fd) !== null), 'the err eventfds (NEEDS_RESET)');
      expect(log.text.match(/broke the virtio rules/g)).toHaveLength(1);
      alive();
      // The session is still there: the front-end stops the rings, as QEMU does when the guest resets the device.
      for (const i of [0, 1]) {
        const r = await q.call(Req.GET_VRING_BASE, encodeVringState({ index: i, num: 0 }));
        expect(r.payload.length).toBe(8);
      }
      await log.waitFor(/device reset by the front-end after: tx queue: head index 50/);
    } finally {
      q.close();
    }
    await servesAgain();
  });
});
