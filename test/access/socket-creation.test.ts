/**
 * Socket creation, checked with another real uid (setpriv) against a real
 * `vmm`: a client of another uid connecting in a tight loop from before the
 * `vmm` starts, in a world-writable directory, under umask 000, never gets
 * in to the hybrid-vsock socket, the loopback guest's vsock.sock or the
 * vhost-user socket; each is 0600 when it appears.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopAll, tmpDir } from '../support/cli.js';
import { asOtherUser, modeOf, requireRoot, resultOf, stopStarted, vmmUnderUmask } from './support.js';

beforeAll(() => requireRoot());

afterAll(async () => {
  await stopStarted();
  await stopAll();
});

describe('socket creation', () => {
  it('another uid racing connects from before bind never gets in (umask 000, world-writable dir)', async () => {
    const dir = tmpDir('passfd-access-');
    fs.chmodSync(dir, 0o1777); // like /tmp
    const hvsock = path.join(dir, 'h.sock');
    const guestDir = path.join(dir, 'guest');
    fs.mkdirSync(guestDir);
    fs.chmodSync(guestDir, 0o777); // only the socket's own mode protects vsock.sock
    const vuHvsock = path.join(dir, 'vu-h.sock');
    const vuSock = path.join(dir, 'vu.sock');
    const stop = path.join(dir, 'stop');
    const paths = [hvsock, path.join(guestDir, 'vsock.sock'), vuHvsock, vuSock];
    const racer = asOtherUser(['race', stop, ...paths]);
    await racer.out.waitFor(/"racing"/);

    await vmmUnderUmask('000', ['--hvsock', hvsock, '--guest-dir', guestDir], /AF_VSOCK stand-in at/);
    await vmmUnderUmask('000', ['--hvsock', vuHvsock, '--vhost-user', vuSock], /start QEMU with/);
    for (const p of paths) expect(modeOf(p), p).toBe(0o600);
    await new Promise((r) => setTimeout(r, 300)); // the racer keeps trying on the live sockets
    fs.writeFileSync(stop, '');
    const { outcomes } = (await resultOf(racer)) as { outcomes: Record<string, Record<string, number>> };
    for (const p of paths) {
      expect(outcomes[p], p).toBeDefined();
      expect(outcomes[p]!.connected ?? 0, `${p}: ${JSON.stringify(outcomes[p])}`).toBe(0);
      // It did reach the file, and the kernel said no.
      expect(outcomes[p]!.EACCES ?? 0, `${p}: ${JSON.stringify(outcomes[p])}`).toBeGreaterThan(0);
    }
  });
});
