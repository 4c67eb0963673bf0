/**
 * A bound on how many lines one kind of log message may write: a peer that
 * sends garbage in a loop, or 20 000 idle clients timing out together, must
 * not turn the device's stderr (a journal, containerd's log) into the
 * bottleneck or bury everything else.
 *
 * Per limiter: the first `burst` messages of each `windowMs` are written as
 * they come; the rest of that window are counted, and the first message let
 * through afterwards says how many were left out ("… (N similar messages
 * suppressed in the last S s)"). Nothing is held back by a timer: a burst
 * that stops for good leaves only its count unreported, which `flush()`
 * writes (e.g. in a metrics dump or at shutdown). Pure apart from `emit`;
 * the clock is injected.
 */

export interface LogLimiterOptions {
  /** Messages written per window (default 20). */
  burst?: number;
  /** Window length in ms (default 10 000). */
  windowMs?: number;
  /** The clock (default Date.now). */
  now?: () => number;
}

export class LogLimiter {
  private readonly burst: number;
  private readonly windowMs: number;
  private readonly now: () => number;
  private windowStart = Number.NEGATIVE_INFINITY;
  private inWindow = 0;
  private suppressed = 0;
  private suppressedSince = 0;

  constructor(
    private readonly emit: (msg: string) => void,
    opts: LogLimiterOptions = {},
  ) {
    this.burst = opts.burst ?? 20;
    this.windowMs = opts.windowMs ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  /** Writes `msg` unless this window's burst is spent (then counts it). */
  log(msg: string): void {
    const t = this.now();
    if (t - this.windowStart >= this.windowMs) {
      this.windowStart = t;
      this.inWindow = 0;
    }
    if (this.inWindow >= this.burst) {
      if (this.suppressed === 0) this.suppressedSince = t;
      this.suppressed++;
      return;
    }
    this.inWindow++;
    this.emit(this.suppressed > 0 ? `${msg} ${this.summary(t)}` : msg);
    this.suppressed = 0;
  }

  /** Writes the count of suppressed messages, if any, as a line of its own. */
  flush(what: string): void {
    if (this.suppressed === 0) return;
    this.emit(`${what} ${this.summary(this.now())}`);
    this.suppressed = 0;
  }

  private summary(t: number): string {
    const s = Math.max(1, Math.round((t - this.suppressedSince) / 1000));
    return `(${this.suppressed} similar message${this.suppressed === 1 ? '' : 's'} suppressed in the last ${s} s)`;
  }
}
