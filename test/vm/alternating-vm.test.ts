/**
 * The stall hunt: one real guest (QEMU, TCG) on this build's `vmm
 * --vhost-user`, raw AF_VSOCK transfers alternating direction (guest →
 * host, host → guest, 24 times each, 8 MiB each, every byte counted at the
 * receiving end, per connection) and connection count (each pair of
 * transfers over 1, 4 or 8 connections at once sharing the bytes, cycling),
 * then 64-byte round trips, while a host process keeps one core busy. A
 * transfer during which no byte moves for 10 s (or that takes over 60 s in
 * all) fails the test with the `vmm`'s connection table and rings (credit
 * counters, pending RX/TX, ring indices, last kick and call), which it logs
 * on SIGUSR2 (backend-ab.ts), in the failure message; the guest console
 * and the whole `vmm` log are kept in a file. The harness is the backend
 * A/B's (`bench --vm qemu --backend`), so what it measures and what this
 * test runs are one program.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { expect, it } from 'vitest';
import { ownBackend, runBackendAb } from '../../src/bench/backend-ab/backend-ab.js';

const MiB = 1 << 20;
const CONNECTIONS = [1, 4, 8];
const TRANSFERS = 24;

/** The `vmm`'s last connection-table dump from a kept log (the state the stall left), for the failure message. */
function lastTableDump(logs: string | undefined): string {
  if (!logs || !fs.existsSync(logs)) return '(no logs kept)';
  const text = fs.readFileSync(logs, 'utf8');
  const backend = text.slice(text.indexOf('===== backend =====')).split('\n');
  const at = backend.findLastIndex((line) => line.includes('device connections ('));
  return backend.slice(at < 0 ? -40 : at, (at < 0 ? backend.length : at) + 80).join('\n');
}

it('alternating directions and connection counts on one guest under CPU contention never stall', {
  timeout: 420_000,
}, async () => {
  // Contention, bounded: a busy loop that ends on its own after 5 min, and is killed when the test ends.
  const burner = spawn(
    process.execPath,
    ['-e', 'const end = Date.now() + 300000; while (Date.now() < end);'],
    {
      stdio: 'ignore',
    },
  );
  const log: string[] = [];
  try {
    const [boot] = await runBackendAb({
      backends: [ownBackend()],
      boots: 1,
      bytes: 8 * MiB,
      transfers: TRANSFERS,
      connections: CONNECTIONS,
      trips: 200,
      timeoutMs: 60_000,
      stallMs: 10_000,
      guestTrace: false,
      vm: { accel: 'tcg', cpus: 1, memoryMiB: 512 },
      onProgress: (line) => log.push(line),
    });
    expect(
      boot!.ok,
      `${boot!.error} (logs kept: ${boot!.logs})\n${log.join('\n')}\n${lastTableDump(boot!.logs)}`,
    ).toBe(true);
    expect(boot!.transfers.map((t) => `${t.dir}×${t.connections}`)).toEqual(
      Array.from(
        { length: 2 * TRANSFERS },
        (_, i) => `${i % 2 === 0 ? 'g2h' : 'h2g'}×${CONNECTIONS[Math.floor(i / 2) % CONNECTIONS.length]}`,
      ),
    );
    for (const t of boot!.transfers) expect(t.mibps).toBeGreaterThan(0);
    expect(boot!.rtt).toHaveLength(200);
    console.info(log.join('\n'));
  } finally {
    burner.kill('SIGKILL');
  }
});
