/**
 * Real-guest smoke: scripts/vm-smoke.ts boots QEMU (TCG) against `vmm
 * --vhost-user`, twice, with a SIGKILL of the first QEMU mid-transfer.
 * Fails (never skips) when QEMU, the kernel or busybox are missing.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

test('vhost-user-vsock backend against a real QEMU guest', () => {
  const run = (args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'scripts/vm-smoke.ts', ...args], {
      cwd: root,
      encoding: 'utf8',
      timeout: 300_000,
    });
  const bulk = run(['--bulk-mib', '64']);
  expect(bulk.stdout).not.toMatch(/^FAIL/m);
  expect(bulk.status, bulk.stdout + bulk.stderr).toBe(0);
  const kill = run(['--boots', '2', '--bulk-mib', '2048', '--kill-mid-bulk']);
  expect(kill.stdout).not.toMatch(/^FAIL/m);
  expect(kill.status, kill.stdout + kill.stderr).toBe(0);
});
