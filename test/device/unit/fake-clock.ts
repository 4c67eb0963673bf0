// A Clock (src/device/clock.ts) that a test moves by hand: `advance(ms)` moves
// time forward and then runs, synchronously and in deadline order, every
// timer that is due by then (timers armed while doing so included, if due);
// `fireTimers()` runs every pending timer without moving time, as a real
// timer that fires a little early would. No test using it sleeps.

import type { Clock } from '../../../src/device/clock.js';

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: Timer[] = [];

  constructor(start = 1_000_000) {
    this.t = start;
  }

  now = (): number => this.t;

  setTimer(ms: number, fn: () => void): () => void {
    const timer: Timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((x) => x !== timer);
    };
  }

  /** Timers armed and not yet run or cancelled. */
  get pendingTimers(): number {
    return this.timers.length;
  }

  advance(ms: number): void {
    this.t += ms;
    this.runWhile((timer) => timer.at <= this.t);
  }

  fireTimers(): void {
    const now = new Set(this.timers);
    this.runWhile((timer) => now.has(timer));
  }

  private runWhile(due: (timer: Timer) => boolean): void {
    for (let i = 0; i < 100_000; i++) {
      const next = this.timers.filter(due).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!next) return;
      this.timers = this.timers.filter((x) => x !== next);
      next.fn();
    }
    throw new Error('FakeClock: timers keep re-arming themselves');
  }
}
