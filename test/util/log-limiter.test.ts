// LogLimiter with an injected clock: a burst per window is written, the rest
// counted and reported with the next line let through, or by flush().

import { describe, expect, it } from 'vitest';
import { LogLimiter } from '../../src/util/log-limiter.js';

function limiter(burst: number, windowMs: number) {
  let t = 0;
  const lines: string[] = [];
  const l = new LogLimiter((m) => lines.push(m), { burst, windowMs, now: () => t });
  return { l, lines, at: (ms: number) => (t = ms) };
}

describe('LogLimiter', () => {
  it('writes the first burst of a window, counts the rest, and says so with the next line', () => {
    const { l, lines, at } = limiter(3, 1000);
    for (let i = 0; i < 10_000; i++) l.log(`bad ${i}`);
    expect(lines).toEqual(['bad 0', 'bad 1', 'bad 2']);
    at(2500);
    l.log('bad again');
    expect(lines[3]).toBe('bad again (9997 similar messages suppressed in the last 3 s)');
    l.log('next');
    expect(lines[4]).toBe('next');
  });

  it('flush reports a count that no later message carried, once', () => {
    const { l, lines, at } = limiter(1, 1000);
    l.log('a');
    l.log('b');
    at(400);
    l.flush('invalid requests');
    l.flush('invalid requests');
    expect(lines).toEqual(['a', 'invalid requests (1 similar message suppressed in the last 1 s)']);
  });

  it('writes everything while under the burst', () => {
    const { l, lines, at } = limiter(2, 1000);
    for (let i = 0; i < 5; i++) {
      at(i * 1000);
      l.log(`m${i}`);
    }
    expect(lines).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
  });
});
