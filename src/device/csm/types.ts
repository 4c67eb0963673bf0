/**
 * The vocabulary of a connection's state machine (connection.ts), after
 * Firecracker's `csm/mod.rs`: its states, why it ends, what it needs from
 * its owner (the muxer), what it is built from, what it owes the peer, and
 * its table key.
 */
import type { VsockConnection } from './connection.js';
import type { CreditPolicy } from './credit.js';
import type { LocalEnd } from './local-end.js';

export type ConnState = 'local-init' | 'peer-init' | 'established' | 'closed';

/** Why a connection ended, for logs and for the party waiting on it. */
export type CloseReason =
  | 'done' // both sides finished cleanly
  | 'refused' // peer answered our REQUEST with RST
  | 'timeout' // REQUEST unanswered / shutdown not drained in time
  | 'peer-reset' // peer sent RST
  | 'local-error' // the local end failed (EPIPE, EBADF, ...)
  | 'protocol' // the peer broke the protocol (credit overflow, bad op)
  | 'shutdown'; // the owner is going away

/** What a connection needs from whoever multiplexes it (the muxer). */
export interface ConnectionOwner {
  /** The connection has packets for the peer: put it in the RX queue. */
  rxPending(conn: VsockConnection): void;
  /** The peer accepted our REQUEST. */
  established(conn: VsockConnection): void;
  /** The connection is gone (local end closed): drop it from the table and free its port. */
  closed(conn: VsockConnection, reason: CloseReason, detail?: string): void;
  /** Call `conn.onTimer(now)` after `ms` (the kill queue). */
  armTimer(conn: VsockConnection, ms: number): void;
  /** The owner's clock (the kill queue's), in milliseconds. */
  now(): number;
}

export interface ConnectionParams {
  localCid: number;
  peerCid: number;
  localPort: number;
  peerPort: number;
  /**
   * The local end. Once the constructor returns, the connection owns it and
   * closes it; if the constructor throws, the caller still owns it.
   */
  end: LocalEnd;
  /** Who sent REQUEST: us ('local') or the peer ('peer'). */
  initiator: 'local' | 'peer';
  keep?: boolean;
  /** The peer's credit figures from its REQUEST (peer-initiated connections). */
  peerBufAlloc?: number;
  peerFwdCnt?: number;
  /** Our receive buffer and credit-update threshold (default DEVICE_CREDIT). */
  credit?: CreditPolicy;
}

export function connKey(localPort: number, peerPort: number): string {
  return `${localPort}:${peerPort}`;
}

/** Packets owed to the peer, as bits of one number; `nextPacket` serves them in this order. */
export const PendingRx = {
  RST: 1,
  REQUEST: 2,
  RESPONSE: 4,
  CREDIT_UPDATE: 8,
  CREDIT_REQUEST: 16,
  RW: 32,
  SHUTDOWN: 64,
} as const;
