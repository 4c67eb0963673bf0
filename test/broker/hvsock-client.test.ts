// The hybrid-vsock client's errors keep what went wrong underneath: the
// errno name as `code` and the system error as `cause`, for a missing socket
// and a refused connection; a device that closes without OK is a refusal
// with no errno. Real Unix sockets, no device needed.

import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { closeQuietly, SysError, socketPair } from '../../native-bindings/index.js';
import { HvsockError, hybridConnect, passFd } from '../../src/broker/hvsock-client.js';
import { fdCount, tempDir } from '../native-bindings/helpers.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

function dir(): string {
  const d = tempDir('hvsock-client-');
  cleanups.push(d.remove);
  return d.path;
}

/**
 * A Unix listener that reads a whole request (`requestBytes`: `passfd\n1027`
 * or `CONNECT 1024\n`), then closes cleanly without OK: a device refusing.
 */
async function refusingServer(socketPath: string, requestBytes: number): Promise<void> {
  const server = net.createServer((s) => {
    let got = 0;
    s.on('data', (d) => {
      got += d.length;
      if (got >= requestBytes) s.end();
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
}

describe('hybrid-vsock client errors', () => {
  it('passFd to a missing socket: code ENOENT, the SysError as cause, no fd left open', async () => {
    const [a, b] = socketPair();
    const before = fdCount();
    const err = await passFd(path.join(dir(), 'absent.sock'), a, 1027).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HvsockError);
    expect((err as HvsockError).code).toBe('ENOENT');
    expect((err as HvsockError).cause).toBeInstanceOf(SysError);
    expect((err as Error).message).toMatch(/cannot reach the hybrid-vsock socket .*absent\.sock/);
    expect(fdCount()).toBe(before);
    closeQuietly(a);
    closeQuietly(b);
  });

  it('CONNECT to a missing socket: code ENOENT with Node’s error as cause', async () => {
    const err = await hybridConnect(path.join(dir(), 'absent.sock'), 1024).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HvsockError);
    expect((err as HvsockError).code).toBe('ENOENT');
    expect(((err as HvsockError).cause as NodeJS.ErrnoException).syscall).toBe('connect');
  });

  it('a device closing without OK is a refusal: no errno code, no cause', async () => {
    const sock = path.join(dir(), 'h.sock');
    const connectSock = path.join(dir(), 'c.sock');
    await refusingServer(sock, 'passfd\n1027'.length);
    await refusingServer(connectSock, 'CONNECT 1024\n'.length);
    const [a, b] = socketPair();
    cleanups.push(() => {
      closeQuietly(a);
      closeQuietly(b);
    });
    const passed = await passFd(sock, a, 1027).catch((e: unknown) => e);
    expect(passed).toBeInstanceOf(HvsockError);
    expect((passed as HvsockError).code).toBeUndefined();
    expect((passed as Error).message).toMatch(/refused: the device closed the socket without OK/);
    const connected = await hybridConnect(connectSock, 1024).catch((e: unknown) => e);
    expect(connected).toBeInstanceOf(HvsockError);
    expect((connected as HvsockError).code).toBeUndefined();
    expect((connected as Error).message).toMatch(/refused/);
  });
});
