// The endpoint with its table full: further guest REQUESTs are refused (RST),
// and a guest that keeps asking writes a bounded number of warnings (20
// per 10 s of the endpoint's clock), the next one let through saying how many
// were left out.

import { describe, expect, it } from 'vitest';
import { VsockEndpoint } from '../../../src/device/endpoint.js';
import { VSOCK_TYPE_STREAM, type VsockHeader, VsockOp } from '../../../src/protocol/vsock-packet.js';
import type { Logger } from '../../../src/util/log.js';
import { GUEST, HOST } from './conn-harness.js';
import { FakeClock } from './fake-clock.js';
import { FakeEnd } from './fake-end.js';

function recordingLog(warns: string[]): Logger {
  const log: Logger = {
    error: () => {},
    warn: (m) => warns.push(m),
    info: () => {},
    debug: () => {},
    child: () => log,
  };
  return log;
}

const request = (srcPort: number): VsockHeader => ({
  srcCid: GUEST,
  dstCid: HOST,
  srcPort,
  dstPort: 5000,
  len: 0,
  type: VSOCK_TYPE_STREAM,
  op: VsockOp.REQUEST,
  flags: 0,
  bufAlloc: 65536,
  fwdCnt: 0,
});

describe('a full connection table', () => {
  it('refuses every further REQUEST with RST, and its warnings are bounded per window', () => {
    const clock = new FakeClock();
    const warns: string[] = [];
    const ep = new VsockEndpoint(
      HOST,
      GUEST,
      { onPeerRequest: (hdr) => ({ localPort: hdr.dstPort, peerPort: hdr.srcPort, end: new FakeEnd() }) },
      recordingLog(warns),
      { maxConnections: 1, clock },
    );
    ep.handlePacket(request(1000));
    expect(ep.size).toBe(1);
    for (let i = 1; i <= 500; i++) ep.handlePacket(request(1000 + i));
    expect(ep.size).toBe(1);
    // Refused requests are answered RST (the RST queue is bounded, as Firecracker's muxer_rxq).
    const out: VsockHeader[] = [];
    const bufs = Array.from({ length: 600 }, () => Buffer.alloc(64));
    const n = ep.nextPackets(bufs, bufs.length, out);
    expect(out.slice(0, n).some((h) => h.op === VsockOp.RST && h.dstPort >= 1001)).toBe(true);
    expect(warns).toHaveLength(20);
    expect(warns[0]).toBe('refusing connection from port 1001 to 5000: table full');
    clock.advance(10_000);
    ep.handlePacket(request(2000));
    expect(warns).toHaveLength(21);
    expect(warns[20]).toMatch(/table full \(480 similar messages suppressed in the last 10 s\)$/);
  });
});
