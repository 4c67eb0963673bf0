/**
 * Guest-initiated connections (`<hvsock>_<P>`) reach only listeners the
 * access policy allows, checked with real listeners of another uid
 * (setpriv) against a real `vmm`: a socket planted by another user, a
 * listener whose file looks allowed (setgid directory) but whose process is
 * not, a symlink, and a port outside `guest_connect_ports` are refused with
 * one log line each; an allowed listener of another uid and listed ports
 * work end to end.
 */

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Captured, exited, spawnCli, stopAll, tmpDir } from '../support/cli.js';
import {
  asOtherUser,
  EXTRA_GID,
  hypervisorConfig,
  OTHER_GID,
  OTHER_UID,
  requireRoot,
  stopStarted,
  vmmUnderUmask,
} from './support.js';

const servers: net.Server[] = [];

beforeAll(() => requireRoot());

afterAll(async () => {
  for (const s of servers) s.close();
  await stopStarted();
  await stopAll();
});

/** A vmm whose hvsock lives in a directory anyone may create files in (mode 1777, or 2777 with `group`). */
async function vmmInSharedDir(config: string[] = [], group?: number) {
  const dir = tmpDir('passfd-guestconn-');
  if (group !== undefined) {
    fs.chownSync(dir, 0, group);
    fs.chmodSync(dir, 0o2777);
  } else fs.chmodSync(dir, 0o1777);
  const hvsock = path.join(dir, 'h.sock');
  const guestDir = path.join(dir, 'guest');
  const args = ['--hvsock', hvsock, '--guest-dir', guestDir];
  if (config.length) args.push('--config', hypervisorConfig(dir, config));
  const vmm = await vmmUnderUmask('022', args, /AF_VSOCK stand-in at/);
  return { ...vmm, hvsock, guestDir, dir };
}

/** `guest connect <port>` from the loopback guest: exit code, what it printed, its error. */
async function guestConnect(guestDir: string, port: number) {
  const c = spawnCli(['guest', '--guest-dir', guestDir, 'connect', String(port)]);
  const out = new Captured(c.stdout);
  const err = new Captured(c.stderr);
  c.stdin!.end('from the guest\n');
  const { code } = await exited(c, 20_000);
  return { code, stdout: out.text, stderr: err.text };
}

async function listenAsOther(p: string, groups: number[] = []) {
  const l = asOtherUser(['listen', p], groups);
  await l.out.waitFor(/"listening"/);
  return l;
}

function rootListener(p: string): Promise<net.Server> {
  const s = net.createServer((c) => {
    c.on('error', () => {});
    c.end('hello root\n');
  });
  servers.push(s);
  return new Promise((r) => s.listen(p, () => r(s)));
}

describe('guest-initiated connections to <hvsock>_<port>', () => {
  it('a socket planted by another uid is refused; allowing that uid lets it through', async () => {
    const vmm = await vmmInSharedDir();
    await listenAsOther(`${vmm.hvsock}_6000`);
    const r = await guestConnect(vmm.guestDir, 6000);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    const line = await vmm.log.waitFor(/refused the guest's connection to host port 6000 .*/);
    expect(line[0]).toContain(`the socket file belongs to uid ${OTHER_UID}`);

    const allowing = await vmmInSharedDir([`allowed_uids = [${OTHER_UID}]`]);
    await listenAsOther(`${allowing.hvsock}_6000`);
    const ok = await guestConnect(allowing.guestDir, 6000);
    expect(ok).toMatchObject({ code: 0, stdout: `hello ${OTHER_UID}\n` });
  });

  it('the listening process must be allowed, not just its socket file (setgid directory)', async () => {
    // Files created in this directory belong to group EXTRA_GID, which is allowed:
    // the owner check passes, SO_PEERCRED of the listener decides.
    const vmm = await vmmInSharedDir([`allowed_gids = [${EXTRA_GID}]`], EXTRA_GID);
    const stranger = await listenAsOther(`${vmm.hvsock}_6000`);
    expect(fs.statSync(`${vmm.hvsock}_6000`).gid).toBe(EXTRA_GID);
    const r = await guestConnect(vmm.guestDir, 6000);
    expect(r.code).not.toBe(0);
    const pid = stranger.child.pid;
    await vmm.log.waitFor(
      new RegExp(`host port 6000 .*its listener is uid ${OTHER_UID} gid ${OTHER_GID} pid ${pid}`),
    );

    await listenAsOther(`${vmm.hvsock}_6001`, [EXTRA_GID]);
    const ok = await guestConnect(vmm.guestDir, 6001);
    expect(ok).toMatchObject({ code: 0, stdout: `hello ${OTHER_UID}\n` });
  });

  it('a symlink is refused even when it points at an allowed listener', async () => {
    const vmm = await vmmInSharedDir();
    const real = path.join(vmm.dir, 'real.sock');
    await rootListener(real);
    fs.symlinkSync(real, `${vmm.hvsock}_6002`);
    const r = await guestConnect(vmm.guestDir, 6002);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    await vmm.log.waitFor(/refused the guest's connection to host port 6002 .*: it is a symlink/);
  });

  it('guest_connect_ports: a port outside the list is refused, a listed one works', async () => {
    const vmm = await vmmInSharedDir(['guest_connect_ports = [6004]']);
    await rootListener(`${vmm.hvsock}_6003`);
    await rootListener(`${vmm.hvsock}_6004`);
    const refused = await guestConnect(vmm.guestDir, 6003);
    expect(refused.code).not.toBe(0);
    await vmm.log.waitFor(/host port 6003 .*not in hypervisor\.guest_connect_ports/);
    expect(await guestConnect(vmm.guestDir, 6004)).toMatchObject({ code: 0, stdout: 'hello root\n' });
    expect(vmm.log.text.match(/refused the guest's connection/g)).toHaveLength(1);
  });
});
