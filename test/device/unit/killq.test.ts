// KillQueue (src/device/killq.ts): one timer for the earliest deadline, on an
// injected clock. With the fake clock (fake-clock.ts) every case is
// synchronous: due entries fire in deadline order with the clock's `now`;
// a timer that fires before the clock reaches the deadline re-arms instead
// of firing entries; an entry whose connection is closed is skipped; a
// connection that re-arms from onTimer (re-check of its own deadline) is
// called again; an earlier deadline re-targets the timer; clear() drops
// everything. One case runs on the system clock, to check its wiring.

import { afterEach, describe, expect, it } from 'vitest';
import { type Expiring, KillQueue } from '../../../src/device/killq.js';
import { withTimeout } from '../../native-bindings/helpers.js';
import { FakeClock } from './fake-clock.js';

const queues: KillQueue[] = [];
afterEach(() => {
  for (const q of queues.splice(0)) q.clear();
});

interface Fake extends Expiring {
  name: string;
  closed: boolean;
  calls: number[];
}

/** Expiring doubles that record their onTimer calls in one shared log. */
function recorder() {
  const log: { name: string; now: number }[] = [];
  const make = (name: string, onTimer?: (self: Fake, now: number) => void): Fake => {
    const f: Fake = {
      name,
      closed: false,
      calls: [],
      onTimer(now: number) {
        f.calls.push(now);
        log.push({ name, now });
        onTimer?.(f, now);
      },
    };
    return f;
  };
  return { log, make, names: () => log.map((e) => e.name) };
}

function setup() {
  const clock = new FakeClock();
  const q = new KillQueue(clock);
  queues.push(q);
  return { clock, q, ...recorder() };
}

describe('KillQueue', () => {
  it('fires due entries in deadline order, passing the clock’s now', () => {
    const { clock, q, make, log, names } = setup();
    q.arm(make('a'), 30);
    q.arm(make('b'), 10);
    q.arm(make('c'), 20);
    expect(q.size).toBe(3);
    expect(clock.pendingTimers).toBe(1); // one timer for the whole queue
    clock.advance(100);
    expect(names()).toEqual(['b', 'c', 'a']);
    expect(log.every((e) => e.now === clock.now())).toBe(true);
    expect(q.size).toBe(0);
    expect(clock.pendingTimers).toBe(0);
  });

  it('keeps arming order for equal deadlines', () => {
    const { clock, q, make, names } = setup();
    for (const n of ['x', 'y', 'z']) q.arm(make(n), 5);
    clock.advance(5);
    expect(names()).toEqual(['x', 'y', 'z']);
  });

  it('fires nothing before the clock reaches the deadline, then fires on a later timer', () => {
    const { clock, q, make, names } = setup();
    const late = make('late');
    q.arm(late, 20);
    q.arm(make('probe'), 5);
    clock.advance(5);
    expect(names()).toEqual(['probe']);
    expect(q.size).toBe(1);
    clock.advance(14);
    expect(names()).toEqual(['probe']);
    clock.advance(1);
    expect(names()).toEqual(['probe', 'late']);
    expect(late.calls).toEqual([clock.now()]);
  });

  it('re-arms when its timer fires before the clock has reached the deadline', () => {
    const { clock, q, make } = setup();
    const a = make('a');
    q.arm(a, 10);
    clock.fireTimers(); // the timer runs, the clock has not moved
    expect(a.calls).toEqual([]);
    expect(q.size).toBe(1);
    expect(clock.pendingTimers).toBe(1); // re-armed
    clock.advance(10);
    expect(a.calls).toEqual([clock.now()]);
  });

  it('skips entries whose connection closed meanwhile', () => {
    const { clock, q, make, names } = setup();
    const gone = make('gone');
    q.arm(gone, 5);
    q.arm(make('live'), 10);
    gone.closed = true;
    clock.advance(50);
    expect(names()).toEqual(['live']);
    expect(gone.calls).toEqual([]);
    expect(q.size).toBe(0);
  });

  it('a connection re-checks its own deadline in onTimer and may re-arm', () => {
    const { clock, q, make } = setup();
    // Like VsockConnection: its real deadline moved later than the entry, so it re-arms once.
    const deadline = clock.now() + 40;
    const conn = make('conn', (self, now) => {
      if (now < deadline) q.arm(self, deadline - now);
    });
    q.arm(conn, 10);
    clock.advance(10);
    expect(conn.calls).toHaveLength(1);
    expect(q.size).toBe(1); // re-armed
    clock.advance(30);
    expect(conn.calls).toEqual([clock.now() - 30, clock.now()]);
    expect(q.size).toBe(0);
  });

  it('an earlier deadline armed later re-targets the timer', () => {
    const { clock, q, make, names } = setup();
    q.arm(make('slow'), 10_000);
    q.arm(make('fast'), 10);
    expect(clock.pendingTimers).toBe(1); // the 10 s timer was cancelled for the 10 ms one
    clock.advance(10);
    expect(names()).toEqual(['fast']);
    expect(q.size).toBe(1);
    clock.advance(9990);
    expect(names()).toEqual(['fast', 'slow']);
  });

  it('clear() drops every entry and its timer: nothing fires', () => {
    const { clock, q, make, names } = setup();
    const a = make('a');
    q.arm(a, 5);
    q.clear();
    expect(q.size).toBe(0);
    expect(clock.pendingTimers).toBe(0);
    clock.advance(100);
    // A fresh entry fires; the cleared one never does.
    q.arm(make('b'), 0);
    clock.advance(0);
    expect(names()).toEqual(['b']);
    expect(a.calls).toEqual([]);
  });

  it('runs on the system clock when none is given', async () => {
    const q = new KillQueue();
    queues.push(q);
    const t0 = Date.now();
    const fired = new Promise<number>((resolve) => {
      q.arm({ closed: false, onTimer: (now) => resolve(now) }, 15);
    });
    const now = await withTimeout(fired, 2000, 'the system-clock timer');
    expect(now).toBeGreaterThanOrEqual(t0 + 15);
  });
});
