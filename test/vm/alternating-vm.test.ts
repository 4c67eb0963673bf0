/**
 * The host → guest stall hunt: one real guest (QEMU, TCG) on this build's
 * `vmm --vhost-user`, raw AF_VSOCK transfers alternating direction
 * (guest → host, host → guest, 12 times each, 8 MiB each, every byte counted
 * at the receiving end) and 64-byte round trips, while a host process keeps
 * one core busy. A transfer that does not finish within 30 s fails the test
 * with the guest console and the `vmm` log kept, the `vmm` having logged its
 * connection table and rings (credit counters, pending RX/TX, ring indices,
 * last kick and call) on SIGUSR2 first (backend-ab.ts). The harness is the
 * backend A/B's (`bench --vm qemu --backend`), so what it measures and what
 * this test runs are one program.
 */
import { spawn } from 'node:child_process';
import { expect, it } from 'vitest';
import { ownBackend, runBackendAb } from '../../src/bench/backend-ab/backend-ab.js';

const MiB = 1 << 20;

it('alternating guest → host and host → guest transfers on one guest under CPU contention never stall', {
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
      transfers: 12,
      trips: 200,
      timeoutMs: 30_000,
      guestTrace: false,
      vm: { accel: 'tcg', cpus: 1, memoryMiB: 512 },
      onProgress: (line) => log.push(line),
    });
    expect(boot!.ok, `${boot!.error} (logs kept: ${boot!.logs})\n${log.join('\n')}`).toBe(true);
    expect(boot!.transfers.map((t) => t.dir)).toEqual(
      Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? 'g2h' : 'h2g')),
    );
    for (const t of boot!.transfers) expect(t.mibps).toBeGreaterThan(0);
    expect(boot!.rtt).toHaveLength(200);
    console.info(log.join('\n'));
  } finally {
    burner.kill('SIGKILL');
  }
});
