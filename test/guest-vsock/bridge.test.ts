// bridgeToUnix (src/guest-vsock/af-vsock.ts), the agent's AF_VSOCK → AF_UNIX
// bridge for its ttrpc port, over real sockets: one end of a socketpair
// plays the vsock socket (the bridge only needs a stream fd; no AF_VSOCK
// connection is made on this machine). Bytes go both ways byte-exact,
// each half-close is passed on while the other direction keeps working,
// every fd of the bridge is closed once both directions are done, and a
// peer that goes away mid-stream ends it quietly.

import { afterEach, describe, expect, it } from 'vitest';
import { closeQuietly, SHUT_WR, shutdownFd, socketPair, writeFd } from '../../native-bindings/index.js';
import { bridgeToUnix } from '../../src/guest-vsock/af-vsock.js';
import { fdCount, patternBytes, readExactly, readToEof, waitFd } from '../native-bindings/helpers.js';

const toClose: number[] = [];
afterEach(() => {
  for (const fd of toClose.splice(0)) closeQuietly(fd);
});

/** Writes all of `data` to a non-blocking fd, waiting for room as the reader drains. */
async function writeAll(fd: number, data: Buffer): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const n = writeFd(fd, data, off);
    if (n > 0) off += n;
    else await waitFd(fd, { writable: true });
  }
}

/** Resolves once this process's fd count is back to `n` (the bridge closes its fds asynchronously). */
async function fdsBackTo(n: number): Promise<number> {
  for (let i = 0; i < 200 && fdCount() !== n; i++) await new Promise((r) => setImmediate(r));
  return fdCount();
}

describe('bridgeToUnix', () => {
  it('moves bytes both ways, passes each half-close on, and closes everything at the end', async () => {
    const before = fdCount();
    const [vsockSide, vfd] = socketPair(true); // vfd plays the accepted vsock socket
    toClose.push(vsockSide);
    const unixSide = bridgeToUnix(vfd);
    toClose.push(unixSide);
    const up = patternBytes(1 << 20, 61);
    const down = patternBytes(1 << 20, 62);
    const [gotUp] = await Promise.all([readExactly(unixSide, up.length), writeAll(vsockSide, up)]);
    expect(gotUp.equals(up)).toBe(true);
    // The vsock peer half-closes: the unix side sees EOF and still answers.
    shutdownFd(vsockSide, SHUT_WR);
    expect(await readToEof(unixSide)).toHaveLength(0);
    const [gotDown] = await Promise.all([readExactly(vsockSide, down.length), writeAll(unixSide, down)]);
    expect(gotDown.equals(down)).toBe(true);
    shutdownFd(unixSide, SHUT_WR);
    expect(await readToEof(vsockSide)).toHaveLength(0);
    closeQuietly(vsockSide);
    closeQuietly(unixSide);
    toClose.length = 0;
    expect(await fdsBackTo(before)).toBe(before);
  });

  it('a peer that goes away mid-stream ends the bridge quietly and leaks nothing', async () => {
    const before = fdCount();
    const [vsockSide, vfd] = socketPair(true);
    const errors: Error[] = [];
    const unixSide = bridgeToUnix(vfd, (err) => errors.push(err));
    writeFd(unixSide, Buffer.from('to a peer that left'));
    closeQuietly(vsockSide);
    expect(await readToEof(unixSide)).toHaveLength(0);
    closeQuietly(unixSide);
    expect(await fdsBackTo(before)).toBe(before);
    expect(errors).toEqual([]);
  });
});
