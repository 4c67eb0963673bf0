/**
 * `vmm --metrics <file>` and `--credit`/`--buf-alloc` with the real CLI
 * process: SIGUSR2 rewrites the metrics file (whole, `seq` counting up)
 * with the device's and the loopback guest's counters after a real
 * transfer through the device, the credit policy the flags chose, and the
 * connection table in the log; bad flag values are refused with a reason.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Captured, exited, spawnCli, startVmm, stopAll, vmmMetrics } from '../support/cli.js';

afterAll(stopAll);

describe('vmm --metrics', () => {
  it('SIGUSR2 writes the counters; a transfer shows up in them', { timeout: 60_000 }, async () => {
    const dir = fs.mkdtempSync(path.join(fs.realpathSync('/tmp'), 'vmm-metrics-'));
    const file = path.join(dir, 'metrics.json');
    const vmm = await startVmm(['--metrics', file]);
    const first = await vmmMetrics(vmm.pid, file, 0);
    expect(first.seq).toBe(1);
    expect(first.pid).toBe(vmm.pid);
    expect(first.credit.bufAlloc).toBeGreaterThan(0);
    expect(first.guest?.counters.toPeer.rw).toBe(0);

    // 1 MiB from a guest process to a host listener, through the device.
    const got: Buffer[] = [];
    const server = net.createServer((c) => c.on('data', (d) => got.push(d)));
    await new Promise<void>((r) => server.listen(`${vmm.hvsock}_7100`, r));
    const conn = spawnCli(['guest', '--guest-dir', vmm.guestDir, 'connect', '7100']);
    conn.stdin!.end(Buffer.alloc(1 << 20, 0x5a));
    expect((await exited(conn)).code).toBe(0);
    const deadline = Date.now() + 30_000;
    while (Buffer.concat(got).length < 1 << 20 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    server.close();

    const second = await vmmMetrics(vmm.pid, file, first.seq);
    expect(second.seq).toBe(2);
    const d = second.device.counters;
    expect(d.fromPeerBytes).toBe(1 << 20);
    expect(d.fromPeer.request).toBe(1);
    expect(d.toPeer.response).toBe(1);
    expect(d.writes + d.writevs).toBeGreaterThan(0);
    expect(second.guest!.counters.toPeerBytes).toBe(1 << 20);
    expect(second.cpu.userS + second.cpu.systemS).toBeGreaterThan(0);
    await vmm.log.waitFor(/device connections \(\d+\)/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('--credit and --buf-alloc choose the window every connection advertises', {
    timeout: 60_000,
  }, async () => {
    const dir = fs.mkdtempSync(path.join(fs.realpathSync('/tmp'), 'vmm-metrics-'));
    const file = path.join(dir, 'metrics.json');
    const fc = await startVmm(['--metrics', file, '--credit', 'firecracker']);
    expect((await vmmMetrics(fc.pid, file, 0)).credit).toEqual({
      bufAlloc: 65536,
      updateAfter: 65536,
      lowWater: 4096,
    });
    const file2 = path.join(dir, 'metrics2.json');
    const sized = await startVmm(['--metrics', file2, '--buf-alloc', '128KiB']);
    expect((await vmmMetrics(sized.pid, file2, 0)).credit).toEqual({
      bufAlloc: 131072,
      updateAfter: 32768,
      lowWater: 32768,
    });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a bad credit policy or window with a reason', { timeout: 60_000 }, async () => {
    for (const [flag, value, reason] of [
      ['--credit', 'bsd', /argument 'bsd' is invalid\. Allowed choices are linux, firecracker/],
      ['--buf-alloc', '12 parsecs', /not a byte size/],
      ['--buf-alloc', '8GiB', /must be under 4 GiB/],
    ] as const) {
      const p = spawnCli(['vmm', '--hvsock', '/tmp/unused.sock', '--guest-dir', '/tmp/unused', flag, value]);
      const err = new Captured(p.stderr);
      expect((await exited(p)).code).not.toBe(0);
      expect(err.text).toMatch(reason);
    }
  });
});
