// VsockConnection (src/device/csm/connection.ts) driven by the test as the
// PEER: the local end is a real socketpair end (or a real FIFO), the owner is
// a recording double of the ConnectionOwner interface. Pins down the state
// machine (REQUEST/RESPONSE/RST, 2 s request timeout), the pull model (the
// local fd is read only inside nextPacket, after a readiness callback asked
// for a turn), credit both ways (RW bounded by the peer's credit, one
// CREDIT_REQUEST when it runs out, resume on CREDIT_UPDATE; peer bytes
// buffered up to 64 KiB when the local socket is full, fwd_cnt counting only
// delivered bytes, credit violation = RST 'protocol'), shutdown in both
// directions (SHUTDOWN flags exactly SEND, SHUT_WR after the buffer drains,
// RST 'done', drain timeout), peer RST, fd ownership, `keep` with a FIFO,
// and preRead bytes going first.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  closeFd,
  closeQuietly,
  readFd,
  SHUT_WR,
  SysError,
  setSocketBuffers,
  shutdownFd,
  WOULD_BLOCK,
  writeFd,
} from '../../../native-bindings/index.js';
import { BUF_ALLOC, GUEST_BUF_ALLOC } from '../../../src/device/defaults.js';
import { ShutdownFlag, VSOCK_TYPE_STREAM, VsockOp } from '../../../src/protocol/vsock-packet.js';
import {
  fdCount,
  isFdOpen,
  mkfifo,
  patternBytes,
  readExactly,
  readToEof,
  tempDir,
} from '../../native-bindings/helpers.js';
import {
  fill,
  GUEST,
  Harness,
  type HarnessOptions,
  HOST,
  ioTurns,
  LOCAL_PORT,
  PEER_PORT,
  type Pulled,
  RecordingOwner,
} from './conn-harness.js';

const harnesses: Harness[] = [];
const toClose: number[] = [];
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const h of harnesses.splice(0)) h.dispose();
  for (const fd of toClose.splice(0)) closeQuietly(fd);
  for (const c of cleanups.splice(0)) c();
});

function harness(opts: HarnessOptions = {}): Harness {
  const h = new Harness(opts);
  harnesses.push(h);
  return h;
}

function peerInit(opts: HarnessOptions = {}): Harness {
  const h = harness({ initiator: 'peer', ...opts });
  h.establish();
  return h;
}

/** Makes the local socket full: small buffers, then filler bytes the test must read first. */
function stuffLocal(h: Harness): Buffer {
  setSocketBuffers(h.local, 4096);
  setSocketBuffers(h.remote, undefined, 4096);
  return fill(h.local);
}

const ops = (ps: Pulled[]) => ps.map((p) => p.hdr.op);
const payload = (ps: Pulled[]) => Buffer.concat(ps.filter((p) => p.data).map((p) => p.data!));

function expectAddressed(p: Pulled): void {
  expect(p.hdr).toMatchObject({
    srcCid: HOST,
    dstCid: GUEST,
    srcPort: LOCAL_PORT,
    dstPort: PEER_PORT,
    type: VSOCK_TYPE_STREAM,
    bufAlloc: BUF_ALLOC,
  });
}

describe('local-initiated connection', () => {
  it('sends REQUEST first, arms the 2 s timer, and RESPONSE makes it established', () => {
    const h = harness();
    expect(h.conn.state).toBe('local-init');
    expect(h.owner.rxCalls).toBe(1);
    expect(h.owner.timers).toEqual([2000]);
    const req = h.pull()!;
    expect(req.hdr.op).toBe(VsockOp.REQUEST);
    expectAddressed(req);
    expect(req.hdr).toMatchObject({ len: 0, flags: 0, fwdCnt: 0 });
    expect(h.pull()).toBeNull();
    expect(h.conn.hasPendingRx()).toBe(false);

    h.send(VsockOp.RESPONSE);
    expect(h.conn.state).toBe('established');
    expect(h.owner.establishedCalls).toBe(1);
    expect(h.pull()).toBeNull();
    // The request timer firing later is a no-op now.
    h.conn.onTimer(Date.now() + 10_000);
    expect(h.conn.hasPendingRx()).toBe(false);
    expect(h.owner.closedCalls).toEqual([]);
  });

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

  it('RST in answer to REQUEST closes it as refused, sending nothing, fd closed', () => {
    const h = harness();
    h.pull();
    const rxBefore = h.owner.rxCalls;
    h.send(VsockOp.RST);
    expect(h.conn.state).toBe('closed');
    expect(h.owner.closedCalls).toEqual([{ reason: 'refused', detail: undefined }]);
    expect(h.owner.establishedCalls).toBe(0);
    expect(h.pull()).toBeNull();
    expect(h.owner.rxCalls).toBe(rxBefore);
    expect(isFdOpen(h.local)).toBe(false);
  });

  it('no RESPONSE within 2 s: onTimer sends RST, then closes as timeout', () => {
    const h = harness();
    h.pull();
    h.conn.onTimer(Date.now()); // too early: nothing
    expect(h.conn.hasPendingRx()).toBe(false);
    expect(h.conn.state).toBe('local-init');
    h.conn.onTimer(Date.now() + 2000);
    expect(h.conn.hasPendingRx()).toBe(true);
    expect(h.owner.closedCalls).toEqual([]); // not before the RST is out
    const rst = h.pull()!;
    expect(rst.hdr.op).toBe(VsockOp.RST);
    expectAddressed(rst);
    expect(h.conn.state).toBe('closed');
    expect(h.owner.closedCalls).toHaveLength(1);
    expect(h.owner.closedCalls[0]!.reason).toBe('timeout');
    expect(h.pull()).toBeNull();
    expect(isFdOpen(h.local)).toBe(false);
  });

  it('sends preRead bytes before socket data', async () => {
    const pre = Buffer.from('bytes-after-CONNECT-line|');
    const h = harness({ preRead: pre });
    writeFd(h.remote, Buffer.from('socket-bytes'));
    h.establish();
    const got = await h.collect((ps) => payload(ps).length >= pre.length + 12);
    expect(got[0]!.hdr.op).toBe(VsockOp.RW);
    expect(got[0]!.data!.equals(pre)).toBe(true);
    expect(payload(got).toString()).toBe('bytes-after-CONNECT-line|socket-bytes');
  });

  it('preRead is sent even when the socket stays silent, and bounded by the peer credit', async () => {
    // Regression: leftover preRead bytes must resume on a CREDIT_UPDATE, not wait for the
    // local fd to turn readable (a silent socket would hold them back forever).
    const pre = Buffer.from('0123456789');
    const h = harness({ preRead: pre, peerBufAlloc: 4 });
    h.establish();
    await h.waitRx();
    const first = h.pull()!;
    expect(first.hdr.op).toBe(VsockOp.RW);
    expect(first.data!.toString()).toBe('0123');
    expect(h.pull()!.hdr.op).toBe(VsockOp.CREDIT_REQUEST);
    h.peerFwd = 4;
    h.send(VsockOp.CREDIT_UPDATE);
    const next = await h.collect((ps) => payload(ps).length >= 4, 1500);
    expect(payload(next).toString()).toBe('4567');
    h.peerFwd = 8;
    h.send(VsockOp.CREDIT_UPDATE);
    const rest = await h.collect((ps) => payload(ps).length >= 2, 1500);
    expect(payload(rest).toString()).toBe('89');
  });
});

describe('peer-initiated connection', () => {
  it('answers with RESPONSE and is established once it is pulled', () => {
    const h = harness({ initiator: 'peer' });
    expect(h.conn.state).toBe('peer-init');
    expect(h.owner.rxCalls).toBe(1);
    expect(h.owner.timers).toEqual([]);
    const resp = h.pull()!;
    expect(resp.hdr.op).toBe(VsockOp.RESPONSE);
    expectAddressed(resp);
    expect(resp.hdr.fwdCnt).toBe(0);
    expect(h.conn.state).toBe('established');
    expect(h.owner.establishedCalls).toBe(0); // only for our own REQUESTs
    expect(h.pull()).toBeNull();
  });

  it('RW before the RESPONSE went out is a protocol error (RST)', () => {
    const h = harness({ initiator: 'peer' });
    h.send(VsockOp.RW, Buffer.from('too soon'));
    const rst = h.pull()!;
    expect(rst.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls[0]!.reason).toBe('protocol');
  });

  it('a second REQUEST on the connection resets it (protocol)', () => {
    const h = peerInit();
    h.send(VsockOp.REQUEST);
    expect(h.pull()!.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls[0]!.reason).toBe('protocol');
  });

  it('an unexpected RESPONSE resets it (protocol)', () => {
    const h = peerInit();
    h.send(VsockOp.RESPONSE);
    expect(h.pull()!.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls[0]!.reason).toBe('protocol');
  });
});

describe('local → peer data and the peer’s credit', () => {
  it('turns socket bytes into RW packets no larger than the pull buffer', async () => {
    const h = peerInit();
    const data = patternBytes(300, 11);
    writeFd(h.remote, data);
    await h.waitRx();
    const first = h.pull(100)!;
    expect(first.hdr.op).toBe(VsockOp.RW);
    expect(first.hdr.len).toBe(100);
    expectAddressed(first);
    const rest = [first, ...(await h.collect((ps) => payload(ps).length >= 200))];
    expect(payload(rest).equals(data)).toBe(true);
  });

  it('bounds RW by buf_alloc - (tx_cnt - fwd_cnt), asks once for credit, resumes on CREDIT_UPDATE', async () => {
    const h = peerInit({ peerBufAlloc: 1000 });
    const data = patternBytes(2500, 12);
    writeFd(h.remote, data);
    await h.waitRx();
    const p1 = h.pull()!;
    expect(p1.hdr.op).toBe(VsockOp.RW);
    expect(p1.hdr.len).toBe(1000);
    expect(h.conn.peerCredit).toBe(0);
    const p2 = h.pull()!;
    expect(p2.hdr.op).toBe(VsockOp.CREDIT_REQUEST);
    expectAddressed(p2);
    expect(h.pull()).toBeNull();
    // The socket is still readable, but without credit nothing more is due, not even a second request.
    await ioTurns();
    expect(h.conn.hasPendingRx()).toBe(false);

    // The peer consumed 600: 600 bytes of credit.
    h.peerFwd = 600;
    h.send(VsockOp.CREDIT_UPDATE);
    await h.waitRx();
    const p3 = h.pull()!;
    expect(p3.hdr.op).toBe(VsockOp.RW);
    expect(p3.hdr.len).toBe(600);
    expect(h.pull()!.hdr.op).toBe(VsockOp.CREDIT_REQUEST);

    // A larger buf_alloc opens the window too.
    h.peerFwd = 1600;
    h.peerBufAlloc = 4096;
    h.send(VsockOp.CREDIT_UPDATE);
    const tail = await h.collect((ps) => payload(ps).length >= 900);
    expect(ops(tail)).toEqual([VsockOp.RW]);
    expect(Buffer.concat([p1.data!, p3.data!, payload(tail)]).equals(data)).toBe(true);
    expect(h.pull()).toBeNull();
  });

  it('with the peer’s credit at 0 from the start, asks for credit as soon as it has data', async () => {
    const h = peerInit({ peerBufAlloc: 0 });
    writeFd(h.remote, Buffer.from('wait for it'));
    const got = await h.collect((ps) => ps.length >= 1);
    expect(ops(got)).toEqual([VsockOp.CREDIT_REQUEST]);
    h.peerBufAlloc = 65536;
    h.send(VsockOp.CREDIT_UPDATE);
    const rw = await h.collect((ps) => payload(ps).length >= 11);
    expect(payload(rw).toString()).toBe('wait for it');
  });

  it('answers CREDIT_REQUEST with CREDIT_UPDATE carrying its fwd_cnt', () => {
    const h = peerInit();
    h.send(VsockOp.RW, Buffer.from('12345'));
    h.send(VsockOp.CREDIT_REQUEST);
    const upd = h.pull()!;
    expect(upd.hdr.op).toBe(VsockOp.CREDIT_UPDATE);
    expectAddressed(upd);
    expect(upd.hdr.fwdCnt).toBe(5);
  });
});

describe('peer → local data', () => {
  it('writes RW payloads to the local socket and counts them in fwd_cnt', async () => {
    const h = peerInit();
    const a = patternBytes(1000, 21);
    const b = patternBytes(3000, 22);
    h.send(VsockOp.RW, a);
    h.send(VsockOp.RW, b);
    expect(h.conn.buffered).toBe(0);
    expect((await readExactly(h.remote, 4000)).equals(Buffer.concat([a, b]))).toBe(true);
    // Small writes do not trigger an unsolicited CREDIT_UPDATE (free space >= 4 KiB).
    expect(h.conn.hasPendingRx()).toBe(false);
    h.send(VsockOp.CREDIT_REQUEST);
    expect(h.pull()!.hdr.fwdCnt).toBe(4000);
  });

  it('sends a CREDIT_UPDATE on its own once the free space the peer saw drops under 4 KiB', async () => {
    const h = peerInit();
    const chunk = patternBytes(8192, 23);
    let sent = 0;
    const received: Buffer[] = [];
    // Keep the socket drained so every byte is delivered at once.
    while (sent < BUF_ALLOC - 4096) {
      h.send(VsockOp.RW, chunk);
      sent += chunk.length;
      received.push(await readExactly(h.remote, chunk.length));
      if (sent <= BUF_ALLOC - 4096 - chunk.length) expect(h.conn.hasPendingRx()).toBe(false);
    }
    h.send(VsockOp.RW, chunk);
    sent += chunk.length;
    expect(h.conn.hasPendingRx()).toBe(true);
    const upd = h.pull()!;
    expect(upd.hdr.op).toBe(VsockOp.CREDIT_UPDATE);
    expect(upd.hdr.fwdCnt).toBe(sent);
  });

  it('buffers up to 64 KiB when the local socket is full; CREDIT_UPDATE only once space frees (fwd_cnt = delivered)', async () => {
    const h = peerInit();
    const filler = stuffLocal(h);
    expect(filler.length).toBeGreaterThan(0);
    const data = patternBytes(BUF_ALLOC, 24);
    for (let off = 0; off < data.length; off += 4096) h.send(VsockOp.RW, data.subarray(off, off + 4096));
    expect(h.conn.buffered).toBe(BUF_ALLOC);
    expect(h.conn.state).toBe('established');
    // Nothing delivered: no credit to give back, so no CREDIT_UPDATE (and no RST).
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

    const out = await readExactly(h.remote, BUF_ALLOC);
    expect(out.equals(data)).toBe(true);
    expect(h.conn.buffered).toBe(0);
    h.send(VsockOp.CREDIT_REQUEST);
    const all = h.pullAll();
    expect(all.at(-1)!.hdr.op).toBe(VsockOp.CREDIT_UPDATE);
    expect(all.at(-1)!.hdr.fwdCnt).toBe(BUF_ALLOC);
    expect(h.conn.state).toBe('established');
  });

  it('keeps peer bytes in order when later packets arrive while earlier ones are buffered', async () => {
    const h = peerInit();
    const filler = stuffLocal(h);
    const parts = [patternBytes(5000, 31), patternBytes(1, 32), patternBytes(20000, 33)];
    for (const p of parts) h.send(VsockOp.RW, p);
    const out = await readExactly(h.remote, filler.length + 25001);
    expect(out.subarray(filler.length).equals(Buffer.concat(parts))).toBe(true);
  });

  it('more than the advertised credit is a protocol error: RST, closed as protocol', async () => {
    const h = peerInit();
    stuffLocal(h);
    h.send(VsockOp.RW, Buffer.alloc(BUF_ALLOC, 1));
    expect(h.conn.hasPendingRx()).toBe(false);
    h.send(VsockOp.RW, Buffer.from('x'));
    await h.waitRx();
    const rst = h.pull()!;
    expect(rst.hdr.op).toBe(VsockOp.RST);
    expectAddressed(rst);
    expect(h.owner.closedCalls[0]!.reason).toBe('protocol');
    expect(isFdOpen(h.local)).toBe(false);
  });

  it("a connection's own buf_alloc (the loopback guest's 256 KiB, as Linux) is what it advertises and holds", async () => {
    const h = peerInit({ bufAlloc: GUEST_BUF_ALLOC });
    h.send(VsockOp.CREDIT_REQUEST);
    expect(h.pull()!.hdr.bufAlloc).toBe(GUEST_BUF_ALLOC);
    const filler = stuffLocal(h);
    const data = patternBytes(GUEST_BUF_ALLOC, 41);
    for (let off = 0; off < data.length; off += 65536) h.send(VsockOp.RW, data.subarray(off, off + 65536));
    expect(h.conn.buffered).toBe(GUEST_BUF_ALLOC);
    expect(h.conn.state).toBe('established');
    expect((await readExactly(h.remote, filler.length)).equals(filler)).toBe(true);
    expect((await readExactly(h.remote, GUEST_BUF_ALLOC)).equals(data)).toBe(true);
    // One byte past the window is still a protocol error.
    stuffLocal(h);
    h.send(VsockOp.RW, Buffer.alloc(GUEST_BUF_ALLOC + 1));
    expect(h.pullAll().at(-1)!.hdr.op).toBe(VsockOp.RST);
  });

  it('a single RW larger than the whole window on a full socket is a protocol error', () => {
    const h = peerInit();
    stuffLocal(h);
    h.send(VsockOp.RW, Buffer.alloc(BUF_ALLOC + 1));
    expect(h.pull()!.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls[0]!.reason).toBe('protocol');
  });

  it('a local write error (EPIPE: the local reader is gone) is local-error + RST', () => {
    const h = peerInit();
    closeFd(h.remote);
    h.send(VsockOp.RW, Buffer.from('nobody reads'));
    const rst = h.pull()!;
    expect(rst.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls[0]).toEqual({ reason: 'local-error', detail: 'EPIPE' });
  });
});

describe('shutdown', () => {
  it('local EOF sends SHUTDOWN with flags exactly 2 (SEND only) after the last bytes', async () => {
    const h = peerInit();
    writeFd(h.remote, Buffer.from('last words'));
    shutdownFd(h.remote, SHUT_WR);
    const got = await h.collect((ps) => ps.some((p) => p.hdr.op === VsockOp.SHUTDOWN));
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.SHUTDOWN]);
    expect(payload(got).toString()).toBe('last words');
    const sd = got[1]!;
    expectAddressed(sd);
    expect(sd.hdr.flags).toBe(2);
    expect(sd.hdr.flags).toBe(ShutdownFlag.SEND);
    expect(sd.hdr.len).toBe(0);
    // Half-closed, not closed: the peer may still send.
    expect(h.conn.state).toBe('established');
    expect(h.pull()).toBeNull();
    h.send(VsockOp.RW, Buffer.from('reply'));
    expect((await readExactly(h.remote, 5)).toString()).toBe('reply');
    // The peer finishing too: we are done both ways, so SHUTDOWN(RCV|SEND), and the
    // peer (the side that receives the full shutdown, as in Linux) answers RST.
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND });
    const end = h.pullAll();
    expect(ops(end)).toEqual([VsockOp.SHUTDOWN]);
    expect(end[0]!.hdr.flags).toBe(ShutdownFlag.RCV | ShutdownFlag.SEND);
    expect(h.owner.timers).toEqual([2000]);
    expect(h.conn.state).toBe('established');
    h.send(VsockOp.RST);
    expect(h.conn.state).toBe('closed');
    expect(h.owner.closedCalls).toHaveLength(1);
    expect(isFdOpen(h.local)).toBe(false);
    expect(h.pull()).toBeNull();
  });

  it('after our SHUTDOWN(RCV|SEND), a peer that never answers RST is reset after 2 s (done)', async () => {
    const h = peerInit();
    shutdownFd(h.remote, SHUT_WR);
    const first = await h.collect((ps) => ps.some((p) => p.hdr.op === VsockOp.SHUTDOWN));
    expect(first.at(-1)!.hdr.flags).toBe(ShutdownFlag.SEND);
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND });
    const second = h.pullAll();
    expect(ops(second)).toEqual([VsockOp.SHUTDOWN]);
    expect(second[0]!.hdr.flags).toBe(ShutdownFlag.RCV | ShutdownFlag.SEND);
    h.conn.onTimer(Date.now()); // too early
    expect(h.conn.hasPendingRx()).toBe(false);
    h.conn.onTimer(Date.now() + 2000);
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls).toHaveLength(1);
    expect(h.owner.closedCalls[0]!.reason).toBe('done');
  });

  it('a local socket closed outright (not half-closed) sends SHUTDOWN(RCV|SEND)', async () => {
    const h = peerInit();
    writeFd(h.remote, Buffer.from('bye'));
    closeFd(h.remote);
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
    expect(h.conn.buffered).toBe(3000);
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND });
    expect(h.owner.timers).toEqual([2000]); // drain deadline
    expect(h.conn.hasPendingRx()).toBe(false);
    const all = await readToEof(h.remote);
    expect(all.equals(Buffer.concat([filler, data]))).toBe(true);
    expect(h.conn.buffered).toBe(0);
    // Drained in time: the drain timer firing later does nothing.
    h.conn.onTimer(Date.now() + 5000);
    expect(h.conn.state).toBe('established');

    // The other direction still works, and local EOF then finishes the connection.
    writeFd(h.remote, Buffer.from('still talking'));
    shutdownFd(h.remote, SHUT_WR);
    const got = await h.collect((ps) => ps.some((p) => p.hdr.op === VsockOp.SHUTDOWN));
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.SHUTDOWN]);
    expect(payload(got).toString()).toBe('still talking');
    // Both directions are finished here: a full SHUTDOWN, and the peer's RST closes it.
    expect(got[1]!.hdr.flags).toBe(ShutdownFlag.RCV | ShutdownFlag.SEND);
    h.send(VsockOp.RST);
    expect(h.conn.state).toBe('closed');
    expect(isFdOpen(h.local)).toBe(false);
  });

  it('RW after the peer shut down sending is a protocol error', () => {
    const h = peerInit();
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND });
    h.send(VsockOp.RW, Buffer.from('zombie'));
    expect(h.pull()!.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls[0]!.reason).toBe('protocol');
  });

  it('peer SHUTDOWN(both) with nothing buffered: RST, closed as done', async () => {
    const h = peerInit();
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.RCV | ShutdownFlag.SEND });
    expect(h.conn.hasPendingRx()).toBe(true);
    const rst = h.pull()!;
    expect(rst.hdr.op).toBe(VsockOp.RST);
    expectAddressed(rst);
    expect(h.owner.closedCalls).toEqual([{ reason: 'done', detail: undefined }]);
    expect(h.pull()).toBeNull();
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
    const out = await readToEof(h.remote);
    expect(out.equals(Buffer.concat([filler, data]))).toBe(true);
    await h.waitRx();
    const got = h.pullAll();
    expect(ops(got)).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls).toEqual([{ reason: 'done', detail: undefined }]);
  });

  it('peer SHUTDOWN(both) with buffered bytes never drained: onTimer(now + 2 s) sends RST, closed as timeout', () => {
    const h = peerInit();
    stuffLocal(h);
    h.send(VsockOp.RW, Buffer.alloc(1000, 7));
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.RCV | ShutdownFlag.SEND });
    expect(h.owner.timers).toEqual([2000]);
    h.conn.onTimer(Date.now()); // too early
    expect(h.conn.hasPendingRx()).toBe(false);
    h.conn.onTimer(Date.now() + 2000);
    const rst = h.pull()!;
    expect(rst.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls).toHaveLength(1);
    expect(h.owner.closedCalls[0]!.reason).toBe('timeout');
    expect(isFdOpen(h.local)).toBe(false);
  });

  it('peer SHUTDOWN(SEND) with buffered bytes never drained: reset as timeout too', () => {
    const h = peerInit();
    stuffLocal(h);
    h.send(VsockOp.RW, Buffer.alloc(1000, 7));
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND });
    h.conn.onTimer(Date.now() + 2000);
    expect(h.pull()!.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls[0]!.reason).toBe('timeout');
  });

  it('peer SHUTDOWN(RCV) only: a slow local reader is backpressure, not a reason to reset', async () => {
    // Regression (was a bug, now fixed): src/device/csm/connection.ts maybeFinish arms the 2 s drain deadline
    // for `peerShutSend || peerShutRcv` with bytes buffered. After SHUTDOWN(RCV)
    // alone the peer is still sending, so there is nothing to "drain": a local
    // reader that is merely slow for 2 s gets the stream reset and the buffered
    // bytes (and everything after) lost. Firecracker arms its kill timer only
    // for PeerClosed(true, true); the design asks it for half-closed streams
    // (peer done sending). Fix: arm the drain deadline only when peerShutSend.
    const h = peerInit();
    const filler = stuffLocal(h);
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.RCV });
    const data = patternBytes(5000, 43);
    h.send(VsockOp.RW, data);
    expect(h.conn.buffered).toBe(5000);
    h.conn.onTimer(Date.now() + 2000);
    expect(h.conn.hasPendingRx()).toBe(false);
    expect(h.conn.state).toBe('established');
    const out = await readExactly(h.remote, filler.length + data.length);
    expect(out.subarray(filler.length).equals(data)).toBe(true);
  });

  it('peer SHUTDOWN(RCV) stops reading the local socket', async () => {
    const h = peerInit();
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.RCV });
    writeFd(h.remote, Buffer.from('unwanted'));
    await ioTurns();
    expect(h.conn.hasPendingRx()).toBe(false);
    expect(h.pull()).toBeNull();
    // Peer's data still flows to the local socket.
    h.send(VsockOp.RW, Buffer.from('still'));
    expect((await readExactly(h.remote, 5)).toString()).toBe('still');
  });
});

describe('reset and ownership', () => {
  it('peer RST closes it as peer-reset and sends nothing', async () => {
    const h = peerInit();
    writeFd(h.remote, Buffer.from('pending data'));
    const rxBefore = h.owner.rxCalls;
    h.send(VsockOp.RST);
    expect(h.conn.state).toBe('closed');
    expect(h.owner.closedCalls).toEqual([{ reason: 'peer-reset', detail: undefined }]);
    expect(h.conn.hasPendingRx()).toBe(false);
    expect(h.pull()).toBeNull();
    await ioTurns();
    expect(h.owner.rxCalls).toBe(rxBefore);
    expect(isFdOpen(h.local)).toBe(false);
    // Packets after the end are ignored.
    h.send(VsockOp.RW, Buffer.from('late'));
    expect(h.owner.closedCalls).toHaveLength(1);
  });

  it('close() closes the local fd without telling the peer', async () => {
    const h = peerInit();
    expect(isFdOpen(h.local)).toBe(true);
    h.conn.close();
    expect(isFdOpen(h.local)).toBe(false);
    expect(h.owner.closedCalls).toEqual([{ reason: 'shutdown', detail: undefined }]);
    expect(h.pull()).toBeNull();
    h.conn.close('done'); // idempotent
    expect(h.owner.closedCalls).toHaveLength(1);
    expect(await readToEof(h.remote)).toHaveLength(0);
  });

  it('closes the local fd and leaks no fd over a full lifecycle', async () => {
    const before = fdCount();
    const h = new Harness({ initiator: 'peer' });
    h.establish();
    writeFd(h.remote, Buffer.from('x'));
    await h.collect((ps) => ps.length >= 1);
    h.send(VsockOp.RST);
    expect(isFdOpen(h.local)).toBe(false);
    closeFd(h.remote);
    expect(fdCount()).toBe(before);
  });

  it('reset() sends one RST and then closes with the given reason', () => {
    const h = peerInit();
    h.conn.reset('shutdown', 'owner going away');
    h.conn.reset('protocol'); // the first reason wins
    const got = h.pullAll();
    expect(ops(got)).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls).toEqual([{ reason: 'shutdown', detail: 'owner going away' }]);
  });

  it('refuses a regular file (SysError EPERM); the caller keeps the fd and the owner hears nothing', () => {
    const d = tempDir('conn-');
    cleanups.push(d.remove);
    const fd = fs.openSync(path.join(d.path, 'regular'), 'w+');
    toClose.push(fd);
    let err: unknown;
    try {
      harness({ fd, initiator: 'peer' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SysError);
    expect((err as SysError).code).toBe('EPERM');
    expect(isFdOpen(fd)).toBe(true);
  });

  it('writeLocal puts the owner’s bytes on the local socket ahead of stream data', async () => {
    const h = harness();
    h.conn.writeLocal(Buffer.from('OK 1073741829\n'));
    h.establish();
    h.send(VsockOp.RW, Buffer.from('stream'));
    expect((await readExactly(h.remote, 20)).toString()).toBe('OK 1073741829\nstream');
  });
});

describe('keep, with a FIFO passed read-only', () => {
  function fifoPair(): { path: string; rfd: number } {
    const d = tempDir('conn-fifo-');
    cleanups.push(d.remove);
    const p = mkfifo(path.join(d.path, 'stdin'));
    const rfd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    return { path: p, rfd };
  }
  const openWriter = (p: string) => fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);

  it('survives the writer closing and reopening: data continues, no SHUTDOWN is sent', async () => {
    const { path: p, rfd } = fifoPair();
    const w1 = openWriter(p);
    toClose.push(w1);
    const before = fdCount();
    const h = harness({ fd: rfd, initiator: 'peer', keep: true });
    expect(fdCount()).toBe(before + 1); // the keeper: the FIFO reopened for writing
    h.establish();

    writeFd(w1, Buffer.from('one'));
    const first = await h.collect((ps) => payload(ps).length >= 3);
    expect(ops(first)).toEqual([VsockOp.RW]);
    expect(payload(first).toString()).toBe('one');
    expect(h.pullAll()).toEqual([]); // the read turn ends at EAGAIN

    closeFd(w1);
    toClose.splice(toClose.indexOf(w1), 1);
    await ioTurns(3);
    expect(h.conn.hasPendingRx()).toBe(false); // no EOF, no SHUTDOWN
    expect(h.conn.state).toBe('established');

    const w2 = openWriter(p);
    toClose.push(w2);
    writeFd(w2, Buffer.from('two'));
    const second = await h.collect((ps) => payload(ps).length >= 3);
    expect(ops(second)).toEqual([VsockOp.RW]);
    expect(payload(second).toString()).toBe('two');
    expect(h.pull()).toBeNull();

    h.conn.close();
    expect(isFdOpen(rfd)).toBe(false);
    expect(fdCount()).toBe(before - 1); // rfd and the keeper are both gone
  });

  it('without keep, the writer closing is EOF: SHUTDOWN(SEND)', async () => {
    const { path: p, rfd } = fifoPair();
    const w = openWriter(p);
    const h = harness({ fd: rfd, initiator: 'peer' });
    h.establish();
    writeFd(w, Buffer.from('bye'));
    closeFd(w);
    const got = await h.collect((ps) => ps.some((x) => x.hdr.op === VsockOp.SHUTDOWN));
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.SHUTDOWN]);
    expect(payload(got).toString()).toBe('bye');
    expect(got[1]!.hdr.flags).toBe(ShutdownFlag.SEND);
    // The peer finishing too: full SHUTDOWN from us, then the peer's RST ends it.
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND });
    const end = h.pullAll();
    expect(ops(end)).toEqual([VsockOp.SHUTDOWN]);
    expect(end[0]!.hdr.flags).toBe(ShutdownFlag.RCV | ShutdownFlag.SEND);
    h.send(VsockOp.RST);
    expect(h.conn.state).toBe('closed');
    expect(isFdOpen(rfd)).toBe(false);
  });

  it('data from the peer for a read-only fd is a local error', () => {
    const { rfd } = fifoPair();
    const h = harness({ fd: rfd, initiator: 'peer', keep: true });
    h.establish();
    h.send(VsockOp.RW, Buffer.from('nowhere to go'));
    expect(h.pull()!.hdr.op).toBe(VsockOp.RST);
    expect(h.owner.closedCalls[0]!.reason).toBe('local-error');
  });
});

describe('keep, with a socket', () => {
  it('local EOF parks reading and leaves the connection open (no SHUTDOWN)', async () => {
    const h = peerInit({ keep: true });
    writeFd(h.remote, Buffer.from('abc'));
    shutdownFd(h.remote, SHUT_WR);
    const got = await h.collect((ps) => payload(ps).length >= 3);
    expect(ops(got)).toEqual([VsockOp.RW]);
    await ioTurns();
    expect(h.pullAll()).toEqual([]);
    expect(h.conn.state).toBe('established');
    // Still writable the other way.
    h.send(VsockOp.RW, Buffer.from('xyz'));
    const b = Buffer.alloc(8);
    expect(readFd(h.remote, b)).toBe(3);
    expect(readFd(h.remote, b)).toBe(WOULD_BLOCK);
  });
});

describe('owner double', () => {
  it('RecordingOwner.waitFor times out cleanly', async () => {
    const o = new RecordingOwner();
    await expect(o.waitFor(() => false, 20, 'never')).rejects.toThrow(/timed out/);
  });
});
