/**
 * InputForwarder: the process's stdin stream (a vsock / Unix stream socket,
 * or, in terminal mode with no stream, the read end of the pipe the RPC path
 * writes) into the process's input (the write end of its stdin pipe, or the
 * pty master).
 *
 * It owns both fds. Life cycle:
 *
 *   running ── source EOF (the host closed or shut down its side; or the
 *   │           limit set by closeInput() reached)
 *   │           → [terminal: write the EOF character] close the sink, so the
 *   │             process reads EOF right after the last byte; close the source
 *   ├── write error: EPIPE (the process closed its stdin early) or EIO (the
 *   │           terminal is gone) → shutdown(source, SHUT_RD), close both;
 *   │           the agent ignores SIGPIPE (Node does), so this is an errno,
 *   │           never a crash
 *   └── stop()  → the same, at once (process gone, or the launcher destroyed)
 *
 * `closeInput()` is CloseStdin for a stream: everything already queued in the
 * source socket (FIONREAD at the moment of the call) is still delivered, then
 * the input counts as ended. Nothing the sender wrote before the call is lost.
 */
import { bytesReadable, closeQuietly, SHUT_RD, shutdownFd } from '../../../native-bindings/index.js';
import { CopyPump } from './copy-pump.js';
import type { Pump, PumpEnd, PumpKind } from './pump.js';
import { SplicePump } from './splice-pump.js';

export interface InputForwarderOptions {
  /** Terminal mode: bytes to write to the pty after the input's EOF (the VEOF character). */
  trailer?: (lastByte: number | null) => Buffer | null;
}

export class InputForwarder {
  readonly finished: Promise<PumpEnd>;
  private readonly pump: Pump;

  constructor(
    private readonly source: number,
    sink: number,
    kind: PumpKind,
    opts: InputForwarderOptions = {},
  ) {
    this.pump =
      kind === 'splice'
        ? new SplicePump(source, sink)
        : new CopyPump(source, sink, opts.trailer ? { trailer: opts.trailer } : {});
    this.finished = this.pump.done.then((end) => {
      closeQuietly(sink);
      if (end.reason !== 'eof') {
        try {
          shutdownFd(source, SHUT_RD);
        } catch {
          // ENOTSOCK: a pipe; closing it is enough.
        }
      }
      closeQuietly(source);
      return end;
    });
  }

  get bytes(): number {
    return this.pump.bytes;
  }

  start(): void {
    this.pump.start();
  }

  /** Lossless CloseStdin: deliver what is queued in the source now, then end the input. */
  closeInput(): void {
    let queued = 0;
    try {
      queued = bytesReadable(this.source);
    } catch {
      // No FIONREAD on this socket type: end after what the pump has taken.
    }
    this.pump.endAt(this.pump.bytesIn + queued);
  }

  stop(): void {
    this.pump.stop();
  }
}
