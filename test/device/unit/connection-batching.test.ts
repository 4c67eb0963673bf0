// How a VsockConnection keeps system calls per packet down, driven with a
// FakeEnd (no fd) that counts the calls: several RX buffers filled by one
// readv, one RW packet per buffer and never past the peer's credit; read
// interest left armed across packets (a round trip changes no interest; a
// readiness report while a read is already due turns the reports off until
// the end is read dry); RW payloads received in one batch written with one
// writev when the batch ends, in order with a SHUTDOWN that follows them in
// the same batch, and what the end does not take held (copied) behind.

import { afterEach, describe, expect, it } from 'vitest';
import { LINUX_CREDIT } from '../../../src/device/defaults.js';
import { ShutdownFlag, VsockOp } from '../../../src/protocol/vsock-packet.js';
import { patternBytes } from '../../native-bindings/helpers.js';
import { fakeHarness, type Harness, type HarnessOptions, ops, payload } from './conn-harness.js';
import type { FakeEnd, FakeEndOptions } from './fake-end.js';

const harnesses: Harness[] = [];
afterEach(() => {
  for (const h of harnesses.splice(0)) h.dispose();
});

function established(opts: HarnessOptions & FakeEndOptions = {}): Harness<FakeEnd> {
  const h = fakeHarness({ initiator: 'peer', credit: LINUX_CREDIT, ...opts }).establish();
  harnesses.push(h);
  return h;
}

describe('local → peer: several buffers per read', () => {
  it('one readv fills several buffers, one RW packet each, in order', () => {
    const h = established();
    const data = patternBytes(10_000, 7);
    h.end.feed(data);
    h.end.signal();
    const reads = h.end.reads;
    const got = h.pullMany([4000, 4000, 4000]);
    expect(h.end.reads - reads).toBe(1);
    expect(ops(got)).toEqual([VsockOp.RW, VsockOp.RW, VsockOp.RW]);
    expect(got.map((p) => p.hdr.len)).toEqual([4000, 4000, 2000]);
    expect(payload(got).equals(data)).toBe(true);
    expect(h.owner.counters.readvs).toBe(1);
  });

  it('never reads past the peer’s credit, whatever the buffers', () => {
    const h = established({ peerBufAlloc: 5000 });
    h.end.feed(patternBytes(20_000, 8));
    h.end.signal();
    const got = h.pullMany([4000, 4000, 4000]);
    expect(got.map((p) => p.hdr.len)).toEqual([4000, 1000]);
    expect(h.conn.peerCredit).toBe(0);
    expect(h.pullAll()).toEqual([]);
  });

  it('a control packet is a turn of its own, even with buffers to spare', () => {
    const h = established();
    h.send(VsockOp.CREDIT_REQUEST);
    h.end.feed('data');
    h.end.signal();
    expect(ops(h.pullMany([100, 100]))).toEqual([VsockOp.CREDIT_UPDATE]);
    expect(payload(h.pullMany([100, 100])).toString()).toBe('data');
  });
});

describe('read interest stays armed', () => {
  it('a round trip (bytes in, a short read) changes no interest and reads once', () => {
    const h = established();
    expect(h.end.interest.read).toBe(true);
    const changes = h.owner.counters.interestChanges;
    for (let i = 0; i < 5; i++) {
      h.end.feed(`ping ${i}`);
      h.end.signal();
      const reads = h.end.reads;
      expect(payload(h.pullAll()).toString()).toBe(`ping ${i}`);
      // Less than asked: dry, no second read to learn it.
      expect(h.end.reads - reads).toBe(1);
      expect(h.end.interest.read).toBe(true);
    }
    expect(h.owner.counters.interestChanges).toBe(changes);
  });

  it('readiness while a read is already due turns reports off until the end is read dry', () => {
    const h = established({ peerBufAlloc: 1 << 20 });
    h.end.feed(patternBytes(200_000, 9));
    h.end.signal();
    expect(h.conn.hasPendingRx()).toBe(true);
    expect(h.end.interest.read).toBe(true);
    h.end.signal(); // the loop turns; nobody has pulled (the guest has no buffers)
    expect(h.end.interest.read).toBe(false);
    expect(h.conn.hasPendingRx()).toBe(true); // the read is still due: the pull does it
    h.pull(1000);
    expect(h.end.interest.read).toBe(false); // a full read: maybe more, stay due
    expect(payload(h.pullAll())).toHaveLength(199_000);
    expect(h.end.interest.read).toBe(true); // read dry: reports back on
  });

  it('out of credit, an idle end still gets its reports back once credit returns', () => {
    const h = established({ peerBufAlloc: 1000 });
    h.end.feed(patternBytes(5000, 10));
    h.end.signal();
    h.end.signal(); // read due and readable again: reports off
    expect(h.end.interest.read).toBe(false);
    expect(ops(h.pullAll())).toEqual([VsockOp.RW]);
    h.peerFwd = 1000;
    h.send(VsockOp.CREDIT_UPDATE);
    expect(h.end.interest.read).toBe(true);
    expect(payload(h.drive())).toHaveLength(1000);
  });
});

describe('peer → local: one writev per batch', () => {
  it('RW payloads of one batch go to the end in one writev when it ends, in order', () => {
    const h = established();
    const parts = ['alpha,', 'beta,', 'gamma'].map((t) => Buffer.from(t));
    h.owner.batch = new Set();
    for (const p of parts) h.send(VsockOp.RW, p);
    expect(h.end.output.length).toBe(0); // staged, not written yet
    const batch = h.owner.batch;
    h.owner.batch = null;
    for (const c of batch) c.flushStaged();
    expect(h.end.output.toString()).toBe('alpha,beta,gamma');
    expect(h.end.writevCalls).toBe(1);
    expect(h.owner.counters.writevs).toBe(1);
    expect(h.owner.counters.writes).toBe(0);
  });

  it('a SHUTDOWN after data in the same batch passes EOF on only after the data', () => {
    const h = established();
    h.sendBatch([
      [VsockOp.RW, Buffer.from('last ')],
      [VsockOp.RW, Buffer.from('words')],
      [VsockOp.SHUTDOWN, undefined, { flags: ShutdownFlag.SEND }],
    ]);
    expect(h.end.output.toString()).toBe('last words');
    expect(h.end.shutdownWrites).toBe(1);
  });

  it('what the end does not take is held behind, written when it turns writable; credit only for what it took', () => {
    const h = established();
    h.end.room = 7;
    h.sendBatch([
      [VsockOp.RW, Buffer.from('0123')],
      [VsockOp.RW, Buffer.from('4567')],
      [VsockOp.RW, Buffer.from('89')],
    ]);
    expect(h.end.output.toString()).toBe('0123456');
    expect(h.conn.buffered).toBe(3);
    expect(h.end.interest.write).toBe(true);
    h.sendBatch([[VsockOp.RW, Buffer.from('ab')]]); // behind the held bytes, not staged ahead of them
    h.end.drain();
    expect(h.end.output.toString()).toBe('0123456789ab');
    expect(h.conn.buffered).toBe(0);
    h.send(VsockOp.CREDIT_REQUEST);
    expect(h.pull()!.hdr.fwdCnt).toBe(12);
  });

  it('a batch that breaks the credit is a protocol error, nothing written past it', () => {
    const h = established();
    h.end.room = 0;
    h.sendBatch([
      [VsockOp.RW, Buffer.alloc(LINUX_CREDIT.bufAlloc)],
      [VsockOp.RW, Buffer.from('x')],
    ]);
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls[0]).toEqual({ reason: 'protocol', detail: 'peer sent more than its credit' });
  });
});
