/**
 * SO_PEERCRED on the device's sockets, checked with another real uid
 * (setpriv) against a real `vmm`: with the file modes opened up (0666), a
 * peer that is not allowed is still refused with one log line naming its
 * uid, gid and pid; `allowed_uids` and `allowed_gids` (supplementary groups
 * too) let it in.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnCli, stopAll, tmpDir } from '../support/cli.js';
import {
  asOtherUser,
  EXTRA_GID,
  hypervisorConfig,
  OTHER_GID,
  OTHER_UID,
  requireRoot,
  resultOf,
  stopStarted,
  vmmUnderUmask,
} from './support.js';

/** A directory anyone may create files in, like /tmp. */
function worldWritableDir(): string {
  const d = tmpDir('passfd-access-');
  fs.chmodSync(d, 0o1777);
  return d;
}

beforeAll(() => requireRoot());

afterAll(async () => {
  await stopStarted();
  await stopAll();
});

describe('peer credentials (SO_PEERCRED)', () => {
  /** A vmm whose sockets are opened up to everyone (0666), so only its peer check stands in the way. */
  async function openedUpVmm(config?: string) {
    const dir = worldWritableDir();
    const hvsock = path.join(dir, 'h.sock');
    const guestDir = path.join(dir, 'guest');
    const vmm = await vmmUnderUmask(
      '022',
      ['--hvsock', hvsock, '--guest-dir', guestDir, ...(config ? ['--config', config] : [])],
      /AF_VSOCK stand-in at/,
      'debug',
    );
    fs.chmodSync(guestDir, 0o755);
    fs.chmodSync(hvsock, 0o666);
    fs.chmodSync(path.join(guestDir, 'vsock.sock'), 0o666);
    // A guest process listening on 1027, so an admitted CONNECT gets its OK.
    const listener = spawnCli(['guest', '--guest-dir', guestDir, 'listen', '1027']);
    listener.stdin!.on('error', () => {});
    await vmm.log.waitFor(/guest process listens on port 1027/);
    return { ...vmm, hvsock, guestDir, dir };
  }

  it('refuses a peer that is not allowed, with one log line (uid, gid, pid, socket), on both sockets', async () => {
    const vmm = await openedUpVmm();
    const client = asOtherUser(['connect', vmm.hvsock, 'CONNECT 1027']);
    const r = await resultOf(client);
    expect(r).toMatchObject({ reply: '', uid: OTHER_UID });
    const line = await vmm.log.waitFor(new RegExp(`refused a connection on ${vmm.hvsock} from .*`));
    expect(line[0]).toContain(`uid ${OTHER_UID} gid ${OTHER_GID} pid ${r.pid}`);
    expect(vmm.log.text.match(/refused a connection/g)).toHaveLength(1);

    const standin = path.join(vmm.guestDir, 'vsock.sock');
    const r2 = await resultOf(asOtherUser(['connect', standin, 'LISTEN 5000']));
    expect(r2.reply).toBe('');
    await vmm.log.waitFor(
      new RegExp(`refused a connection on ${standin} from uid ${OTHER_UID} .*pid ${r2.pid}`),
    );
  });

  it('allowed_uids lets the other uid in: CONNECT gets OK', async () => {
    const conf = hypervisorConfig(worldWritableDir(), [`allowed_uids = [${OTHER_UID}]`]);
    const vmm = await openedUpVmm(conf);
    const r = await resultOf(asOtherUser(['connect', vmm.hvsock, 'CONNECT 1027']));
    expect(r.reply).toMatch(/^OK \d+\n/);
    expect(vmm.log.text).not.toMatch(/refused a connection/);
  });

  it('allowed_gids admits a supplementary group, and only with it', async () => {
    const conf = hypervisorConfig(worldWritableDir(), [`allowed_gids = [${EXTRA_GID}]`]);
    const vmm = await openedUpVmm(conf);
    const without = await resultOf(asOtherUser(['connect', vmm.hvsock, 'CONNECT 1027']));
    expect(without.reply).toBe('');
    await vmm.log.waitFor(new RegExp(`refused a connection on .* pid ${without.pid}`));
    const withGroup = await resultOf(asOtherUser(['connect', vmm.hvsock, 'CONNECT 1027'], [EXTRA_GID]));
    expect(withGroup.reply).toMatch(/^OK \d+\n/);
  });
});
