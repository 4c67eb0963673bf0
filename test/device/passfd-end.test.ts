// The passfd side's local ends (src/device/passfd-end.ts) over real FIFOs,
// driving a VsockConnection as the peer (unit/conn-harness.ts), fake time
// for deadlines. A FIFO gets a FifoEnd: with `keep` it holds a keeper, so the
// writer closing and a new one opening resumes the stream with no EOF and no
// SHUTDOWN (one extra fd, gone with the connection); without `keep` the
// writer closing is EOF; its slow reader is backpressure, so the peer's
// SHUTDOWN(SEND) with bytes stuck for a stalled reader arms no drain deadline
// and loses nothing; data for a read-only FIFO is a local error. A pipe is
// the same file type as a FIFO and is treated alike; any other fd gets a
// plain FdEnd.

import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { closeFd, makePipe, setPipeSize, socketPair, writeFd } from '../../native-bindings/index.js';
import type { FdEnd } from '../../src/device/fd-end.js';
import { FifoEnd, passedFdEnd } from '../../src/device/passfd-end.js';
import { ShutdownFlag, VsockOp } from '../../src/protocol/vsock-packet.js';
import {
  fdCount,
  fdJanitor,
  isFdOpen,
  mkfifo,
  patternBytes,
  readExactly,
  tempDir,
} from '../native-bindings/helpers.js';
import { ioTurns } from './io-turns.js';
import { fill, Harness, ops, payload } from './unit/conn-harness.js';

const janitor = fdJanitor();

function fifo(): string {
  const d = tempDir('passfd-end-');
  janitor.onCleanup(d.remove);
  return mkfifo(path.join(d.path, 'stdio'));
}
const open = (p: string, mode: number) => fs.openSync(p, mode | fs.constants.O_NONBLOCK);
const { O_RDONLY, O_WRONLY, O_RDWR } = fs.constants;

/** A peer-initiated, established connection over `end`, closed after the test. */
function over(end: FdEnd, keep = false): Harness<FdEnd> {
  const h = new Harness(end, { initiator: 'peer', keep });
  janitor.onCleanup(() => h.dispose());
  return h.establish();
}

describe('passedFdEnd', () => {
  it('gives a FIFO (or pipe: the same file type) a FifoEnd, and anything else a plain FdEnd', () => {
    const p = fifo();
    const fifoEnd = passedFdEnd(open(p, O_RDONLY), false);
    expect(fifoEnd).toBeInstanceOf(FifoEnd);
    expect(fifoEnd.slowReaderIsBackpressure).toBe(true);
    fifoEnd.close();
    const [r, w] = makePipe(true);
    janitor.track(w);
    const pipeEnd = passedFdEnd(r, false);
    expect(pipeEnd).toBeInstanceOf(FifoEnd);
    pipeEnd.close();
    const [a, b] = socketPair(true);
    janitor.track(b);
    const socketEnd = passedFdEnd(a, true);
    expect(socketEnd).not.toBeInstanceOf(FifoEnd);
    expect(socketEnd.slowReaderIsBackpressure).toBe(false);
    socketEnd.close();
    expect(isFdOpen(a)).toBe(false);
  });

  it('opens a keeper only with keep and only for a one-direction FIFO fd; close() closes both', () => {
    const p = fifo();
    const before = fdCount();
    const rfd = open(p, O_RDONLY);
    const kept = new FifoEnd(rfd, true);
    expect(fdCount()).toBe(before + 2); // the fd and its keeper
    kept.close();
    expect(fdCount()).toBe(before);
    const rw = open(p, O_RDWR);
    const own = new FifoEnd(rw, true); // an O_RDWR fd is its own keeper
    expect(fdCount()).toBe(before + 1);
    own.close();
    const plain = new FifoEnd(open(p, O_RDONLY), false);
    expect(fdCount()).toBe(before + 1);
    plain.close();
    expect(fdCount()).toBe(before);
  });
});

describe('a FIFO passed read-only (stdin)', () => {
  it('with keep survives the writer closing and reopening: data continues, no SHUTDOWN', async () => {
    const p = fifo();
    const rfd = open(p, O_RDONLY);
    const w1 = open(p, O_WRONLY);
    const h = over(passedFdEnd(rfd, true), true);
    writeFd(w1, Buffer.from('one'));
    const first = await h.collect((ps) => payload(ps).length >= 3);
    expect(ops(first)).toEqual([VsockOp.RW]);
    expect(payload(first).toString()).toBe('one');
    expect(h.pullAll()).toEqual([]); // the read turn ends at EAGAIN
    closeFd(w1);
    await ioTurns(3);
    expect(h.conn.hasPendingRx()).toBe(false); // no EOF, no SHUTDOWN
    expect(h.conn.state).toBe('established');
    const w2 = open(p, O_WRONLY);
    janitor.track(w2);
    writeFd(w2, Buffer.from('two'));
    const second = await h.collect((ps) => payload(ps).length >= 3);
    expect(payload(second).toString()).toBe('two');
    h.conn.close();
    expect(isFdOpen(rfd)).toBe(false);
  });

  it('without keep, the writer closing is EOF: SHUTDOWN(SEND), then the full shutdown', async () => {
    const p = fifo();
    const rfd = open(p, O_RDONLY);
    const w = open(p, O_WRONLY);
    const h = over(passedFdEnd(rfd, false));
    writeFd(w, Buffer.from('bye'));
    closeFd(w);
    const got = await h.collect((ps) => ps.some((x) => x.hdr.op === VsockOp.SHUTDOWN));
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.SHUTDOWN]);
    expect(got[1]!.hdr.flags).toBe(ShutdownFlag.SEND);
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND });
    expect(h.pullAll()[0]!.hdr.flags).toBe(ShutdownFlag.RCV | ShutdownFlag.SEND);
    h.send(VsockOp.RST);
    expect(isFdOpen(rfd)).toBe(false);
  });

  it('data from the peer for a read-only FIFO is a local error', () => {
    const p = fifo();
    const h = over(passedFdEnd(open(p, O_RDONLY), true), true);
    h.send(VsockOp.RW, Buffer.from('nowhere to go'));
    expect(h.pull()!.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls[0]!.reason).toBe('local-error');
  });
});

describe('a FIFO passed write-only (stdout)', () => {
  it('a stalled reader is backpressure: SHUTDOWN(SEND) arms no drain deadline and every byte arrives', async () => {
    const p = fifo();
    const reader = open(p, O_RDONLY);
    janitor.track(reader);
    const wfd = open(p, O_WRONLY);
    setPipeSize(wfd, 4096);
    const h = over(passedFdEnd(wfd, true), true);
    const filler = fill(wfd);
    const data = patternBytes(3000, 51);
    h.send(VsockOp.RW, data);
    expect(h.conn.buffered).toBe(3000);
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND });
    expect(h.owner.timers).toEqual([]);
    h.clock.advance(60_000);
    expect(h.conn.state).toBe('established');
    expect(h.conn.hasPendingRx()).toBe(false);
    // The reader comes back: everything is delivered, then we are done both ways.
    const got = await readExactly(reader, filler.length + data.length);
    expect(got.equals(Buffer.concat([filler, data]))).toBe(true);
    await h.waitRx();
    const end = h.pullAll();
    expect(ops(end)).toEqual([VsockOp.SHUTDOWN]);
    expect(end[0]!.hdr.flags).toBe(ShutdownFlag.RCV | ShutdownFlag.SEND);
  });
});
