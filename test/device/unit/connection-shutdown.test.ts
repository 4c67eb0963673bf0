// VsockConnection's closing handshake, driven with a FakeEnd (no fd) and
// fake time (no sleeps): local EOF → SHUTDOWN(SEND) only (half-close), or
// SHUTDOWN(RCV|SEND) when the end was closed outright; finishing both ways
// → our full SHUTDOWN and ≤ 2 s for the peer's RST; the peer's
// SHUTDOWN(SEND) → the end's write side shut once the buffered bytes are
// out, with a 2 s drain deadline (none after SHUTDOWN(RCV) alone, none for
// an end whose slow reader is backpressure); the peer's full SHUTDOWN →
// our RST once everything is delivered; SHUTDOWN(RCV) stops reading;
// `keep` parks reading at EOF and keeps the connection.

import { afterEach, describe, expect, it } from 'vitest';
import { ShutdownFlag, VsockOp } from '../../../src/protocol/vsock-packet.js';
import { fakeHarness, type Harness, type HarnessOptions, ops, payload } from './conn-harness.js';
import type { FakeEnd, FakeEndOptions } from './fake-end.js';

const harnesses: Harness[] = [];
afterEach(() => {
  for (const h of harnesses.splice(0)) h.dispose();
});

function established(opts: HarnessOptions & FakeEndOptions = {}): Harness<FakeEnd> {
  const h = fakeHarness({ initiator: 'peer', ...opts }).establish();
  harnesses.push(h);
  return h;
}

const SEND = ShutdownFlag.SEND;
const BOTH = ShutdownFlag.RCV | ShutdownFlag.SEND;

/** The local process writes `text` and closes its write side; the connection reads it all. */
function localEof(h: Harness<FakeEnd>, text = ''): ReturnType<Harness['pullAll']> {
  if (text) h.end.feed(text);
  h.end.endOfStream();
  h.end.signal();
  return h.pullAll();
}

describe('we finish first', () => {
  it('local EOF: SHUTDOWN with flags exactly SEND after the last bytes, and the peer may still send', () => {
    const h = established();
    const got = localEof(h, 'last words');
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.SHUTDOWN]);
    expect(payload(got).toString()).toBe('last words');
    expect(got[1]!.hdr).toMatchObject({ flags: SEND, len: 0 });
    expect(h.conn.state).toBe('established');
    expect(h.end.interest.read).toBe(false);
    h.send(VsockOp.RW, Buffer.from('reply'));
    expect(h.end.output.toString()).toBe('reply');
  });

  it('the peer finishing too: our full SHUTDOWN, then its RST ends it', () => {
    const h = established();
    localEof(h);
    h.send(VsockOp.SHUTDOWN, undefined, { flags: SEND });
    expect(h.end.shutdownWrites).toBe(1);
    const end = h.pullAll();
    expect(ops(end)).toEqual([VsockOp.SHUTDOWN]);
    expect(end[0]!.hdr.flags).toBe(BOTH);
    expect(h.owner.timers).toEqual([2000]);
    h.send(VsockOp.RST);
    expect(h.owner.closedCalls).toEqual([{ reason: 'peer-reset', detail: undefined }]);
    expect(h.end.closeCalls).toBe(1);
  });

  it('a peer that never answers our full SHUTDOWN with RST is reset after 2 s (done)', () => {
    const h = established();
    localEof(h);
    h.send(VsockOp.SHUTDOWN, undefined, { flags: SEND });
    expect(ops(h.pullAll())).toEqual([VsockOp.SHUTDOWN]);
    h.clock.advance(1999);
    expect(h.conn.hasPendingRx()).toBe(false);
    h.clock.advance(1);
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls).toEqual([
      { reason: 'done', detail: 'peer did not reset within 2 s of our SHUTDOWN' },
    ]);
  });

  it('an end closed outright (not half-closed) sends SHUTDOWN(RCV|SEND) at once', () => {
    const h = established();
    h.end.outright = true;
    const got = localEof(h, 'bye');
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.SHUTDOWN]);
    expect(got[1]!.hdr.flags).toBe(BOTH);
    expect(h.owner.timers).toEqual([2000]);
  });

  it('a write-only end never sends: the peer’s SHUTDOWN(SEND) with all delivered finishes it', () => {
    const h = established({ canRead: false });
    expect(h.end.interest.read).toBe(false);
    h.send(VsockOp.RW, Buffer.from('out'));
    h.send(VsockOp.SHUTDOWN, undefined, { flags: SEND });
    const end = h.pullAll();
    expect(ops(end)).toEqual([VsockOp.SHUTDOWN]);
    expect(end[0]!.hdr.flags).toBe(BOTH);
  });
});

describe('the peer finishes first', () => {
  it('SHUTDOWN(SEND): the end’s write side is shut once the buffered bytes are out, and it can still send', () => {
    const h = established();
    h.end.room = 0;
    h.send(VsockOp.RW, Buffer.from('buffered'));
    h.send(VsockOp.SHUTDOWN, undefined, { flags: SEND });
    expect(h.end.shutdownWrites).toBe(0);
    expect(h.owner.timers).toEqual([2000]); // the drain deadline
    h.end.drain();
    expect(h.end.output.toString()).toBe('buffered');
    expect(h.end.shutdownWrites).toBe(1);
    h.clock.advance(5000); // drained in time: the deadline passing does nothing
    expect(h.conn.state).toBe('established');
    h.end.feed('still talking');
    h.end.signal();
    expect(payload(h.pullAll()).toString()).toBe('still talking');
    const end = localEof(h);
    expect(ops(end)).toEqual([VsockOp.SHUTDOWN]);
    expect(end[0]!.hdr.flags).toBe(BOTH);
  });

  it('RW after the peer shut down sending is a protocol error', () => {
    const h = established();
    h.send(VsockOp.SHUTDOWN, undefined, { flags: SEND });
    h.send(VsockOp.RW, Buffer.from('zombie'));
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls[0]!.reason).toBe('protocol');
  });

  it('SHUTDOWN(RCV|SEND) with nothing buffered: RST, closed as done', () => {
    const h = established();
    h.send(VsockOp.SHUTDOWN, undefined, { flags: BOTH });
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls).toEqual([{ reason: 'done', detail: undefined }]);
    expect(h.end.closed).toBe(true);
  });

  it('SHUTDOWN(RCV|SEND) with buffered bytes: RST only after they are delivered', () => {
    const h = established();
    h.end.room = 0;
    h.send(VsockOp.RW, Buffer.from('deliver me'));
    h.send(VsockOp.SHUTDOWN, undefined, { flags: BOTH });
    expect(h.conn.hasPendingRx()).toBe(false);
    h.end.drain();
    expect(h.end.output.toString()).toBe('deliver me');
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls).toEqual([{ reason: 'done', detail: undefined }]);
  });

  it.each([
    ['SHUTDOWN(RCV|SEND)', BOTH],
    ['SHUTDOWN(SEND)', SEND],
  ])('%s with buffered bytes never drained: RST after 2 s, closed as timeout', (_name, flags) => {
    const h = established();
    h.end.room = 0;
    h.send(VsockOp.RW, Buffer.alloc(1000, 7));
    h.send(VsockOp.SHUTDOWN, undefined, { flags });
    h.clock.advance(1999);
    expect(h.conn.hasPendingRx()).toBe(false);
    h.clock.advance(1);
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls).toEqual([
      { reason: 'timeout', detail: 'shutdown not drained within 2 s (1000 bytes left)' },
    ]);
  });

  it('SHUTDOWN(RCV) only: a slow local reader is backpressure, not a reason to reset', () => {
    // Regression: after SHUTDOWN(RCV) alone the peer is still sending, so there is nothing
    // to "drain" (Firecracker arms its kill timer only once the peer is done sending).
    const h = established();
    h.end.room = 0;
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.RCV });
    h.send(VsockOp.RW, Buffer.alloc(5000, 8));
    expect(h.owner.timers).toEqual([]);
    h.clock.advance(60_000);
    expect(h.conn.state).toBe('established');
    h.end.drain();
    expect(h.end.output).toHaveLength(5000);
  });

  it('an end whose slow reader is backpressure (a FIFO) gets no drain deadline after SHUTDOWN(SEND)', () => {
    const h = established({ slowReaderIsBackpressure: true, canRead: false });
    h.end.room = 0;
    h.send(VsockOp.RW, Buffer.alloc(3000, 9));
    h.send(VsockOp.SHUTDOWN, undefined, { flags: SEND });
    expect(h.owner.timers).toEqual([]);
    h.clock.advance(60_000);
    expect(h.conn.state).toBe('established');
    h.end.drain();
    expect(h.end.output).toHaveLength(3000);
    expect(h.pullAll()[0]!.hdr.flags).toBe(BOTH);
  });

  it('SHUTDOWN(RCV) stops reading the end; the peer’s data still flows in', () => {
    const h = established();
    h.send(VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.RCV });
    expect(h.end.interest.read).toBe(false);
    h.end.feed('unwanted');
    h.end.signal();
    expect(h.pullAll()).toEqual([]);
    h.send(VsockOp.RW, Buffer.from('still'));
    expect(h.end.output.toString()).toBe('still');
  });
});

describe('keep', () => {
  it('local EOF parks reading and leaves the connection open: no SHUTDOWN, writes go on', () => {
    const h = established({ keep: true });
    const got = localEof(h, 'abc');
    expect(ops(got)).toEqual([VsockOp.RW]);
    expect(h.end.interest.read).toBe(false);
    expect(h.conn.state).toBe('established');
    h.send(VsockOp.RW, Buffer.from('xyz'));
    expect(h.end.output.toString()).toBe('xyz');
    h.clock.advance(60_000);
    expect(h.conn.hasPendingRx()).toBe(false);
  });

  it('without keep the same EOF is a half-close', () => {
    const h = established();
    expect(ops(localEof(h, 'abc'))).toEqual([VsockOp.RW, VsockOp.SHUTDOWN]);
  });
});
