// connectWhenListening on real Unix sockets: it connects at once to a
// listener that is there, waits (on directory events, no timer) for one that
// appears later, waits out a stale socket file until a new listener replaces
// it, and gives up after its bound with ETIMEDOUT and the last connect error.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { closeQuietly, listenUnix } from '../../native-bindings/index.js';
import { connectWhenListening } from '../../src/net/connect-when-listening.js';
import { UnixListener } from '../../src/net/unix-listener.js';
import { fdCount, tempDir } from '../native-bindings/helpers.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function dir(): string {
  const d = tempDir('connect-wait-');
  cleanups.push(d.remove);
  return d.path;
}

/** A UnixListener whose accepted connections are collected (and closed at the end). */
function listener(socketPath: string): { accepted: Promise<number> } {
  let got: (fd: number) => void = () => {};
  const accepted = new Promise<number>((r) => {
    got = r;
  });
  const l = new UnixListener(
    socketPath,
    (fd) => {
      cleanups.push(() => closeQuietly(fd));
      got(fd);
    },
    (err) => {
      throw err;
    },
  );
  cleanups.push(() => l.close());
  return { accepted };
}

describe('connectWhenListening', () => {
  it('connects at once when the socket is listening', async () => {
    const sock = path.join(dir(), 's.sock');
    const l = listener(sock);
    const fd = await connectWhenListening(sock, 5000);
    cleanups.push(() => closeQuietly(fd));
    await l.accepted;
  });

  it('waits for a listener that starts later, in a directory that does not exist yet', async () => {
    const sock = path.join(dir(), 'guest', 's.sock');
    const waiting = connectWhenListening(sock, 10_000);
    expect(fs.statSync(path.dirname(sock)).mode & 0o777).toBe(0o700);
    // The listener comes after the wait began: only a directory event can tell the waiter.
    setImmediate(() => listener(sock));
    const fd = await waiting;
    cleanups.push(() => closeQuietly(fd));
  });

  it('waits out a stale socket file (ECONNREFUSED) until a new listener replaces it', async () => {
    const sock = path.join(dir(), 's.sock');
    closeQuietly(listenUnix(sock)); // the file stays, nobody listens: what a killed vmm leaves
    const waiting = connectWhenListening(sock, 10_000);
    let settled = false;
    void waiting.then(
      () => {
        settled = true;
      },
      () => {
        settled = true;
      },
    );
    // A macrotask later the stale file has been tried and refused, and the wait goes on.
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    const l = listener(sock);
    const fd = await waiting;
    cleanups.push(() => closeQuietly(fd));
    await l.accepted;
  });

  it('gives up after its bound: ETIMEDOUT, the last connect error as cause, nothing left open', async () => {
    const sock = path.join(dir(), 's.sock');
    closeQuietly(listenUnix(sock));
    const before = fdCount();
    const err = await connectWhenListening(sock, 50).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ETIMEDOUT' });
    expect((err as Error).message).toMatch(/not listening within 50 ms: connect .*ECONNREFUSED/);
    expect((err as Error).cause).toMatchObject({ code: 'ECONNREFUSED' });
    expect(fdCount()).toBe(before);
  });

  it('fails at once on an error that waiting cannot cure', async () => {
    const d = dir();
    const notSocket = path.join(d, 'plain');
    fs.writeFileSync(notSocket, '');
    const err = await connectWhenListening(notSocket, 10_000).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ENOTSOCK', message: `${notSocket} is not a socket` });
  });
});
