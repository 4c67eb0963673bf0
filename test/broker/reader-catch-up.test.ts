// readersCaughtUp on real FIFOs: it resolves once the reader has taken every
// byte, waits for a slow reader that keeps moving, and gives up on one that
// takes nothing for stallMs (containerd's client closes its readers when it
// hears of the exit: see src/broker/reader-catch-up.ts).

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { bytesReadable, closeQuietly } from '../../native-bindings/index.js';
import { readersCaughtUp } from '../../src/broker/reader-catch-up.js';
import { mkfifo, tempDir } from '../native-bindings/helpers.js';

const { O_RDWR, O_RDONLY, O_NONBLOCK } = fs.constants;
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** A FIFO with a keeper (O_RDWR, as the broker holds it) and a separate reader. */
function fifoWith(bytes: number) {
  const dir = tempDir('catch-up-');
  const p = mkfifo(path.join(dir.path, 'out'));
  const keeper = fs.openSync(p, O_RDWR | O_NONBLOCK);
  const reader = fs.openSync(p, O_RDONLY | O_NONBLOCK);
  cleanups.push(() => {
    closeQuietly(keeper);
    closeQuietly(reader);
    dir.remove();
  });
  if (bytes > 0) expect(fs.writeSync(keeper, Buffer.alloc(bytes, 7))).toBe(bytes);
  return { keeper, reader };
}

describe('readersCaughtUp', () => {
  it('answers 0 at once when nothing is unread', async () => {
    const { keeper } = fifoWith(0);
    expect(await readersCaughtUp([keeper], 10_000)).toBe(0);
  });

  it('waits for a slow reader that keeps taking bytes, and resolves once it has all of them', async () => {
    const { keeper, reader } = fifoWith(60_000);
    const buf = Buffer.alloc(4096);
    let taken = 0;
    // 4 KiB every 15 ms: ~220 ms in all, each step well inside the stall bound.
    const timer = setInterval(() => {
      try {
        taken += fs.readSync(reader, buf);
      } catch {
        // EAGAIN: nothing left
      }
    }, 15);
    cleanups.push(() => clearInterval(timer));
    const left = await readersCaughtUp([keeper], 150);
    expect(left).toBe(0);
    expect(taken).toBe(60_000);
    expect(bytesReadable(keeper)).toBe(0);
  });

  it('gives up after stallMs when the reader takes nothing, saying how much was left', async () => {
    const a = fifoWith(1000);
    const b = fifoWith(234);
    const started = Date.now();
    expect(await readersCaughtUp([a.keeper, b.keeper], 200)).toBe(1234);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(200);
    expect(took).toBeLessThan(5000);
  });
});
