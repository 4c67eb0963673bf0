// VsockConnection over real fds (integration): the local end is an FdEnd
// (src/device/fd-end.ts) on a real non-blocking socketpair end, the test
// holds the other end and plays the peer through the harness
// (unit/conn-harness.ts). What only real fds can show: nothing is read
// before the peer answers and the pull model follows real readiness; bytes
// go straight into the pull buffer and keep their order; CONNECT's
// pre-read bytes go first; a full socket buffers peer bytes up to
// buf_alloc and credit comes back only as the reader drains; SHUT_WR and
// close() of the local socket become SHUTDOWN(SEND) and SHUTDOWN(RCV|SEND)
// (POLLHUP); the peer's SHUTDOWN(SEND) becomes EOF for the local reader after
// the buffered bytes; EPIPE, a regular file refused, and no fd leaks. The
// transitions themselves (timeouts, credit arithmetic, protocol errors) are
// pinned down without fds in unit/connection-*.test.ts.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  readFd,
  SHUT_WR,
  SysError,
  setSocketBuffers,
  shutdownFd,
  WOULD_BLOCK,
  writeFd,
} from '../../native-bindings/index.js';
import { BUF_ALLOC } from '../../src/device/defaults.js';
import { FdEnd } from '../../src/device/fd-end.js';
import { ShutdownFlag, VsockOp } from '../../src/protocol/vsock-packet.js';
import {
  fdCount,
  isFdOpen,
  patternBytes,
  readExactly,
  readToEof,
  tempDir,
} from '../native-bindings/helpers.js';
import { ioTurns } from './io-turns.js';
import {
  fill,
  Harness,
  type HarnessOptions,
  ops,
  payload,
  RecordingOwner,
  SocketHarness,
} from './unit/conn-harness.js';

const harnesses: SocketHarness[] = [];
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const h of harnesses.splice(0)) h.dispose();
  for (const c of cleanups.splice(0)) c();
});

function harness(opts: HarnessOptions & { preRead?: Buffer } = {}): SocketHarness {
  const h = new SocketHarness(opts);
  harnesses.push(h);
  return h;
}

function peerInit(opts: HarnessOptions = {}): SocketHarness {
  return harness({ initiator: 'peer', ...opts }).establish();
}

/** Makes the local socket full: small buffers, then filler bytes the test must read first. */
function stuffLocal(h: SocketHarness): Buffer {
  setSocketBuffers(h.local, 4096);
  setSocketBuffers(h.remote, undefined, 4096);
  return fill(h.local);
}

describe('local → peer over a socket', () => {
  it('does not read the local socket before the peer answers', async () => {
    const h = harness();
    writeFd(h.remote, Buffer.from('early'));
    expect(h.pull()!.hdr.op).toBe(VsockOp.REQUEST);
    await ioTurns();
    expect(h.conn.hasPendingRx()).toBe(false);
    h.send(VsockOp.RESPONSE);
    const got = await h.collect((ps) => payload(ps).length >= 5);
    expect(ops(got)).toEqual([VsockOp.RW]);
    expect(payload(got).toString()).toBe('early');
  });

  it('sends the bytes read before the connection existed (CONNECT leftovers) before socket data', async () => {
    const pre = Buffer.from('bytes-after-CONNECT-line|');
    const h = harness({ preRead: pre });
    writeFd(h.remote, Buffer.from('socket-bytes'));
    h.establish();
    const got = await h.collect((ps) => payload(ps).length >= pre.length + 12);
    expect(got[0]!.hdr.op).toBe(VsockOp.RW);
    expect(got[0]!.data!.equals(pre)).toBe(true);
    expect(payload(got).toString()).toBe('bytes-after-CONNECT-line|socket-bytes');
  });

  it('pre-read bytes go out even when the socket stays silent, bounded by the peer credit', async () => {
    // Regression: leftover pre-read bytes must resume on a CREDIT_UPDATE, not wait for the
    // local fd to turn readable (a silent socket would hold them back forever).
    const h = harness({ preRead: Buffer.from('0123456789'), peerBufAlloc: 4 });
    h.establish();
    await h.waitRx();
    const first = h.pull()!;
    expect(first.hdr.op).toBe(VsockOp.RW);
    expect(first.data!.toString()).toBe('0123');
    expect(h.pull()!.hdr.op).toBe(VsockOp.CREDIT_REQUEST);
    h.peerFwd = 4;
    h.send(VsockOp.CREDIT_UPDATE);
    expect(payload(await h.collect((ps) => payload(ps).length >= 4, 1500)).toString()).toBe('4567');
    h.peerFwd = 8;
    h.send(VsockOp.CREDIT_UPDATE);
    expect(payload(await h.collect((ps) => payload(ps).length >= 2, 1500)).toString()).toBe('89');
  });

  it('turns socket bytes into RW packets no larger than the pull buffer', async () => {
    const h = peerInit();
    const data = patternBytes(300, 11);
    writeFd(h.remote, data);
    await h.waitRx();
    const first = h.pull(100)!;
    expect(first.hdr.op).toBe(VsockOp.RW);
    expect(first.hdr.len).toBe(100);
    const rest = [first, ...(await h.collect((ps) => payload(ps).length >= 200))];
    expect(payload(rest).equals(data)).toBe(true);
  });

  it('a readable socket without credit wakes nothing; CREDIT_UPDATE resumes the reads', async () => {
    const h = peerInit({ peerBufAlloc: 1000 });
    const data = patternBytes(2500, 12);
    writeFd(h.remote, data);
    await h.waitRx();
    const p1 = h.pull()!;
    expect(p1.hdr.len).toBe(1000);
    expect(h.pull()!.hdr.op).toBe(VsockOp.CREDIT_REQUEST);
    expect(h.pull()).toBeNull();
    await ioTurns();
    expect(h.conn.hasPendingRx()).toBe(false);
    h.peerFwd = 600;
    h.send(VsockOp.CREDIT_UPDATE);
    await h.waitRx();
    const p3 = h.pull()!;
    expect(p3.hdr.len).toBe(600);
    expect(h.pull()!.hdr.op).toBe(VsockOp.CREDIT_REQUEST);
    h.peerFwd = 1600;
    h.peerBufAlloc = 4096;
    h.send(VsockOp.CREDIT_UPDATE);
    const tail = await h.collect((ps) => payload(ps).length >= 900);
    expect(Buffer.concat([p1.data!, p3.data!, payload(tail)]).equals(data)).toBe(true);
  });
});

describe('peer → local over a socket', () => {
  it('writes RW payloads to the local socket and counts them in fwd_cnt', async () => {
    const h = peerInit();
    const a = patternBytes(1000, 21);
    const b = patternBytes(3000, 22);
    h.send(VsockOp.RW, a);
    h.send(VsockOp.RW, b);
    expect(h.conn.buffered).toBe(0);
    expect((await readExactly(h.remote, 4000)).equals(Buffer.concat([a, b]))).toBe(true);
    h.send(VsockOp.CREDIT_REQUEST);
    expect(h.pull()!.hdr.fwdCnt).toBe(4000);
  });

  it('buffers up to 64 KiB when the socket is full; CREDIT_UPDATE only once space frees (fwd_cnt = delivered)', async () => {
    const h = peerInit();
    const filler = stuffLocal(h);
    expect(filler.length).toBeGreaterThan(0);
    const data = patternBytes(BUF_ALLOC, 24);
    for (let off = 0; off < data.length; off += 4096) h.send(VsockOp.RW, data.subarray(off, off + 4096));
    expect(h.conn.buffered).toBe(BUF_ALLOC);
    expect(h.conn.hasPendingRx()).toBe(false);
    await ioTurns();
    expect(h.conn.hasPendingRx()).toBe(false);
    // The test reads the filler: the socket takes buffered bytes, and credit goes back.
    expect((await readExactly(h.remote, filler.length)).equals(filler)).toBe(true);
    await h.waitRx();
    const upd = h.pull()!;
    expect(upd.hdr.op).toBe(VsockOp.CREDIT_UPDATE);
    expect(upd.hdr.fwdCnt).toBeGreaterThan(0);
    expect(upd.hdr.fwdCnt).toBe(BUF_ALLOC - h.conn.buffered);
    expect((await readExactly(h.remote, BUF_ALLOC)).equals(data)).toBe(true);
    expect(h.conn.buffered).toBe(0);
    h.send(VsockOp.CREDIT_REQUEST);
    expect(h.pullAll().at(-1)!.hdr.fwdCnt).toBe(BUF_ALLOC);
  });

  it('keeps peer bytes in order when later packets arrive while earlier ones are buffered', async () => {
    const h = peerInit();
    const filler = stuffLocal(h);
    const parts = [patternBytes(5000, 31), patternBytes(1, 32), patternBytes(20000, 33)];
    for (const p of parts) h.send(VsockOp.RW, p);
    const out = await readExactly(h.remote, filler.length + 25001);
    expect(out.subarray(filler.length).equals(Buffer.concat(parts))).toBe(true);
  });

  it('EPIPE (the local reader is gone) is local-error + RST', () => {
    const h = peerInit();
    h.closeRemote();
    h.send(VsockOp.RW, Buffer.from('nobody reads'));
    expect(h.pull()!.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls[0]).toEqual({ reason: 'local-error', detail: 'EPIPE' });
  });
});

describe('shutdown over a socket', () => {
  it('SHUT_WR of the local socket: SHUTDOWN(SEND) after the last bytes; then a full SHUTDOWN and the peer’s RST', async () => {
    const h = peerInit();
    writeFd(h.remote, Buffer.from('last words'));
    shutdownFd(h.remote, SHUT_WR);
    const got = await h.collect((ps) => ps.some((p) => p.hdr.op === VsockOp.SHUTDOWN));
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.SHUTDOWN]);
    expect(payload(got).toString()).toBe('last words');
    expect(got[1]!.hdr.flags).toBe(ShutdownFlag.SEND);
    expect(h.conn.state).toBe('established');
    h.send(VsockOp.RW, Buffer.from('reply'));
    expect((await readExactly(h.remote, 5)).toString()).toBe('reply');
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND });
    const end = h.pullAll();
    expect(ops(end)).toEqual([VsockOp.SHUTDOWN]);
    expect(end[0]!.hdr.flags).toBe(ShutdownFlag.RCV | ShutdownFlag.SEND);
    h.send(VsockOp.RST);
    expect(h.conn.state).toBe('closed');
    expect(isFdOpen(h.local)).toBe(false);
  });

  it('a local socket closed outright (POLLHUP, not half-closed) sends SHUTDOWN(RCV|SEND)', async () => {
    const h = peerInit();
    writeFd(h.remote, Buffer.from('bye'));
    h.closeRemote();
    const got = await h.collect((ps) => ps.some((p) => p.hdr.op === VsockOp.SHUTDOWN));
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.SHUTDOWN]);
    expect(payload(got).toString()).toBe('bye');
    expect(got[1]!.hdr.flags).toBe(ShutdownFlag.RCV | ShutdownFlag.SEND);
    h.send(VsockOp.RST);
    expect(h.conn.state).toBe('closed');
    expect(isFdOpen(h.local)).toBe(false);
  });

  it('peer SHUTDOWN(SEND): the local socket sees EOF after the buffered bytes, and can still send', async () => {
    const h = peerInit();
    const filler = stuffLocal(h);
    const data = patternBytes(3000, 41);
    h.send(VsockOp.RW, data);
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND });
    expect(h.owner.timers).toEqual([2000]); // drain deadline
    const all = await readToEof(h.remote);
    expect(all.equals(Buffer.concat([filler, data]))).toBe(true);
    expect(h.conn.buffered).toBe(0);
    h.clock.advance(5000); // drained in time: the deadline passing does nothing
    expect(h.conn.state).toBe('established');
    writeFd(h.remote, Buffer.from('still talking'));
    shutdownFd(h.remote, SHUT_WR);
    const got = await h.collect((ps) => ps.some((p) => p.hdr.op === VsockOp.SHUTDOWN));
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.SHUTDOWN]);
    expect(payload(got).toString()).toBe('still talking');
    expect(got[1]!.hdr.flags).toBe(ShutdownFlag.RCV | ShutdownFlag.SEND);
    h.send(VsockOp.RST);
    expect(isFdOpen(h.local)).toBe(false);
  });

  it('peer SHUTDOWN(both) with nothing buffered: RST, the fd closed, the local reader sees EOF', async () => {
    const h = peerInit();
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.RCV | ShutdownFlag.SEND });
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls).toEqual([{ reason: 'done', detail: undefined }]);
    expect(isFdOpen(h.local)).toBe(false);
    expect(await readToEof(h.remote)).toHaveLength(0);
  });

  it('peer SHUTDOWN(both) with buffered bytes that drain in time: RST done after delivery', async () => {
    const h = peerInit();
    const filler = stuffLocal(h);
    const data = patternBytes(2000, 42);
    h.send(VsockOp.RW, data);
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.RCV | ShutdownFlag.SEND });
    expect(h.conn.hasPendingRx()).toBe(false);
    expect((await readToEof(h.remote)).equals(Buffer.concat([filler, data]))).toBe(true);
    await h.waitRx();
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls).toEqual([{ reason: 'done', detail: undefined }]);
  });

  it('peer SHUTDOWN(RCV) stops reading the local socket; its data still flows in', async () => {
    const h = peerInit();
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.RCV });
    writeFd(h.remote, Buffer.from('unwanted'));
    await ioTurns();
    expect(h.conn.hasPendingRx()).toBe(false);
    h.send(VsockOp.RW, Buffer.from('still'));
    expect((await readExactly(h.remote, 5)).toString()).toBe('still');
  });

  it('keep: local EOF parks reading and leaves the connection open (no SHUTDOWN)', async () => {
    const h = peerInit({ keep: true });
    writeFd(h.remote, Buffer.from('abc'));
    shutdownFd(h.remote, SHUT_WR);
    expect(ops(await h.collect((ps) => payload(ps).length >= 3))).toEqual([VsockOp.RW]);
    await ioTurns();
    expect(h.pullAll()).toEqual([]);
    expect(h.conn.state).toBe('established');
    h.send(VsockOp.RW, Buffer.from('xyz'));
    const b = Buffer.alloc(8);
    expect(readFd(h.remote, b)).toBe(3);
    expect(readFd(h.remote, b)).toBe(WOULD_BLOCK);
  });
});

describe('the fd and its ownership', () => {
  it('peer RST closes the fd and nothing more is read or sent', async () => {
    const h = peerInit();
    writeFd(h.remote, Buffer.from('pending data'));
    const rxBefore = h.owner.rxCalls;
    h.send(VsockOp.RST);
    expect(h.owner.closedCalls).toEqual([{ reason: 'peer-reset', detail: undefined }]);
    await ioTurns();
    expect(h.owner.rxCalls).toBe(rxBefore);
    expect(isFdOpen(h.local)).toBe(false);
  });

  it('close() closes the local fd without telling the peer: the local reader sees EOF', async () => {
    const h = peerInit();
    h.conn.close();
    expect(isFdOpen(h.local)).toBe(false);
    expect(h.pull()).toBeNull();
    expect(await readToEof(h.remote)).toHaveLength(0);
  });

  it('leaks no fd over a full lifecycle', async () => {
    const before = fdCount();
    const h = new SocketHarness({ initiator: 'peer' }).establish();
    writeFd(h.remote, Buffer.from('x'));
    await h.collect((ps) => ps.length >= 1);
    h.send(VsockOp.RST);
    expect(isFdOpen(h.local)).toBe(false);
    h.closeRemote();
    expect(fdCount()).toBe(before);
  });

  it('refuses a regular file (SysError EPERM) when watched; the caller keeps the end and the owner hears nothing', () => {
    const d = tempDir('conn-');
    cleanups.push(d.remove);
    const fd = fs.openSync(path.join(d.path, 'regular'), 'w+');
    const end = new FdEnd(fd);
    cleanups.push(() => end.close());
    let err: unknown;
    try {
      new Harness(end, { initiator: 'peer' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SysError);
    expect((err as SysError).code).toBe('EPERM');
    expect(isFdOpen(fd)).toBe(true);
    end.close();
    expect(isFdOpen(fd)).toBe(false);
  });

  it('RecordingOwner.waitFor times out cleanly', async () => {
    const o = new RecordingOwner();
    await expect(o.waitFor(() => false, 20, 'never')).rejects.toThrow(/timed out/);
  });
});
