// VsockConnection's handshake and resets, driven with a FakeEnd (no fd) and
// fake time (no sleeps): REQUEST first with a 2 s deadline in the kill
// queue, RESPONSE → established (and only then read interest on the end),
// RST → refused, the deadline passing → RST + timeout; the peer-initiated
// side answers RESPONSE and is established once it is pulled; every
// out-of-order packet is a protocol error (RST); bytes the end holds from
// before (CONNECT's leftovers) go first, bounded by credit; RST from the
// peer, reset() and close() end it exactly once and close the end.

import { afterEach, describe, expect, it } from 'vitest';
import { BUF_ALLOC } from '../../../src/device/defaults.js';
import { VSOCK_TYPE_STREAM, VsockOp } from '../../../src/protocol/vsock-packet.js';
import {
  fakeHarness,
  GUEST,
  type Harness,
  type HarnessOptions,
  HOST,
  LOCAL_PORT,
  ops,
  PEER_PORT,
  type Pulled,
  payload,
} from './conn-harness.js';
import type { FakeEnd, FakeEndOptions } from './fake-end.js';

const harnesses: Harness[] = [];
afterEach(() => {
  for (const h of harnesses.splice(0)) h.dispose();
});

function harness(opts: HarnessOptions & FakeEndOptions = {}): Harness<FakeEnd> {
  const h = fakeHarness(opts);
  harnesses.push(h);
  return h;
}

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
  it('sends REQUEST first, arms the 2 s deadline, and RESPONSE makes it established', () => {
    const h = harness();
    expect(h.conn.state).toBe('local-init');
    expect(h.owner.rxCalls).toBe(1);
    expect(h.owner.timers).toEqual([2000]);
    const req = h.pull()!;
    expect(req.hdr.op).toBe(VsockOp.REQUEST);
    expectAddressed(req);
    expect(req.hdr).toMatchObject({ len: 0, flags: 0, fwdCnt: 0 });
    expect(h.pull()).toBeNull();
    expect(h.end.interest).toEqual({ read: false, write: false }); // nothing is read before the answer

    h.send(VsockOp.RESPONSE);
    expect(h.conn.state).toBe('established');
    expect(h.owner.establishedCalls).toBe(1);
    expect(h.end.interest).toEqual({ read: true, write: false });
    expect(h.pull()).toBeNull();
    // The deadline passing later is a no-op now.
    h.clock.advance(10_000);
    expect(h.conn.hasPendingRx()).toBe(false);
    expect(h.owner.closedCalls).toEqual([]);
  });

  it('RST in answer to REQUEST closes it as refused, sending nothing, end closed', () => {
    const h = harness();
    h.pull();
    const rxBefore = h.owner.rxCalls;
    h.send(VsockOp.RST);
    expect(h.conn.state).toBe('closed');
    expect(h.owner.closedCalls).toEqual([{ reason: 'refused', detail: undefined }]);
    expect(h.owner.establishedCalls).toBe(0);
    expect(h.pull()).toBeNull();
    expect(h.owner.rxCalls).toBe(rxBefore);
    expect(h.end.closeCalls).toBe(1);
  });

  it('no RESPONSE within 2 s: RST, then closed as timeout once it is out', () => {
    const h = harness();
    h.pull();
    h.clock.advance(1999);
    expect(h.conn.hasPendingRx()).toBe(false);
    expect(h.conn.state).toBe('local-init');
    h.clock.advance(1);
    expect(h.conn.hasPendingRx()).toBe(true);
    expect(h.owner.closedCalls).toEqual([]); // not before the RST is out
    const rst = h.pull()!;
    expect(rst.hdr.op).toBe(VsockOp.RST);
    expectAddressed(rst);
    expect(h.conn.state).toBe('closed');
    expect(h.owner.closedCalls).toEqual([{ reason: 'timeout', detail: 'no RESPONSE within 2 s' }]);
    expect(h.pull()).toBeNull();
    expect(h.end.closed).toBe(true);
  });

  it('sends the bytes the end already holds first, on RESPONSE, without a readiness report', () => {
    const h = harness({ preRead: Buffer.from('leftover|') });
    h.end.feed('later');
    h.establish();
    expect(h.conn.hasPendingRx()).toBe(true);
    const first = h.pull()!;
    expect(first.data!.toString()).toBe('leftover|');
    const rest = h.pullAll();
    expect(payload(rest).toString()).toBe('later');
  });

  it('held bytes beyond the peer credit resume on CREDIT_UPDATE, not on readiness', () => {
    const h = harness({ preRead: Buffer.from('0123456789'), peerBufAlloc: 4 });
    h.establish();
    expect(ops(h.pullAll())).toEqual([VsockOp.RW, VsockOp.CREDIT_REQUEST]);
    h.peerFwd = 4;
    h.send(VsockOp.CREDIT_UPDATE);
    expect(payload(h.pullAll()).toString()).toBe('4567');
    h.peerFwd = 8;
    h.send(VsockOp.CREDIT_UPDATE);
    expect(payload(h.pullAll()).toString()).toBe('89');
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
    expect(h.end.interest.read).toBe(true);
    expect(h.pull()).toBeNull();
  });

  it.each([
    ['RW before the RESPONSE went out', false, VsockOp.RW],
    ['a second REQUEST', true, VsockOp.REQUEST],
    ['an unexpected RESPONSE', true, VsockOp.RESPONSE],
    ['an unknown op', true, 99 as VsockOp],
  ])('%s is a protocol error: RST, closed as protocol', (_name, established, op) => {
    const h = harness({ initiator: 'peer' });
    if (established) h.establish();
    h.send(op, op === VsockOp.RW ? Buffer.from('too soon') : undefined);
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls[0]!.reason).toBe('protocol');
    expect(h.end.closed).toBe(true);
  });
});

describe('reset and close', () => {
  it('peer RST closes it as peer-reset, sends nothing, and later packets are ignored', () => {
    const h = harness({ initiator: 'peer' }).establish();
    h.end.feed('pending data');
    h.send(VsockOp.RST);
    expect(h.conn.state).toBe('closed');
    expect(h.owner.closedCalls).toEqual([{ reason: 'peer-reset', detail: undefined }]);
    expect(h.conn.hasPendingRx()).toBe(false);
    h.send(VsockOp.RW, Buffer.from('late'));
    expect(h.owner.closedCalls).toHaveLength(1);
    expect(h.end.closeCalls).toBe(1);
    expect(h.end.unread).toBe(12);
  });

  it('reset() sends one RST, stops all interest, and closes with the first reason given', () => {
    const h = harness({ initiator: 'peer' }).establish();
    h.conn.reset('shutdown', 'owner going away');
    h.conn.reset('protocol');
    expect(h.end.interest).toEqual({ read: false, write: false });
    expect(ops(h.pullAll())).toEqual([VsockOp.RST]);
    expect(h.owner.closedCalls).toEqual([{ reason: 'shutdown', detail: 'owner going away' }]);
  });

  it('close() closes the end without telling the peer, once', () => {
    const h = harness({ initiator: 'peer' }).establish();
    h.conn.close();
    h.conn.close('done');
    expect(h.end.closeCalls).toBe(1);
    expect(h.owner.closedCalls).toEqual([{ reason: 'shutdown', detail: undefined }]);
    expect(h.pull()).toBeNull();
  });
});
