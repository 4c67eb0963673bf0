import { describe, expect, it } from 'vitest';
import { parseBytes, parseScenarios } from '../../src/bench/options.js';
import { jainIndex, mean, median, percentile, ratio } from '../../src/bench/stats.js';

describe('stats', () => {
  it('median of odd and even counts, unsorted input left untouched', () => {
    const xs = [5, 1, 3];
    expect(median(xs)).toBe(3);
    expect(xs).toEqual([5, 1, 3]);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
    expect(median([])).toBeNaN();
  });

  it('percentiles interpolate between closest ranks', () => {
    const xs = Array.from({ length: 101 }, (_, i) => i); // 0..100
    expect(percentile(xs, 0)).toBe(0);
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 99)).toBe(99);
    expect(percentile(xs, 100)).toBe(100);
    expect(percentile([10, 20], 25)).toBe(12.5);
    expect(() => percentile(xs, 101)).toThrow(RangeError);
  });

  it("Jain's index: 1 for equal shares, 1/n when one takes all", () => {
    expect(jainIndex([3, 3, 3, 3])).toBeCloseTo(1);
    expect(jainIndex([8, 0, 0, 0])).toBeCloseTo(0.25);
    expect(jainIndex([1, 2])).toBeCloseTo(9 / 10);
    expect(jainIndex([])).toBeNaN();
  });

  it('mean and ratio', () => {
    expect(mean([1, 2, 3, 6])).toBe(3);
    expect(ratio(6, 3)).toBe(2);
    expect(ratio(1, 0)).toBeNaN();
    expect(ratio(Number.NaN, 1)).toBeNaN();
  });
});

describe('options', () => {
  it('parses byte sizes', () => {
    expect(parseBytes('64MiB')).toBe(64 * 1024 * 1024);
    expect(parseBytes('1GiB')).toBe(1024 ** 3);
    expect(parseBytes('1G')).toBe(1024 ** 3);
    expect(parseBytes('1GB')).toBe(1e9);
    expect(parseBytes('4096')).toBe(4096);
    expect(() => parseBytes('lots')).toThrow(/byte size/);
  });

  it('parses a scenario list and rejects unknown names', () => {
    expect(parseScenarios('throughput, latency,throughput')).toEqual(['throughput', 'latency']);
    expect(() => parseScenarios('speed')).toThrow(/unknown scenario speed/);
  });
});
