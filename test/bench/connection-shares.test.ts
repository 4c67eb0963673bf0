import { describe, expect, it } from 'vitest';
import { connectionShares } from '../../src/bench/backend-ab/shares.js';

describe('connectionShares', () => {
  it('splits evenly and puts the remainder on the last connection', () => {
    expect(connectionShares(8 << 20, 8)).toEqual(Array(8).fill(1 << 20));
    expect(connectionShares(10, 4)).toEqual([2, 2, 2, 4]);
    expect(connectionShares(3, 1)).toEqual([3]);
    for (const [total, n] of [
      [8 << 20, 3],
      [1, 4],
      [0, 2],
    ] as const)
      expect(connectionShares(total, n).reduce((s, b) => s + b, 0)).toBe(total);
  });

  it('refuses a connection count that is not a positive integer', () => {
    expect(() => connectionShares(10, 0)).toThrow(/positive integer/);
    expect(() => connectionShares(10, 1.5)).toThrow(/positive integer/);
  });
});
