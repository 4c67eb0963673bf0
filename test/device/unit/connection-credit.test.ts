// VsockConnection's credit, both ways, driven with a FakeEnd (no fd): RW
// payloads never larger than the pull buffer or the peer's credit
// `buf_alloc - (tx_cnt - fwd_cnt)`; no read interest when it runs out, resumed
// by the peer's CREDIT_UPDATE, one CREDIT_REQUEST only if none came within
// 500 ms; CREDIT_REQUEST
// answered with our fwd_cnt; an unsolicited CREDIT_UPDATE after a quarter of
// the window was forwarded (the default, Linux's 256 KiB window), or as soon
// as anything is forwarded while the peer sees under 64 KiB free, or (the
// Firecracker policy) once it sees under 4 KiB; peer bytes the local reader
// cannot take buffered up to our buf_alloc with fwd_cnt counting only
// delivered bytes; more than the credit is a protocol error; a failing local
// write is a local error carrying the errno name.

import { afterEach, describe, expect, it } from 'vitest';
import { checkCreditPolicy } from '../../../src/device/csm/credit.js';
import {
  CREDIT_REQUEST_AFTER_MS,
  creditWithWindow,
  DEVICE_CREDIT,
  FIRECRACKER_CREDIT,
  GUEST_CREDIT,
  LINUX_CREDIT,
} from '../../../src/device/defaults.js';
import { VsockOp } from '../../../src/protocol/vsock-packet.js';
import { patternBytes } from '../../native-bindings/helpers.js';
import { fakeHarness, type Harness, type HarnessOptions, ops, payload } from './conn-harness.js';
import { errnoError, type FakeEnd } from './fake-end.js';

const BUF_ALLOC = LINUX_CREDIT.bufAlloc;
const GUEST_BUF_ALLOC = GUEST_CREDIT.bufAlloc;

const harnesses: Harness[] = [];
afterEach(() => {
  for (const h of harnesses.splice(0)) h.dispose();
});

/** An established connection with Linux's credit policy (unless `opts.credit` says otherwise). */
function established(opts: HarnessOptions = {}): Harness<FakeEnd> {
  const h = fakeHarness({ initiator: 'peer', credit: LINUX_CREDIT, ...opts }).establish();
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

  it('bounds RW by the peer’s credit, waits (no read interest) for its update, asks once only if none comes', () => {
    const h = established({ peerBufAlloc: 1000 });
    h.end.feed(patternBytes(2500, 2));
    h.end.signal();
    const got = h.pullAll();
    expect(ops(got)).toEqual([VsockOp.RW]);
    expect(got[0]!.hdr.len).toBe(1000);
    expect(h.conn.peerCredit).toBe(0);
    expect(h.end.interest.read).toBe(false);
    h.clock.advance(CREDIT_REQUEST_AFTER_MS - 1);
    expect(h.conn.hasPendingRx()).toBe(false); // the peer may still update on its own
    h.clock.advance(1);
    expect(ops(h.pullAll())).toEqual([VsockOp.CREDIT_REQUEST]);
    h.end.signal();
    h.clock.advance(10 * CREDIT_REQUEST_AFTER_MS);
    expect(h.conn.hasPendingRx()).toBe(false); // no second CREDIT_REQUEST

    h.peerFwd = 600; // the peer consumed 600 bytes
    h.send(VsockOp.CREDIT_UPDATE);
    expect(h.end.interest.read).toBe(true);
    h.end.signal();
    const more = h.pullAll();
    expect(ops(more)).toEqual([VsockOp.RW]);
    expect(more[0]!.hdr.len).toBe(600);
    // This time the peer's update comes in time: no request at all.
    h.clock.advance(CREDIT_REQUEST_AFTER_MS / 2);

    h.peerFwd = 1600;
    h.peerBufAlloc = 4096; // a larger buf_alloc opens the window too
    h.send(VsockOp.CREDIT_UPDATE);
    h.end.signal();
    expect(payload(h.pullAll())).toHaveLength(900);
  });

  it('with the peer’s credit at 0 from the start, asks for credit once it may read and none came', () => {
    const h = fakeHarness({ initiator: 'peer', peerBufAlloc: 0 });
    harnesses.push(h);
    expect(ops(h.pullAll())).toEqual([VsockOp.RESPONSE]);
    h.clock.advance(CREDIT_REQUEST_AFTER_MS);
    expect(ops(h.pullAll())).toEqual([VsockOp.CREDIT_REQUEST]);
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

  it('sends a CREDIT_UPDATE on its own once a quarter of the window was forwarded since the peer last heard', () => {
    const h = established();
    const chunk = Buffer.alloc(8192, 1);
    const quarter = LINUX_CREDIT.updateAfter;
    expect(quarter).toBe(BUF_ALLOC / 4);
    for (let round = 1; round <= 3; round++) {
      for (let sent = chunk.length; sent < quarter; sent += chunk.length) {
        h.send(VsockOp.RW, chunk);
        expect(h.conn.hasPendingRx()).toBe(false);
      }
      h.send(VsockOp.RW, chunk);
      const upd = h.pullAll();
      expect(ops(upd)).toEqual([VsockOp.CREDIT_UPDATE]);
      expect(upd[0]!.hdr.fwdCnt).toBe(round * quarter);
    }
  });

  it('a slow reader: an update as soon as anything is forwarded while the peer sees under 64 KiB free', () => {
    const h = established();
    h.end.room = 0;
    // The peer fills the window but one packet; nothing is forwarded, so there is no news.
    for (let sent = 0; sent < BUF_ALLOC - 60_000; sent += 4096) h.send(VsockOp.RW, Buffer.alloc(4096));
    expect(h.conn.hasPendingRx()).toBe(false);
    h.end.drain(2000); // the reader takes 2000 bytes: far less than a quarter, but the peer is nearly blocked
    const upd = h.pullAll();
    expect(ops(upd)).toEqual([VsockOp.CREDIT_UPDATE]);
    expect(upd[0]!.hdr.fwdCnt).toBe(2000);
  });

  it('the Firecracker policy: a 64 KiB window and an update only once the peer sees under 4 KiB free', () => {
    const h = established({ credit: FIRECRACKER_CREDIT });
    const chunk = Buffer.alloc(8192, 1);
    let sent = 0;
    while (sent + chunk.length <= FIRECRACKER_CREDIT.bufAlloc - 4096) {
      h.send(VsockOp.RW, chunk);
      sent += chunk.length;
      expect(h.conn.hasPendingRx()).toBe(false);
    }
    h.send(VsockOp.RW, chunk);
    sent += chunk.length;
    const upd = h.pullAll();
    expect(ops(upd)).toEqual([VsockOp.CREDIT_UPDATE]);
    expect(upd[0]!.hdr).toMatchObject({ fwdCnt: sent, bufAlloc: 64 * 1024 });
  });

  it('buffers what the end cannot take, up to buf_alloc; credit comes back only for delivered bytes', () => {
    const h = established();
    h.end.room = 1000;
    const data = patternBytes(BUF_ALLOC + 1000, 4);
    for (let off = 0; off < data.length; off += 4096) h.send(VsockOp.RW, data.subarray(off, off + 4096));
    expect(h.conn.buffered).toBe(BUF_ALLOC);
    expect(h.conn.state).toBe('established');
    expect(h.end.interest.write).toBe(true);
    // 1000 delivered: the free space the peer sees is under 64 KiB, and there is news.
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

describe('the policies', () => {
  it('the device and the loopback guest default to Linux’s window: 256 KiB, updates every 64 KiB or under 64 KiB free', () => {
    expect(DEVICE_CREDIT).toEqual({ bufAlloc: 256 * 1024, updateAfter: 64 * 1024, lowWater: 64 * 1024 });
    expect(GUEST_CREDIT).toBe(LINUX_CREDIT);
    expect(DEVICE_CREDIT).toBe(LINUX_CREDIT);
    expect(creditWithWindow(32 * 1024)).toEqual({ bufAlloc: 32 * 1024, updateAfter: 8192, lowWater: 8192 });
  });

  it('a policy with numbers that cannot work is refused, naming the number', () => {
    expect(() => checkCreditPolicy({ bufAlloc: 0, updateAfter: 1, lowWater: 0 })).toThrow(/buf_alloc 0/);
    expect(() => checkCreditPolicy({ bufAlloc: 1000, updateAfter: 2000, lowWater: 0 })).toThrow(
      /update after 2000/,
    );
    expect(() => checkCreditPolicy({ bufAlloc: 1000, updateAfter: 100, lowWater: 1001 })).toThrow(
      /low water 1001/,
    );
    expect(checkCreditPolicy(FIRECRACKER_CREDIT)).toBe(FIRECRACKER_CREDIT);
  });
});
