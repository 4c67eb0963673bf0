// readersCaughtUp on real FIFOs, given write-only fds as the broker passes
// them: it resolves once the reader has taken every byte, waits for a slow
// reader that keeps moving, gives up on one that takes nothing for stallMs,
// and does not wait at all when nobody reads (containerd's client closes its
// readers when it hears of the exit: see src/broker/reader-catch-up.ts).

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { bytesReadable, closeQuietly } from '../../native-bindings/index.js';
import { FifoSet } from '../../src/broker/fifo-set.js';
import { readersCaughtUp } from '../../src/broker/reader-catch-up.js';
import { mkfifo, tempDir } from '../native-bindings/helpers.js';

const { O_RDONLY, O_NONBLOCK } = fs.constants;
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/**
 * A FIFO held by a FifoSet keeper with `bytes` queued in it, a reader (or
 * none), then the keeper traded for a writer, as the broker does at an exit.
 */
function outputFifo(bytes: number, withReader = true) {
  const dir = tempDir('catch-up-');
  const stdout = mkfifo(path.join(dir.path, 'out'));
  const set = new FifoSet({ stdout });
  set.openKeepers();
  let reader = withReader ? fs.openSync(stdout, O_RDONLY | O_NONBLOCK) : -1;
  if (bytes > 0) {
    const w = set.openFlowFd('stdout');
    expect(fs.writeSync(w, Buffer.alloc(bytes, 7))).toBe(bytes);
    fs.closeSync(w);
  }
  const writer = set.keeperToWriter('stdout');
  cleanups.push(() => {
    closeQuietly(writer);
    if (reader >= 0) closeQuietly(reader);
    set.releaseAll();
    dir.remove();
  });
  const closeReader = () => {
    closeQuietly(reader);
    reader = -1;
  };
  return { writer, reader, closeReader };
}

describe('readersCaughtUp', () => {
  it('answers 0 at once when nothing is unread', async () => {
    const { writer } = outputFifo(0);
    expect(await readersCaughtUp([writer], 10_000)).toBe(0);
  });

  it('waits for a slow reader that keeps taking bytes, and resolves once it has all of them', async () => {
    const { writer, reader } = outputFifo(60_000);
    const buf = Buffer.alloc(4096);
    let taken = 0;
    // 4 KiB every 15 ms: ~220 ms in all, each step far inside the stall bound (a loaded machine
    // may hold this process's timers back by a few hundred ms).
    const timer = setInterval(() => {
      try {
        taken += fs.readSync(reader, buf);
      } catch {
        // EAGAIN: nothing left
      }
    }, 15);
    cleanups.push(() => clearInterval(timer));
    const left = await readersCaughtUp([writer], 3000);
    expect(left).toBe(0);
    expect(taken).toBe(60_000);
    expect(bytesReadable(writer)).toBe(0);
  });

  it('gives up after stallMs when a reader is there but takes nothing, saying how much was left', async () => {
    const a = outputFifo(1000);
    const b = outputFifo(234);
    const started = Date.now();
    expect(await readersCaughtUp([a.writer, b.writer], 200)).toBe(1234);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(200);
    expect(took).toBeLessThan(5000);
  });

  it('does not wait when nobody else has the FIFO open for reading (the bytes will never be taken)', async () => {
    const { writer } = outputFifo(5000, false);
    const started = Date.now();
    expect(await readersCaughtUp([writer], 10_000)).toBe(0);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('stops waiting when the last reader goes away', async () => {
    const { writer, closeReader } = outputFifo(5000);
    setTimeout(closeReader, 100);
    const started = Date.now();
    expect(await readersCaughtUp([writer], 10_000)).toBe(0);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
