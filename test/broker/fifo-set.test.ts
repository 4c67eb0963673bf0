// The broker's FifoSet on real FIFOs (mkfifo): keepers make every open
// succeed at once, grow each FIFO to FIFO_SIZE so a writer can queue that
// much with no reader yet, hand out flow-direction fds, and release cleanly.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  accessMode,
  closeQuietly,
  getPipeSize,
  pipeMaxSize,
  WOULD_BLOCK,
  writeFd,
} from '../../native-bindings/index.js';
import { FIFO_SIZE, FifoSet } from '../../src/broker/fifo-set.js';
import { fdCount, mkfifo, tempDir } from '../native-bindings/helpers.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function fifos() {
  const dir = tempDir('fifo-set-');
  cleanups.push(dir.remove);
  const p = (n: string) => mkfifo(path.join(dir.path, `c-${n}`));
  return { stdin: p('stdin'), stdout: p('stdout'), stderr: p('stderr') };
}

describe('FifoSet', () => {
  it('grows every FIFO to FIFO_SIZE: a writer queues that much before anyone reads', () => {
    const set = new FifoSet(fifos());
    const before = fdCount();
    set.openKeepers();
    const size = Math.min(FIFO_SIZE, pipeMaxSize());
    const out = set.openFlowFd('stdout');
    try {
      expect(accessMode(out)).toBe('w');
      expect(getPipeSize(out)).toBe(size);
      expect(writeFd(out, Buffer.alloc(size, 7))).toBe(size);
      expect(writeFd(out, Buffer.from('x'))).toBe(WOULD_BLOCK);
      const input = set.openFlowFd('stdin');
      expect(accessMode(input)).toBe('r');
      expect(getPipeSize(input)).toBe(size);
      closeQuietly(input);
    } finally {
      closeQuietly(out);
    }
    set.releaseAll();
    expect(fdCount()).toBe(before);
  });

  it('refuses a path that is not a FIFO, naming it, and keeps nothing open', () => {
    const f = fifos();
    const plain = `${f.stderr}.txt`;
    fs.writeFileSync(plain, '');
    const before = fdCount();
    const set = new FifoSet({ ...f, stderr: plain });
    expect(() => set.openKeepers()).toThrow(`stderr: ${plain} is not a FIFO`);
    expect(fdCount()).toBe(before);
    expect(() => set.openFlowFd('stdin')).toThrow(/no FIFO/);
  });
});
