/**
 * The README's three-terminal walk-through, with the real CLI processes:
 * `vmm`, `guest listen`, `pass` + a FIFO writer; plus `pass` failures and
 * systemd readiness (READY=1 / STOPPING=1 on $NOTIFY_SOCKET).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { receiveDatagrams } from '../../src/util/unix-dgram.js';
import { withTimeout } from '../native-bindings/helpers.js';
import { Captured, exited, spawnCli, startVmm, stopAll, stopChild, tmpDir } from '../support/cli.js';

afterAll(stopAll);

describe('vmm + guest listen + pass', () => {
  it('echo hi into a passed FIFO appears in the guest listener, with peer <host port>', async () => {
    const vmm = await startVmm(['--log-level', 'debug']);
    const listener = spawnCli(['guest', '--guest-dir', vmm.guestDir, 'listen', '1027']);
    const out = new Captured(listener.stdout);
    const err = new Captured(listener.stderr);
    const fifo = path.join(vmm.dir, 'f');
    execFileSync('mkfifo', [fifo]);
    // The listener is up once the guest stack has logged it.
    await vmm.log.waitFor(/guest process listens on port 1027/);
    const pass = spawnCli(['pass', '--hvsock', vmm.hvsock, '--port', '1027', fifo]);
    const passOut = new Captured(pass.stdout);
    expect((await exited(pass)).code).toBe(0);
    const hostPort = (await passOut.waitFor(/^(\d+)\n/))[1];
    fs.writeFileSync(fifo, 'hi\n');
    await out.waitFor(/hi\n/);
    await err.waitFor(new RegExp(`peer ${hostPort}`));
    await stopChild(listener);
  });

  it('guest connect reaches a host listener on <hvsock>_<port> and relays stdin/stdout', async () => {
    const vmm = await startVmm();
    const got: Buffer[] = [];
    const server = net.createServer((c) => {
      c.on('data', (d) => got.push(d));
      c.on('end', () => c.end('pong\n'));
    });
    await new Promise<void>((r) => server.listen(`${vmm.hvsock}_7000`, r));
    const conn = spawnCli(['guest', '--guest-dir', vmm.guestDir, 'connect', '7000']);
    const out = new Captured(conn.stdout);
    const err = new Captured(conn.stderr);
    conn.stdin!.end('ping\n');
    expect((await exited(conn)).code).toBe(0);
    expect(out.text).toBe('pong\n');
    expect(Buffer.concat(got).toString()).toBe('ping\n');
    expect(err.text).toMatch(/^local \d+\n$/);
    server.close();
  });

  it('pass to a port nobody listens on exits non-zero with a one-line reason', async () => {
    const vmm = await startVmm();
    const fifo = path.join(vmm.dir, 'g');
    execFileSync('mkfifo', [fifo]);
    const pass = spawnCli(['pass', '--hvsock', vmm.hvsock, '--port', '4242', fifo]);
    const err = new Captured(pass.stderr);
    expect((await exited(pass)).code).toBe(1);
    expect(err.text.trim().split('\n')).toHaveLength(1);
    expect(err.text).toMatch(/refused/);
  });

  it('pass with no device running says so', async () => {
    const dir = tmpDir();
    const fifo = path.join(dir, 'f');
    execFileSync('mkfifo', [fifo]);
    const pass = spawnCli(['pass', '--hvsock', path.join(dir, 'nope.sock'), '--port', '1027', fifo]);
    const err = new Captured(pass.stderr);
    expect((await exited(pass)).code).toBe(1);
    expect(err.text).toMatch(/cannot reach the hybrid-vsock socket .*ENOENT/);
  });

  it('bad arguments are rejected by the CLI with a clear message', async () => {
    const pass = spawnCli(['pass', '--hvsock', '/tmp/x', '--port', 'abc', '/tmp/y']);
    const err = new Captured(pass.stderr);
    expect((await exited(pass)).code).not.toBe(0);
    expect(err.text).toMatch(/--port.*must be a vsock port/);
  });
});

describe('systemd notify', () => {
  it('vmm sends READY=1 when serving and STOPPING=1 on SIGTERM, then removes its sockets', async () => {
    const dir = tmpDir();
    const notify = path.join(dir, 'notify.sock');
    // A real datagram socket playing systemd (records what arrives, wakes whoever waits for a line).
    const received: string[] = [];
    let arrived: (() => void) | null = null;
    const sd = receiveDatagrams(
      notify,
      (msg) => {
        received.push(msg.toString());
        arrived?.();
      },
      (err) => {
        throw err;
      },
    );
    const line = (want: string) =>
      withTimeout(
        new Promise<void>((resolve) => {
          const check = () => {
            if (received.some((m) => m.split('\n').includes(want))) resolve();
          };
          arrived = check;
          check();
        }),
        15_000,
        want,
      );
    const hvsock = path.join(dir, 'h.sock');
    const guestDir = path.join(dir, 'guest');
    const vmm = spawnCli(['vmm', '--hvsock', hvsock, '--guest-dir', guestDir], {
      env: { ...process.env, NOTIFY_SOCKET: notify },
    });
    try {
      await line('READY=1');
      expect(fs.existsSync(hvsock)).toBe(true);
      expect(await stopChild(vmm)).toBe(0);
      // STOPPING=1 is sent before the vmm stops, so it has arrived by its exit or arrives now.
      await line('STOPPING=1');
    } finally {
      sd.close();
    }
    expect(fs.existsSync(hvsock)).toBe(false);
    expect(fs.existsSync(path.join(guestDir, 'vsock.sock'))).toBe(false);
  });
});
