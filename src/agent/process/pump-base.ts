/**
 * PumpBase: the lifecycle both pumps share (splice-pump.ts, copy-pump.ts).
 *
 * It owns the state ('new' → 'running' → 'done'), the byte counters, the
 * `endAt` limit, the two FdWatchers (set up by `start()` after making both fds
 * non-blocking; they call back into the transfer step on readiness), progress
 * reports, and `done`, which settles exactly once in `finish`. A subclass
 * supplies only the transfer step, `transfer()`, and may release resources of
 * its own in `release()`.
 */
import { FdWatcher, setNonBlocking } from '../../../native-bindings/index.js';
import { DEFAULT_BUDGET, type Pump, type PumpEnd, type PumpOptions } from './pump.js';

export abstract class PumpBase implements Pump {
  readonly done: Promise<PumpEnd>;
  private settle!: (end: PumpEnd) => void;
  private state: 'new' | 'running' | 'done' = 'new';
  /** Bytes written to the output. */
  protected out = 0;
  /** Bytes taken from the input. */
  protected taken = 0;
  /** Bytes to take from the input at most (`endAt`). */
  protected limit = Number.POSITIVE_INFINITY;
  protected inEof = false;
  private inWatch: FdWatcher | null = null;
  private outWatch: FdWatcher | null = null;
  protected readonly budget: number;
  private readonly onProgress: ((bytes: number) => void) | undefined;

  constructor(
    readonly input: number,
    readonly output: number,
    name: string,
    opts: PumpOptions,
  ) {
    if (input === output) throw new RangeError(`${name}: input and output are the same fd ${input}`);
    this.budget = opts.budget ?? DEFAULT_BUDGET;
    this.onProgress = opts.onProgress;
    this.done = new Promise((resolve) => {
      this.settle = resolve;
    });
  }

  get bytes(): number {
    return this.out;
  }

  get bytesIn(): number {
    return this.taken;
  }

  start(): void {
    if (this.state !== 'new') return;
    this.state = 'running';
    try {
      setNonBlocking(this.input, true);
      setNonBlocking(this.output, true);
      this.inWatch = new FdWatcher(this.input, () => this.run());
      this.outWatch = new FdWatcher(this.output, () => this.run());
    } catch (error) {
      this.finish({ reason: 'error', bytes: 0, error: error as Error });
      return;
    }
    this.run();
  }

  endAt(total: number): void {
    this.limit = Math.min(this.limit, Math.max(total, this.taken));
    // The pump may be waiting for input that will never be read now: look again.
    if (this.state === 'running') setImmediate(() => this.run());
  }

  stop(): void {
    if (this.state === 'done') return;
    this.finish({ reason: 'stopped', bytes: this.out });
  }

  /**
   * One wake-up's worth of moving bytes: until the fds would block (arming
   * the watchers for what to wait for) or `budget` bytes have moved since
   * `before`. Returns true when the input has ended and every byte taken was
   * written; throws on a failed read or write.
   */
  protected abstract transfer(before: number): boolean;

  /** Frees what the subclass holds beyond the watchers; called once, as the pump finishes. */
  protected release(): void {}

  /** Asks the watchers to wake the pump when the input is readable / the output writable. */
  protected arm(readable: boolean, writable: boolean): void {
    this.inWatch?.want(readable, false);
    this.outWatch?.want(false, writable);
  }

  private run(): void {
    if (this.state !== 'running') return;
    const before = this.out;
    try {
      if (this.transfer(before)) {
        this.report(before);
        this.finish({ reason: 'eof', bytes: this.out });
        return;
      }
    } catch (error) {
      this.report(before);
      this.finish({ reason: 'error', bytes: this.out, error: error as Error });
      return;
    }
    this.report(before);
  }

  private report(before: number): void {
    if (this.out !== before) this.onProgress?.(this.out);
  }

  private finish(end: PumpEnd): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.inWatch?.close();
    this.outWatch?.close();
    this.inWatch = this.outWatch = null;
    this.release();
    this.settle(end);
  }
}
