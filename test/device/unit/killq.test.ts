// KillQueue (src/device/killq.ts): one real timer for the earliest deadline.
// The clock is a fake function passed to the constructor, the timeouts are
// small and real: due entries fire in deadline order with the fake `now`;
// nothing fires before the clock says so (the timer re-arms); an entry whose
// connection is closed is skipped; a connection that re-arms from onTimer
// (re-check of its own deadline) is called again; an earlier deadline
// re-targets the timer; clear() drops everything.

import { afterEach, describe, expect, it } from 'vitest';
import { type Expiring, KillQueue } from '../../../src/device/killq.js';
import { withTimeout } from '../../native-bindings/helpers.js';

const queues: KillQueue[] = [];
afterEach(() => {
  for (const q of queues.splice(0)) q.clear();
});

interface Fake extends Expiring {
  name: string;
  closed: boolean;
  calls: number[];
}

function fakeClock(start = 1_000_000) {
  let t = start;
  return {
    now: () => t,
    set: (v: number) => {
      t = v;
    },
    advance: (ms: number) => {
      t += ms;
    },
  };
}

/** Records onTimer calls in `log` and resolves `fired` waiters. */
function harness() {
  const log: { name: string; now: number }[] = [];
  let waiters: { n: number; resolve: () => void }[] = [];
  const notify = () => {
    waiters = waiters.filter((w) => {
      if (log.length >= w.n) {
        w.resolve();
        return false;
      }
      return true;
    });
  };
  const make = (name: string, onTimer?: (self: Fake, now: number) => void): Fake => {
    const f: Fake = {
      name,
      closed: false,
      calls: [],
      onTimer(now: number) {
        f.calls.push(now);
        log.push({ name, now });
        onTimer?.(f, now);
        notify();
      },
    };
    return f;
  };
  const until = (n: number, ms = 2000) =>
    withTimeout(
      new Promise<void>((resolve) => {
        waiters.push({ n, resolve });
        notify();
      }),
      ms,
      `${n} onTimer call(s)`,
    );
  return { log, make, until };
}

function queue(now: () => number): KillQueue {
  const q = new KillQueue(now);
  queues.push(q);
  return q;
}

describe('KillQueue', () => {
  it('fires due entries in deadline order, passing the clock’s now', async () => {
    const clock = fakeClock();
    const q = queue(clock.now);
    const h = harness();
    const a = h.make('a');
    const b = h.make('b');
    const c = h.make('c');
    q.arm(a, 30);
    q.arm(b, 10);
    q.arm(c, 20);
    expect(q.size).toBe(3);
    clock.advance(100);
    await h.until(3);
    expect(h.log.map((e) => e.name)).toEqual(['b', 'c', 'a']);
    expect(h.log.every((e) => e.now === clock.now())).toBe(true);
    expect(q.size).toBe(0);
  });

  it('keeps arming order for equal deadlines', async () => {
    const clock = fakeClock();
    const q = queue(clock.now);
    const h = harness();
    for (const n of ['x', 'y', 'z']) q.arm(h.make(n), 5);
    clock.advance(5);
    await h.until(3);
    expect(h.log.map((e) => e.name)).toEqual(['x', 'y', 'z']);
  });

  it('fires nothing before the clock reaches the deadline, then fires on a later timer', async () => {
    const clock = fakeClock();
    const q = queue(clock.now);
    const h = harness();
    const late = h.make('late');
    const probe = h.make('probe');
    q.arm(late, 20);
    q.arm(probe, 5);
    // Only the probe's deadline is reached: its firing proves the real timer ran.
    clock.advance(5);
    await h.until(1);
    expect(h.log.map((e) => e.name)).toEqual(['probe']);
    expect(q.size).toBe(1);
    // The timer for `late` fires after ~15 ms of real time, but the fake clock has not moved:
    // the queue must re-arm rather than fire early. Move the clock later.
    clock.advance(15);
    await h.until(2);
    expect(h.log.map((e) => e.name)).toEqual(['probe', 'late']);
    expect(late.calls).toEqual([clock.now()]);
  });

  it('re-arms when the real timer fires before the fake clock has moved', async () => {
    const clock = fakeClock();
    const q = queue(clock.now);
    const h = harness();
    const a = h.make('a');
    q.arm(a, 10);
    // Let the real 10 ms timer fire at least once with the clock still at the start.
    await new Promise((r) => setTimeout(r, 30));
    expect(a.calls).toEqual([]);
    expect(q.size).toBe(1);
    clock.advance(10);
    await h.until(1);
    expect(a.calls).toEqual([clock.now()]);
  });

  it('skips entries whose connection closed meanwhile', async () => {
    const clock = fakeClock();
    const q = queue(clock.now);
    const h = harness();
    const gone = h.make('gone');
    const live = h.make('live');
    q.arm(gone, 5);
    q.arm(live, 10);
    gone.closed = true;
    clock.advance(50);
    await h.until(1);
    expect(h.log.map((e) => e.name)).toEqual(['live']);
    expect(gone.calls).toEqual([]);
    expect(q.size).toBe(0);
  });

  it('a connection re-checks its own deadline in onTimer and may re-arm', async () => {
    const clock = fakeClock();
    const q = queue(clock.now);
    const h = harness();
    // Like VsockConnection: its real deadline moved later than the entry, so it re-arms once.
    const deadline = clock.now() + 40;
    const conn = h.make('conn', (self, now) => {
      if (now < deadline) q.arm(self, deadline - now);
    });
    q.arm(conn, 10);
    clock.advance(10);
    await h.until(1);
    expect(q.size).toBe(1); // re-armed
    clock.advance(30);
    await h.until(2);
    expect(conn.calls).toEqual([clock.now() - 30, clock.now()]);
    expect(q.size).toBe(0);
  });

  it('an earlier deadline armed later re-targets the timer (real clock)', async () => {
    const q = queue(Date.now);
    const h = harness();
    const slow = h.make('slow');
    const fast = h.make('fast');
    const t0 = Date.now();
    q.arm(slow, 10_000);
    q.arm(fast, 10);
    await h.until(1);
    expect(h.log.map((e) => e.name)).toEqual(['fast']);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(q.size).toBe(1);
  });

  it('clear() drops every entry: nothing fires', async () => {
    const clock = fakeClock();
    const q = queue(clock.now);
    const h = harness();
    const a = h.make('a');
    q.arm(a, 5);
    q.clear();
    expect(q.size).toBe(0);
    clock.advance(100);
    // A fresh entry fires; the cleared one never does.
    const b = h.make('b');
    q.arm(b, 0);
    await h.until(1);
    expect(h.log.map((e) => e.name)).toEqual(['b']);
    expect(a.calls).toEqual([]);
  });

  it('uses Date.now when no clock is given', async () => {
    const q = new KillQueue();
    queues.push(q);
    const h = harness();
    const a = h.make('a');
    const t0 = Date.now();
    q.arm(a, 15);
    await h.until(1);
    expect(a.calls[0]!).toBeGreaterThanOrEqual(t0 + 15);
  });
});
