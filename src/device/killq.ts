/**
 * The kill queue: connections waiting on a deadline (an unanswered REQUEST, a
 * shutdown whose buffered bytes must drain), after Firecracker's
 * `muxer_killq.rs`.
 *
 * One timer for the whole device, set for the earliest deadline, instead of a
 * timer per connection. Entries are never removed early: when one comes due
 * the connection re-checks its own deadline (`onTimer`) and ignores a wait
 * that already ended, so arming is O(1) and cancelling costs nothing. Time
 * comes from the injected clock (clock.ts): the timer firing early by that
 * clock's reckoning re-arms instead of firing entries.
 */
import { type Clock, systemClock } from './clock.js';

export interface Expiring {
  readonly closed: boolean;
  onTimer(now: number): void;
}

interface Entry {
  deadline: number;
  conn: Expiring;
}

export class KillQueue {
  private entries: Entry[] = [];
  private cancelTimer: (() => void) | null = null;
  private timerAt = Number.POSITIVE_INFINITY;

  constructor(private readonly clock: Clock = systemClock) {}

  get size(): number {
    return this.entries.length;
  }

  arm(conn: Expiring, ms: number): void {
    const deadline = this.clock.now() + ms;
    // Deadlines mostly arrive in order (one timeout value), so insertion from the back is cheap.
    let i = this.entries.length;
    while (i > 0 && this.entries[i - 1]!.deadline > deadline) i--;
    this.entries.splice(i, 0, { deadline, conn });
    this.schedule();
  }

  private schedule(): void {
    const head = this.entries[0];
    if (!head) {
      this.cancel();
      return;
    }
    if (this.cancelTimer && this.timerAt <= head.deadline) return;
    this.cancel();
    this.timerAt = head.deadline;
    this.cancelTimer = this.clock.setTimer(Math.max(0, head.deadline - this.clock.now()), () => this.fire());
  }

  private cancel(): void {
    this.cancelTimer?.();
    this.cancelTimer = null;
    this.timerAt = Number.POSITIVE_INFINITY;
  }

  private fire(): void {
    this.cancelTimer = null;
    this.timerAt = Number.POSITIVE_INFINITY;
    const now = this.clock.now();
    while (this.entries.length > 0 && this.entries[0]!.deadline <= now) {
      const { conn } = this.entries.shift()!;
      if (!conn.closed) conn.onTimer(now);
    }
    this.schedule();
  }

  clear(): void {
    this.entries = [];
    this.schedule();
  }
}
