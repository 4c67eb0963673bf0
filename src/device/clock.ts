/**
 * Time as the device core sees it: `now()` for the deadlines a connection
 * keeps (an unanswered REQUEST, a shutdown that has to drain) and one-shot
 * timers for the kill queue. It is injected (endpoint → kill queue and
 * connections) so that every timeout can be driven by a test that moves a
 * fake clock by hand, with no sleeping; `systemClock` is the real one.
 */
export interface Clock {
  /** Milliseconds, monotonic enough for deadlines (Date.now() for the system clock). */
  now(): number;
  /** Calls `fn` once, `ms` from now, without keeping the process alive. Returns its cancel function. */
  setTimer(ms: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(ms, fn) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};
