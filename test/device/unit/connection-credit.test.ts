// VsockConnection's credit, both ways, driven with a FakeEnd (no fd): RW
// payloads never larger than the pull buffer or the peer's credit
// `buf_alloc - (tx_cnt - fwd_cnt)`; one CREDIT_REQUEST when it runs out (and
// no read interest meanwhile), resumed by CREDIT_UPDATE; CREDIT_REQUEST
// answered with our fwd_cnt; an unsolicited CREDIT_UPDATE once the free
// space the peer saw drops under 4 KiB; peer bytes the local reader cannot
// take buffered up to our buf_alloc (the policy's: 64 KiB for the device,
// 256 KiB for the loopback guest) with fwd_cnt counting only delivered
// bytes; more than the credit is a protocol error; a failing local write
// is a local error carrying the errno name.

import { afterEach, describe, expect, it } from 'vitest';
import { BUF_ALLOC, GUEST_BUF_ALLOC, GUEST_CREDIT } from '../../../src/device/defaults.js';
import { VsockOp } from '../../../src/protocol/vsock-packet.js';
import { patternBytes } from '../../native-bindings/helpers.js';
import { fakeHarness, type Harness, type HarnessOptions, ops, payload } from './conn-harness.js';
import { errnoError, type FakeEnd } from './fake-end.js';

const harnesses: Harness[] = [];
afterEach(() => {
  for (const h of harnesses.splice(0)) h.dispose();
});

function established(opts: HarnessOptions = {}): Harness<FakeEnd> {
  const h = fakeHarness({ initiator: 'peer', ...opts }).establish();
  harnesses.push(h);
  return h;
}

describe('local → peer', () => {
  it('reads the end only on its RW turn, into the pull buffer, no more than it holds', () => {
    const h = established();
    const data = patternBytes(300, 1);
    h.end.feed(data);
    expect(h.conn.hasPendingRx()).toBe(false); // not before the end reports readable
    h.end.signal();
    expect(h.conn.hasPendingRx()).toBe(true);
    expect(h.end.unread).toBe(300); // nothing read yet: the pull reads
    const first = h.pull(100)!;
    expect(first.hdr).toMatchObject({ op: VsockOp.RW, len: 100 });
    const rest = h.pullAll();
    expect(Buffer.concat([first.data!, payload(rest)]).equals(data)).toBe(true);
    expect(h.end.interest.read).toBe(true); // back to waiting once the end would block
  });

  it('bounds RW by the peer’s credit, asks once, and waits (no read interest) until CREDIT_UPDATE', () => {
    const h = established({ peerBufAlloc: 1000 });
    h.end.feed(patternBytes(2500, 2));
    h.end.signal();
    const got = h.pullAll();
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.CREDIT_REQUEST]);
    expect(got[0]!.hdr.len).toBe(1000);
    expect(h.conn.peerCredit).toBe(0);
    expect(h.end.interest.read).toBe(false);
    h.end.signal();
    expect(h.conn.hasPendingRx()).toBe(false); // no second CREDIT_REQUEST

    h.peerFwd = 600; // the peer consumed 600 bytes
    h.send(VsockOp.CREDIT_UPDATE);
    expect(h.end.interest.read).toBe(true);
    h.end.signal();
    const more = h.pullAll();
    expect(ops(more)).toEqual([VsockOp.RW, VsockOp.CREDIT_REQUEST]);
    expect(more[0]!.hdr.len).toBe(600);

    h.peerFwd = 1600;
    h.peerBufAlloc = 4096; // a larger buf_alloc opens the window too
    h.send(VsockOp.CREDIT_UPDATE);
    h.end.signal();
    expect(payload(h.pullAll())).toHaveLength(900);
  });

  it('with the peer’s credit at 0 from the start, asks for credit as soon as it may read', () => {
    const h = fakeHarness({ initiator: 'peer', peerBufAlloc: 0 });
    harnesses.push(h);
    expect(ops(h.pullAll())).toEqual([VsockOp.RESPONSE, VsockOp.CREDIT_REQUEST]);
    h.end.feed('wait for it');
    h.peerBufAlloc = 65536;
    h.send(VsockOp.CREDIT_UPDATE);
    h.end.signal();
    expect(payload(h.pullAll()).toString()).toBe('wait for it');
  });

  it('counts what it sent: the peer’s fwd_cnt catching up restores exactly that much credit', () => {
    const h = established({ peerBufAlloc: 10_000 });
    h.end.feed(patternBytes(4000, 3));
    h.end.signal();
    h.pullAll();
    expect(h.conn.peerCredit).toBe(6000);
    h.peerFwd = 1500;
    h.send(VsockOp.CREDIT_UPDATE);
    expect(h.conn.peerCredit).toBe(7500);
  });
});

describe('peer → local', () => {
  it('writes RW payloads to the end, and answers CREDIT_REQUEST with fwd_cnt', () => {
    const h = established();
    h.send(VsockOp.RW, Buffer.from('12345'));
    h.send(VsockOp.RW, Buffer.from('678'));
    expect(h.end.output.toString()).toBe('12345678');
    expect(h.conn.hasPendingRx()).toBe(false); // small writes: no unsolicited update
    h.send(VsockOp.CREDIT_REQUEST);
    const upd = h.pull()!;
    expect(upd.hdr).toMatchObject({ op: VsockOp.CREDIT_UPDATE, fwdCnt: 8, bufAlloc: BUF_ALLOC });
  });

  it('sends a CREDIT_UPDATE on its own once the free space the peer saw drops under 4 KiB', () => {
    const h = established();
    const chunk = Buffer.alloc(8192, 1);
    let sent = 0;
    while (sent + chunk.length <= BUF_ALLOC - 4096) {
      h.send(VsockOp.RW, chunk);
      sent += chunk.length;
      expect(h.conn.hasPendingRx()).toBe(false);
    }
    h.send(VsockOp.RW, chunk);
    sent += chunk.length;
    const upd = h.pullAll();
    expect(ops(upd)).toEqual([VsockOp.CREDIT_UPDATE]);
    expect(upd[0]!.hdr.fwdCnt).toBe(sent);
  });

  it('buffers what the end cannot take, up to buf_alloc; credit comes back only for delivered bytes', () => {
    const h = established();
    h.end.room = 1000;
    const data = patternBytes(BUF_ALLOC + 1000, 4);
    for (let off = 0; off < data.length; off += 4096) h.send(VsockOp.RW, data.subarray(off, off + 4096));
    expect(h.conn.buffered).toBe(BUF_ALLOC);
    expect(h.conn.state).toBe('established');
    expect(h.end.interest.write).toBe(true);
    // 1000 delivered: the free space the peer sees is under 4 KiB, and there is news.
    expect(ops(h.pullAll())).toEqual([VsockOp.CREDIT_UPDATE]);
    h.end.drain(); // the reader takes everything
    expect(h.conn.buffered).toBe(0);
    expect(h.end.interest.write).toBe(false);
    expect(h.end.output.equals(data)).toBe(true);
    const upd = h.pullAll();
    expect(ops(upd)).toEqual([VsockOp.CREDIT_UPDATE]);
    expect(upd[0]!.hdr.fwdCnt).toBe(data.length);
  });

  it('when nothing was delivered there is no news: no CREDIT_UPDATE even with the window full', () => {
    const h = established();
    h.end.room = 0;
    for (let off = 0; off < BUF_ALLOC; off += 4096) h.send(VsockOp.RW, Buffer.alloc(4096));
    expect(h.conn.buffered).toBe(BUF_ALLOC);
    expect(h.conn.hasPendingRx()).toBe(false);
  });

  it('more than the advertised credit is a protocol error: RST, closed as protocol', () => {
    const h = established();
    h.end.room = 0;
    h.send(VsockOp.RW, Buffer.alloc(BUF_ALLOC, 1));
    expect(h.conn.hasPendingRx()).toBe(false);
    h.send(VsockOp.RW, Buffer.from('x'));
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls[0]).toEqual({ reason: 'protocol', detail: 'peer sent more than its credit' });
    expect(h.end.closed).toBe(true);
  });

  it('a single RW larger than the whole window on a full end is a protocol error', () => {
    const h = established();
    h.end.room = 0;
    h.send(VsockOp.RW, Buffer.alloc(BUF_ALLOC + 1));
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls[0]!.reason).toBe('protocol');
  });

  it('the credit policy sets buf_alloc: the loopback guest’s 256 KiB is advertised and held', () => {
    const h = established({ credit: GUEST_CREDIT });
    h.send(VsockOp.CREDIT_REQUEST);
    expect(h.pull()!.hdr.bufAlloc).toBe(GUEST_BUF_ALLOC);
    h.end.room = 0;
    for (let off = 0; off < GUEST_BUF_ALLOC; off += 65536) h.send(VsockOp.RW, Buffer.alloc(65536));
    expect(h.conn.buffered).toBe(GUEST_BUF_ALLOC);
    expect(h.conn.state).toBe('established');
    h.send(VsockOp.RW, Buffer.alloc(1));
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
  });

  it('a failing local write (EPIPE) is local-error + RST, with the errno name', () => {
    const h = established();
    h.end.writeError = errnoError('EPIPE');
    h.send(VsockOp.RW, Buffer.from('nobody reads'));
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls[0]).toEqual({ reason: 'local-error', detail: 'EPIPE' });
  });

  it('a failing flush of buffered bytes is a local error too', () => {
    const h = established();
    h.end.room = 0;
    h.send(VsockOp.RW, Buffer.from('stuck'));
    h.end.writeError = errnoError('EPIPE');
    h.end.drain();
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls[0]).toEqual({ reason: 'local-error', detail: 'EPIPE' });
  });

  it('a failing local read is a local error, its RST served in the same pull', () => {
    const h = established();
    h.end.feed('x');
    h.end.signal();
    h.end.readError = errnoError('ECONNRESET');
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls[0]).toEqual({ reason: 'local-error', detail: 'ECONNRESET' });
  });
});
