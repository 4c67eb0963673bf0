/**
 * What the two byte movers (splice-pump.ts, copy-pump.ts) have in common.
 *
 * A pump moves bytes from an input fd to an output fd, driven by readiness on
 * Node's event loop, until the input ends, an error stops it, or its owner
 * stops it. It never buffers more than one chunk (the copy pump) or nothing at
 * all in userspace (the splice pump): when the output is full it stops reading
 * the input, so a slow reader slows the writer down (backpressure) instead of
 * growing a buffer. A pump never closes the fds it is given; its owner does,
 * after `done` settles (the watchers are closed by then).
 */

export type PumpEnd =
  /** The input reached end-of-file (or the limit set by `endAt`) and every byte read was written. */
  | { reason: 'eof'; bytes: number }
  /** A read or write failed (EPIPE: the output's reader is gone; ECONNRESET; EIO ...). */
  | { reason: 'error'; bytes: number; error: Error }
  /** `stop()` was called. */
  | { reason: 'stopped'; bytes: number };

export interface Pump {
  /** Bytes written to the output so far. */
  readonly bytes: number;
  /** Bytes taken from the input so far (≥ `bytes`; the difference is in flight inside the pump). */
  readonly bytesIn: number;
  /** Settles once, when the pump has finished and released its watchers; never rejects. */
  readonly done: Promise<PumpEnd>;
  start(): void;
  /**
   * Treat the input as ended once `total` bytes have been taken from it:
   * bytes beyond that stay unread in the input. Used for a lossless
   * CloseStdin: everything the sender had queued is delivered, then EOF.
   */
  endAt(total: number): void;
  /** Stops at once (bytes in flight inside the pump are dropped); `done` settles with 'stopped'. */
  stop(): void;
}

export interface PumpOptions {
  /** Called after each wake-up that moved bytes, with the new `bytes` total. */
  onProgress?: (bytes: number) => void;
  /**
   * Bytes moved per wake-up before yielding to the event loop, so one busy
   * stream cannot starve the others (default 16 MiB).
   */
  budget?: number;
}

export const DEFAULT_BUDGET = 16 << 20;

/** splice: no byte in userspace (needs a pipe on one side). copy: read/write through one buffer (terminal path). */
export type PumpKind = 'splice' | 'copy';
