/**
 * The device's memory per connection is bounded by the receive window it
 * advertises (`buf_alloc`, 256 KiB by default): with 64 guest connections
 * whose host readers never read, each connection's TxBuf fills to exactly
 * its window and no further (the guest's credit runs out, its writers
 * block), and the `vmm` process's RSS grows by no more than that (real
 * `vmm` process, real sockets, `vmm --metrics` and /proc/<pid>/status).
 * The single stalled FIFO reader with 64 MiB behind it is
 * hybrid-device.test.ts's.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { closeQuietly, setNonBlocking, WOULD_BLOCK, writeFd } from '../../native-bindings/index.js';
import { LINUX_CREDIT } from '../../src/device/defaults.js';
import { StandinVsock } from '../../src/guest-vsock/standin.js';
import { startVmm, stopAll, vmmMetrics } from '../support/cli.js';

afterAll(stopAll);

const CONNS = 64;
const MiB = 1 << 20;

const rss = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

it(`${CONNS} stalled host readers: each connection holds at most its window, and RSS grows by no more`, {
  timeout: 120_000,
}, async () => {
  const file = path.join(fs.realpathSync('/tmp'), `mb-${process.pid}.json`);
  const vmm = await startVmm(['--metrics', file]);
  const hostPort = 7300;
  const held: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.pause(); // accepted, never read
    held.push(s);
  });
  await new Promise<void>((r) => server.listen(`${vmm.hvsock}_${hostPort}`, r));
  const guest = new StandinVsock(vmm.guestDir);
  const base = await vmmMetrics(vmm.pid, file, 0);
  const rssBefore = rss(vmm.pid);

  const fds: number[] = [];
  const chunk = Buffer.alloc(64 * 1024, 0x42);
  try {
    for (let i = 0; i < CONNS; i++) {
      const { fd } = await guest.connect(hostPort);
      setNonBlocking(fd, true);
      fds.push(fd);
    }
    // Every guest writer pushes until it would block, again and again, until nothing moves any more.
    let quiet = 0;
    for (let round = 0; round < 600 && quiet < 10; round++) {
      let moved = 0;
      for (const fd of fds) {
        for (let n = writeFd(fd, chunk); n !== WOULD_BLOCK; n = writeFd(fd, chunk)) moved += n;
      }
      quiet = moved === 0 ? quiet + 1 : 0;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(quiet, 'the writers stopped: the device holds nothing more').toBe(10);

    const m = await vmmMetrics(vmm.pid, file, base.seq);
    const window = LINUX_CREDIT.bufAlloc;
    expect(m.credit.bufAlloc).toBe(window);
    expect(m.device.open).toBe(CONNS);
    // Each connection's host reader is full, so each TxBuf took exactly its window.
    expect(m.device.held).toBe(CONNS * window);
    expect(m.device.bufferMemory).toBe(CONNS * window);
    const grew = rss(vmm.pid) - rssBefore;
    // The rings (16 MiB here) plus slack for V8 and the event loop; not the bytes the writers still hold.
    expect(grew).toBeLessThan(CONNS * window + 24 * MiB);
  } finally {
    for (const fd of fds) closeQuietly(fd);
    for (const s of held) s.destroy();
    server.close();
    fs.rmSync(file, { force: true });
  }
});
