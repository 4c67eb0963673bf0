/**
 * CopyPump: read(2)/write(2) through one reused buffer, for the terminal
 * path only.
 *
 * splice(2) needs a pipe on one side, and a pty master is not one (nor does
 * the tty layer implement splice on every kernel the guest may run), so in
 * terminal mode the bytes between the pty master and the stream do pass
 * through the agent, as they do in every terminal multiplexer. Interactive
 * terminal traffic is small; the non-terminal stdio path, where bulk data
 * flows, never uses this class (see splice-pump.ts).
 *
 * States: a chunk is read into the buffer only when the buffer is empty; while
 * it holds bytes the pump waits for the output to be writable and does not
 * read (backpressure, never more than `bufferSize` bytes held). At input EOF
 * the optional `trailer` is written after the last byte (the terminal path
 * uses it to send the EOF character), then the pump is done. A pty master
 * reports EIO once every slave fd is closed, after the last byte has been
 * read: with `eioIsEof` that is end-of-file, not an error.
 */
import { readFd, SysError, WOULD_BLOCK, writeFd } from '../../../native-bindings/index.js';
import type { PumpOptions } from './pump.js';
import { PumpBase } from './pump-base.js';

export interface CopyPumpOptions extends PumpOptions {
  /** Bytes read per read(2) (default 64 KiB). */
  bufferSize?: number;
  /** Treat EIO from the input as end-of-file (a pty master whose slave side is closed). */
  eioIsEof?: boolean;
  /**
   * Bytes to write after the input's EOF, asked for at that moment, given the
   * last byte read from the input (null if none); null for no trailer.
   */
  trailer?: (lastByte: number | null) => Buffer | null;
}

export class CopyPump extends PumpBase {
  private buf: Buffer;
  private head = 0;
  private tail = 0;
  private trailerSent = false;
  private lastByte: number | null = null;
  private readonly opts: CopyPumpOptions;

  constructor(input: number, output: number, opts: CopyPumpOptions = {}) {
    super(input, output, 'CopyPump', opts);
    this.opts = opts;
    this.buf = Buffer.allocUnsafe(opts.bufferSize ?? 64 << 10);
  }

  protected override transfer(before: number): boolean {
    for (;;) {
      if (this.head < this.tail) {
        const n = writeFd(this.output, this.buf, this.head, this.tail - this.head);
        if (n === WOULD_BLOCK) {
          this.arm(false, true);
          return false;
        }
        this.head += n;
        if (!this.trailerSent) this.out += n;
        if (this.head < this.tail) continue;
        this.head = this.tail = 0;
        if (this.out - before >= this.budget) {
          this.arm(true, false);
          return false;
        }
      }
      if (this.inEof) {
        if (!this.trailerSent) {
          this.trailerSent = true;
          const t = this.opts.trailer?.(this.lastByte) ?? null;
          if (t && t.length > 0) {
            if (t.length > this.buf.length) this.buf = Buffer.allocUnsafe(t.length);
            t.copy(this.buf, 0);
            this.tail = t.length;
            continue;
          }
        }
        return true;
      }
      const room = Math.min(this.buf.length, this.limit - this.taken);
      const n = room <= 0 ? 0 : this.read(room);
      if (n === WOULD_BLOCK) {
        this.arm(true, false);
        return false;
      }
      if (n === 0) {
        this.inEof = true;
        continue;
      }
      this.taken += n;
      this.tail = n;
      this.lastByte = this.buf[n - 1]!;
    }
  }

  private read(len: number): number {
    try {
      return readFd(this.input, this.buf, 0, len);
    } catch (err) {
      if (this.opts.eioIsEof && err instanceof SysError && err.code === 'EIO') return 0;
      throw err;
    }
  }
}
