/**
 * Memory a load used comes back when the load ends (issue 10, item 7),
 * through a real `vmm` (loopback guest): 300 host connections each write
 * 1 MiB to a guest listener that accepts and never reads, so every
 * connection's loopback-guest ring (256 KiB) fills and the vmm's RSS rises
 * by tens of MiB; once the connections are closed on both sides, the RSS is
 * back within 16 MiB of the warmed-up baseline within 5 s, and the fds
 * exactly. Before rings came from a RingSlab, the dead rings waited for a GC
 * and glibc kept what they freed: the RSS stayed ~130 MiB up at release and
 * +25 MiB after the GC came.
 */
import fs from 'node:fs';
import type net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { closeQuietly } from '../../native-bindings/index.js';
import { hybridConnect } from '../../src/broker/hvsock-client.js';
import { StandinVsock } from '../../src/guest-vsock/standin.js';
import type { VsockListener } from '../../src/guest-vsock/types.js';
import { fdCount, fdsSettle, startVmm, stopChild, type Vmm } from '../support/cli.js';
import { waitUntil } from './support.js';

const PORT = 5300;
const CONNECTIONS = 300;
const MARGIN_MIB = 16;

let vmm: Vmm;
let listener: VsockListener;
const guestFds: number[] = [];

const rssMiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

beforeAll(async () => {
  vmm = await startVmm();
  listener = await new StandinVsock(vmm.guestDir).listen(PORT, (s) => guestFds.push(s.fd));
});

afterAll(async () => {
  listener?.close();
  for (const fd of guestFds.splice(0)) closeQuietly(fd);
  if (vmm) {
    await stopChild(vmm.child);
    fs.rmSync(vmm.dir, { recursive: true, force: true });
  }
});

/** `n` connections, each with 1 MiB written that the guest never reads; then all closed on both sides. */
async function stall(n: number, whileStalled: () => Promise<void>): Promise<void> {
  const chunk = Buffer.alloc(1 << 20, 0x61);
  const open: net.Socket[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const { socket } = await hybridConnect(vmm.hvsock, PORT, 10_000);
      socket.on('error', () => {});
      socket.write(chunk);
      open.push(socket);
    }
    await waitUntil(() => guestFds.length >= n, 10_000, `${n} guest accepts`);
    await whileStalled();
  } finally {
    await Promise.all(open.map((s) => new Promise((r) => s.once('close', r).destroy())));
    for (const fd of guestFds.splice(0)) closeQuietly(fd);
  }
}

it('gives back the memory of 300 stalled transfers once they are closed', { timeout: 90_000 }, async () => {
  const fdBaseline = fdCount(vmm.pid);
  await stall(20, async () => {}); // warm-up: code paths, the first slab regions
  expect(await fdsSettle(vmm.pid, fdBaseline, 10_000)).toBe(fdBaseline);
  await new Promise((r) => setTimeout(r, 1000));
  const baseline = rssMiB(vmm.pid);
  let loaded = 0;
  await stall(CONNECTIONS, async () => {
    // 300 full 256 KiB rings: well over 40 MiB once the data has crossed.
    await waitUntil(() => rssMiB(vmm.pid) > baseline + 40, 20_000, 'the rings filling');
    loaded = rssMiB(vmm.pid);
  });
  expect(await fdsSettle(vmm.pid, fdBaseline, 10_000)).toBe(fdBaseline);
  const end = Date.now() + 5000;
  let after = rssMiB(vmm.pid);
  while (after > baseline + MARGIN_MIB && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    after = rssMiB(vmm.pid);
  }
  expect(loaded, `loaded ${loaded.toFixed(1)} MiB, baseline ${baseline.toFixed(1)}`).toBeGreaterThan(
    baseline + 40,
  );
  expect(after, `after ${after.toFixed(1)} MiB, baseline ${baseline.toFixed(1)}`).toBeLessThanOrEqual(
    baseline + MARGIN_MIB,
  );
});
