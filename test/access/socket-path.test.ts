/**
 * What a `vmm` does with the paths it is asked to listen on, with real
 * processes: a second `vmm` on a live hybrid-vsock or vsock.sock path is
 * refused and the first keeps serving; a stale socket (its `vmm` killed
 * with SIGKILL) is replaced, and that is logged; a file that is not a
 * socket is never touched; a missing directory is reported, not created.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { closeQuietly, connectUnix, peerCred } from '../../native-bindings/index.js';
import { Captured, exited, spawnCli, startVmm, stopAll, tmpDir } from '../support/cli.js';

afterAll(async () => {
  await stopAll();
});

/** Runs a `vmm` that is expected to refuse to start: its exit code and stderr. */
async function vmmFails(args: string[]) {
  const c = spawnCli(['vmm', ...args]);
  const err = new Captured(c.stderr);
  const { code } = await exited(c, 20_000);
  return { code, stderr: err.text };
}

/** The pid of the process listening on `p` (SO_PEERCRED of a fresh connection). */
function listenerPid(p: string): number {
  const fd = connectUnix(p, false);
  try {
    return peerCred(fd).pid;
  } finally {
    closeQuietly(fd);
  }
}

describe('socket paths', () => {
  it('a second vmm on a live hybrid-vsock path is refused; the first keeps serving', async () => {
    const first = await startVmm();
    const other = path.join(first.dir, 'other-guest');
    const r = await vmmFails(['--hvsock', first.hvsock, '--guest-dir', other]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot listen on ${first.hvsock}: another process is listening on it`);
    expect(listenerPid(first.hvsock)).toBe(first.pid);
  });

  it('a second vmm on a live guest directory (vsock.sock) is refused', async () => {
    const first = await startVmm();
    const standin = path.join(first.guestDir, 'vsock.sock');
    const r = await vmmFails([
      '--hvsock',
      path.join(first.dir, 'second.sock'),
      '--guest-dir',
      first.guestDir,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot listen on ${standin}: another process is listening on it`);
    expect(listenerPid(standin)).toBe(first.pid);
    // The refused vmm removed what it had bound before it gave up.
    expect(fs.existsSync(path.join(first.dir, 'second.sock'))).toBe(false);
  });

  it('a stale socket left by a killed vmm is replaced, and that is logged', async () => {
    const first = await startVmm();
    first.child.kill('SIGKILL');
    await exited(first.child);
    expect(fs.statSync(first.hvsock).isSocket()).toBe(true);
    const again = spawnCli(['vmm', '--hvsock', first.hvsock, '--guest-dir', first.guestDir], {
      env: { ...process.env, PASSFD_LOG: 'info' },
    });
    const log = new Captured(again.stderr);
    await log.waitFor(/AF_VSOCK stand-in at/);
    expect(log.text).toContain(
      `replaced the stale socket ${first.hvsock} (nobody listens on it: ECONNREFUSED)`,
    );
    expect(log.text).toContain(`replaced the stale socket ${path.join(first.guestDir, 'vsock.sock')}`);
    expect(listenerPid(first.hvsock)).toBe(again.pid);
  });

  it('a path that is not a socket is refused and left alone', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'h.sock');
    fs.writeFileSync(file, 'precious');
    const r = await vmmFails(['--hvsock', file, '--guest-dir', path.join(dir, 'guest')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot listen on ${file}: it exists and is not a socket`);
    expect(fs.readFileSync(file, 'utf8')).toBe('precious');
  });

  it('a missing directory is reported, not created', async () => {
    const dir = tmpDir();
    const missing = path.join(dir, 'nonexistent-dir');
    const r = await vmmFails([
      '--hvsock',
      path.join(missing, 'h.sock'),
      '--guest-dir',
      path.join(dir, 'guest'),
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot listen on ${missing}/h.sock: directory ${missing} does not exist`);
    expect(fs.existsSync(missing)).toBe(false);
    const g = await vmmFails(['--hvsock', path.join(dir, 'h.sock'), '--guest-dir', path.join(missing, 'g')]);
    expect(g.stderr).toContain(`cannot create ${missing}/g: its parent directory does not exist`);
    expect(fs.existsSync(missing)).toBe(false);
  });
});
