/**
 * `passfd-broker vmm --vhost-user <socket>`: the real `vmm` process serves a
 * vhost-user-vsock backend socket. A stand-in QEMU (the test's, over the real
 * socket with real memfds) negotiates, reads the guest CID with GET_CONFIG,
 * disconnects, and a second one is served by the same process.
 */
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Captured, exited, spawnCli, stopAll, stopChild, tmpDir, waitForPath } from '../../support/cli.js';
import { FakeQemu } from './qemu-sim.js';

afterAll(stopAll);

describe('vmm --vhost-user', () => {
  it('serves QEMU-style clients one after another and answers GET_CONFIG with the CID', async () => {
    const dir = tmpDir();
    const vu = path.join(dir, 'vu.sock');
    const vmm = spawnCli([
      'vmm',
      '--hvsock',
      path.join(dir, 'h.sock'),
      '--vhost-user',
      vu,
      '--guest-cid',
      '7',
    ]);
    const log = new Captured(vmm.stderr);
    await log.waitFor(/vhost-user-vsock backend on/);
    await waitForPath(vu);
    for (let i = 0; i < 2; i++) {
      const q = new FakeQemu(vu);
      expect(await q.getConfigCid()).toBe(7n);
      q.close();
    }
    expect(await stopChild(vmm)).toBe(0);
  });

  it('refuses to start with both or neither guest', async () => {
    const dir = tmpDir();
    const both = spawnCli([
      'vmm',
      '--hvsock',
      path.join(dir, 'h.sock'),
      '--vhost-user',
      'x',
      '--guest-dir',
      dir,
    ]);
    const err = new Captured(both.stderr);
    expect((await exited(both)).code).toBe(1);
    expect(err.text).toMatch(/exactly one guest/);
  });
});
