/**
 * `[hypervisor] max_waiting_clients` sets the cap on clients that connected
 * but have not sent their command (default 256, tested at that value in
 * fd-exhaustion.test.ts): a real vmm started with a config of 8 holds at
 * most 8 of a crowd of 40 idle clients, logs the cap once, and serves a
 * request as soon as the crowd is gone.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { closeQuietly, makePipe } from '../../native-bindings/index.js';
import { passFd } from '../../src/broker/hvsock-client.js';
import { fdCount, fdsSettle, startVmm, stopAll, tmpDir } from '../support/cli.js';

afterAll(async () => {
  await stopAll();
});

describe('max_waiting_clients from the configuration', () => {
  it('a vmm configured for 8 holds at most 8 idle clients, then serves again', async () => {
    const dir = tmpDir('passfd-waiting-cap-');
    const config = path.join(dir, 'config.toml');
    fs.writeFileSync(config, '[hypervisor]\nmax_waiting_clients = 8\n');
    const vmm = await startVmm(['--config', config]);
    const base = fdCount(vmm.pid);
    const crowd = Array.from({ length: 40 }, () => {
      const s = net.connect(vmm.hvsock);
      s.on('error', () => {});
      return s;
    });
    try {
      await vmm.log.waitFor(/8 clients waiting for a command on .*h\.sock \(the cap\)/);
      // Let the rest of the crowd reach the socket: none of it may be accepted.
      await new Promise((r) => setTimeout(r, 300));
      expect(fdCount(vmm.pid)).toBeLessThanOrEqual(base + 8);
      expect(vmm.log.text.match(/clients waiting for a command on .* \(the cap\)/g)).toHaveLength(1);
    } finally {
      for (const s of crowd) s.destroy();
    }
    // Served again: a passfd to a port nobody listens on gets the guest's refusal, not silence.
    const [r, w] = makePipe(true);
    try {
      await expect(passFd(vmm.hvsock, r, 4242, { timeoutMs: 5000 })).rejects.toThrow(
        /the guest refused port 4242/,
      );
    } finally {
      closeQuietly(r);
      closeQuietly(w);
    }
    expect(await fdsSettle(vmm.pid, base)).toBe(base);
  });
});
