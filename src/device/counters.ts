/**
 * Counters of an endpoint's data path, for operators and `bench`: packets
 * each way by op, RW bytes, and the calls its connections made on their
 * local ends (each one system call for an fd end). They are plain numbers
 * bumped where the work happens, cheap enough to stay on in production, and
 * read as a snapshot (`vmm --metrics`, bench's per-transfer figures).
 */
import { VsockOp } from '../protocol/vsock-packet.js';

export const OP_NAMES = {
  [VsockOp.REQUEST]: 'request',
  [VsockOp.RESPONSE]: 'response',
  [VsockOp.RST]: 'rst',
  [VsockOp.SHUTDOWN]: 'shutdown',
  [VsockOp.RW]: 'rw',
  [VsockOp.CREDIT_UPDATE]: 'creditUpdate',
  [VsockOp.CREDIT_REQUEST]: 'creditRequest',
} as const;
export type OpName = (typeof OP_NAMES)[keyof typeof OP_NAMES];
export type OpCounts = Record<OpName, number>;

/** Calls on local ends: read(2), readv(2), write(2), writev(2), EAGAIN results, readiness interest changes. */
export interface IoCounters {
  reads: number;
  readvs: number;
  writes: number;
  writevs: number;
  wouldBlocks: number;
  /** Readiness interest turned on or off (each change costs the event loop an epoll_ctl). */
  interestChanges: number;
}

export interface EndpointCounters extends IoCounters {
  /** Packets sent to the peer, by op. */
  toPeer: OpCounts;
  /** RW payload bytes sent to the peer. */
  toPeerBytes: number;
  /** Packets received from the peer, by op. */
  fromPeer: OpCounts;
  /** RW payload bytes received from the peer. */
  fromPeerBytes: number;
  connectionsOpened: number;
  connectionsClosed: number;
}

function opCounts(): OpCounts {
  return { request: 0, response: 0, rst: 0, shutdown: 0, rw: 0, creditUpdate: 0, creditRequest: 0 };
}

export function newEndpointCounters(): EndpointCounters {
  return {
    toPeer: opCounts(),
    toPeerBytes: 0,
    fromPeer: opCounts(),
    fromPeerBytes: 0,
    reads: 0,
    readvs: 0,
    writes: 0,
    writevs: 0,
    wouldBlocks: 0,
    interestChanges: 0,
    connectionsOpened: 0,
    connectionsClosed: 0,
  };
}

/** Counts one packet of `op` (unknown ops are not counted) with `len` payload bytes, each way. */
export function countPacket(c: EndpointCounters, dir: 'toPeer' | 'fromPeer', op: number, len: number): void {
  const name = OP_NAMES[op as VsockOp];
  if (name === undefined) return;
  c[dir][name]++;
  if (dir === 'toPeer') c.toPeerBytes += len;
  else c.fromPeerBytes += len;
}
