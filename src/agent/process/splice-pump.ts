/**
 * SplicePump: moves bytes from one fd to another with splice(2), so the data
 * never enters this process's memory, let alone JavaScript.
 *
 * splice(2) needs a pipe on one side. When the input or the output is a pipe
 * (the launcher's case: socket→pipe for stdin, pipe→socket for stdout and
 * stderr) the pump splices directly. When neither is, it splices through a
 * private kernel pipe: input→pipe, pipe→output; that pipe is the pump's only
 * buffer and lives in the kernel.
 *
 * Why no byte can reach JavaScript: the only data-moving call here is
 * `spliceFd`, whose arguments are two fds and a length. There is no Buffer,
 * no read(2), no write(2). Pages move (or are copied) kernel-side between the
 * pipe and the socket; the JS side sees only byte counts.
 *
 * State machine, one step per wake-up (both fds are non-blocking and the
 * splices use SPLICE_F_NONBLOCK):
 *
 *   splice(in → out)  > 0  → count, splice again (up to `budget` per wake-up)
 *                     = 0  → input at EOF, and everything read was written: done
 *                 EAGAIN   → either the input is empty or the output is full;
 *                            splice does not say which, so poll(2) both with a
 *                            zero timeout and wait (FdWatcher) only for the end
 *                            that is not ready: input readable, or output
 *                            writable. Waiting on the output alone *is* the
 *                            backpressure: the input is not read meanwhile.
 *                 error    → done with reason 'error' (EPIPE: the output's
 *                            reader went away; ECONNRESET ...)
 *
 * With an intermediate pipe each step is two splices (in→mid while the
 * input has data and the pipe has room, mid→out while the pipe holds bytes),
 * and the pump waits for input readability, output writability, or both.
 *
 * The pump sets O_NONBLOCK on the two fds it is given (a socket's own
 * blocking flag decides whether splice into it can block, whatever the splice
 * flags say), so they must not be shared with someone who needs them blocking.
 * Note that the two ends of a pipe are separate open files: making the
 * agent's end non-blocking leaves the child's end blocking.
 */
import {
  closeQuietly,
  fdKind,
  makePipe,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLOUT,
  pollOnce,
  SPLICE_F_MOVE,
  SPLICE_F_NONBLOCK,
  setPipeSize,
  spliceFd,
  WOULD_BLOCK,
} from '../../../native-bindings/index.js';
import type { PumpOptions } from './pump.js';
import { PumpBase } from './pump-base.js';

export interface SplicePumpOptions extends PumpOptions {
  /** Largest splice per call, and the size of the intermediate pipe when there is one (default 1 MiB). */
  chunk?: number;
}

const FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
/** After this many "EAGAIN, yet poll says both ends are ready" in a row, let the loop turn. */
const MAX_SPURIOUS = 4;

type Step = 'progress' | 'eof' | 'blocked';

export class SplicePump extends PumpBase {
  /** The intermediate pipe [read, write] when neither end is a pipe. */
  private mid: [number, number] | null = null;
  private midBytes = 0;
  private readonly chunk: number;

  constructor(input: number, output: number, opts: SplicePumpOptions = {}) {
    super(input, output, 'SplicePump', opts);
    this.chunk = opts.chunk ?? 1 << 20;
    if (fdKind(input) !== 'fifo' && fdKind(output) !== 'fifo') {
      this.mid = makePipe(true);
      try {
        setPipeSize(this.mid[0], this.chunk);
      } catch {
        // Unprivileged and over pipe-user-pages-soft: the default 64 KiB pipe still works.
      }
    }
  }

  protected override transfer(before: number): boolean {
    let spurious = 0;
    for (;;) {
      const step = this.mid ? this.stepVia(this.mid) : this.stepDirect();
      if (step === 'eof') return true;
      if (step === 'progress') {
        spurious = 0;
        if (this.out - before >= this.budget) {
          // Yield; level-triggered watchers bring us back next loop turn.
          this.arm(!this.inEof, this.midBytes > 0);
          return false;
        }
        continue;
      }
      if (this.waitForReadiness() || ++spurious >= MAX_SPURIOUS) {
        if (spurious >= MAX_SPURIOUS) this.arm(!this.inEof, true);
        return false;
      }
    }
  }

  private stepDirect(): Step {
    const len = Math.min(this.chunk, this.limit - this.taken);
    if (len <= 0) return 'eof';
    const n = spliceFd(this.input, this.output, len, FLAGS);
    if (n === WOULD_BLOCK) return 'blocked';
    if (n === 0) return 'eof';
    this.taken += n;
    this.out += n;
    return 'progress';
  }

  private stepVia([midR, midW]: [number, number]): Step {
    let moved = false;
    if (!this.inEof) {
      const len = Math.min(this.chunk - this.midBytes, this.limit - this.taken);
      if (this.limit - this.taken <= 0) {
        this.inEof = true;
        moved = true;
      } else if (len > 0) {
        const n = spliceFd(this.input, midW, len, FLAGS);
        if (n === 0) {
          this.inEof = true;
          moved = true;
        } else if (n > 0) {
          this.taken += n;
          this.midBytes += n;
          moved = true;
        }
      }
    }
    if (this.midBytes > 0) {
      const n = spliceFd(midR, this.output, this.midBytes, FLAGS);
      if (n > 0) {
        this.midBytes -= n;
        this.out += n;
        moved = true;
      }
    }
    if (this.inEof && this.midBytes === 0) return 'eof';
    return moved ? 'progress' : 'blocked';
  }

  /**
   * After EAGAIN: arm the watcher(s) for whichever end is not ready. Returns
   * false when poll says everything is ready after all (a race with the
   * other side), so the caller should just try again.
   */
  private waitForReadiness(): boolean {
    const anyIn = POLLIN | POLLHUP | POLLERR;
    const anyOut = POLLOUT | POLLHUP | POLLERR;
    const [rin, rout] = pollOnce([
      { fd: this.input, events: POLLIN },
      { fd: this.output, events: POLLOUT },
    ]) as [number, number];
    const inReady = (rin & anyIn) !== 0;
    const outReady = (rout & anyOut) !== 0;
    // Direct: the output matters only when the input has data. Via the pipe:
    // the input matters while it is open, the output while the pipe holds bytes.
    const waitIn = !this.inEof && !inReady;
    const waitOut = this.mid ? this.midBytes > 0 && !outReady : inReady && !outReady;
    if (!waitIn && !waitOut) return false;
    this.arm(waitIn, waitOut);
    return true;
  }

  protected override release(): void {
    if (this.mid) {
      closeQuietly(this.mid[0]);
      closeQuietly(this.mid[1]);
      this.mid = null;
    }
  }
}
