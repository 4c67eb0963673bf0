/**
 * OutputForwarder: one of the process's outputs (the stdout or stderr pipe,
 * or the pty master) into its stream (a vsock / Unix stream socket, or, in
 * terminal mode with no stream, the write end of the pipe the RPC path reads).
 *
 * It owns both fds. Life cycle:
 *
 *   running ── source EOF (every writer closed the pipe: the process and any
 *   │           children that inherited it; for a pty, EIO once the slave side
 *   │           is closed), all bytes written
 *   │           → shutdown(sink, SHUT_WR) so the peer reads EOF, close both
 *   ├── write error (EPIPE, ECONNRESET: the stream's peer is gone)
 *   │           → close both; the process's next write to its pipe then gets
 *   │             SIGPIPE/EPIPE, exactly as if it wrote to a closed pipe
 *   └── stop()  → close both
 *
 * `finished` settles after the fds are closed.
 *
 * Exit vs. output: when the main process exits, `flushedAtExit()` takes a
 * snapshot of the bytes still in the source (FIONREAD on the pipe or pty
 * master, plus anything inside the pump) and resolves once they have all
 * been written into the sink. Every byte the process wrote before it exited
 * is in the pipe at that moment (write(2) to a pipe returns only once the
 * bytes are in it), so this is exactly "all of the process's output is in the
 * stream", with no timeout: a slow reader makes it wait, as it should.
 */
import { bytesReadable, closeQuietly, SHUT_WR, shutdownFd } from '../../../native-bindings/index.js';
import { CopyPump } from './copy-pump.js';
import type { Pump, PumpEnd, PumpKind } from './pump.js';
import { SplicePump } from './splice-pump.js';

export class OutputForwarder {
  readonly finished: Promise<PumpEnd>;
  private readonly pump: Pump;
  private flushWaiters: { target: number; resolve: () => void }[] = [];
  private ended = false;

  constructor(
    readonly name: string,
    private readonly source: number,
    sink: number,
    kind: PumpKind,
    /** Bytes per read for a `copy` pump (default CopyPump's). */
    copyBuffer?: number,
  ) {
    const onProgress = (bytes: number) => this.checkFlushed(bytes);
    this.pump =
      kind === 'splice'
        ? new SplicePump(source, sink, { onProgress })
        : new CopyPump(source, sink, {
            onProgress,
            eioIsEof: true,
            ...(copyBuffer ? { bufferSize: copyBuffer } : {}),
          });
    this.finished = this.pump.done.then((end) => {
      this.ended = true;
      if (end.reason === 'eof') {
        try {
          shutdownFd(sink, SHUT_WR);
        } catch {
          // ENOTSOCK (the RPC pipe in terminal mode): closing is the EOF.
        }
      }
      closeQuietly(sink);
      closeQuietly(source);
      for (const w of this.flushWaiters) w.resolve();
      this.flushWaiters = [];
      return end;
    });
  }

  /** Bytes delivered into the stream so far. */
  get bytes(): number {
    return this.pump.bytes;
  }

  start(): void {
    this.pump.start();
  }

  /**
   * Resolves when every byte in the source now has been written to the sink,
   * or the forwarder has finished (EOF, peer gone, stopped).
   */
  flushedAtExit(): Promise<void> {
    if (this.ended) return Promise.resolve();
    let queued: number;
    try {
      queued = bytesReadable(this.source);
    } catch {
      // No FIONREAD on this fd: only EOF can tell.
      queued = Number.POSITIVE_INFINITY;
    }
    const target = this.pump.bytesIn + queued;
    if (this.pump.bytes >= target) return Promise.resolve();
    return new Promise((resolve) => this.flushWaiters.push({ target, resolve }));
  }

  stop(): void {
    this.pump.stop();
  }

  private checkFlushed(bytes: number): void {
    if (this.flushWaiters.length === 0) return;
    this.flushWaiters = this.flushWaiters.filter((w) => {
      if (bytes < w.target) return true;
      w.resolve();
      return false;
    });
  }
}
