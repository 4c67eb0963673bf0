// PortAllocator (src/device/port-allocator.ts): round-robin over the host
// port range [2^30, 2^31) as Dragonball/Firecracker allocate, skipping ports
// in use, wrapping at the end, never handing a just-released port straight
// back, and null after a full sweep of a tiny range finds every port taken.

import { describe, expect, it } from 'vitest';
import { HOST_PORT_END, HOST_PORT_MIN } from '../../../src/device/defaults.js';
import { PortAllocator } from '../../../src/device/port-allocator.js';

const free = () => false;

describe('PortAllocator', () => {
  it('the host range is [2^30, 2^31)', () => {
    expect(HOST_PORT_MIN).toBe(2 ** 30);
    expect(HOST_PORT_END).toBe(2 ** 31);
  });

  it('hands out ports round-robin from the start of the range', () => {
    const p = new PortAllocator(HOST_PORT_MIN, HOST_PORT_END);
    expect(p.allocate(free)).toBe(2 ** 30);
    expect(p.allocate(free)).toBe(2 ** 30 + 1);
    expect(p.allocate(free)).toBe(2 ** 30 + 2);
  });

  it('does not reuse a released port at once (round-robin, not lowest-free)', () => {
    const p = new PortAllocator(HOST_PORT_MIN, HOST_PORT_END);
    const used = new Set<number>();
    const a = p.allocate((x) => used.has(x))!;
    used.add(a);
    const b = p.allocate((x) => used.has(x))!;
    used.add(b);
    used.delete(a);
    expect(p.allocate((x) => used.has(x))).toBe(b + 1);
  });

  it('skips ports in use', () => {
    const p = new PortAllocator(HOST_PORT_MIN, HOST_PORT_END);
    const used = new Set([2 ** 30, 2 ** 30 + 1, 2 ** 30 + 3]);
    expect(p.allocate((x) => used.has(x))).toBe(2 ** 30 + 2);
    expect(p.allocate((x) => used.has(x))).toBe(2 ** 30 + 4);
  });

  it('wraps from the last port of the range back to the first', () => {
    const p = new PortAllocator(HOST_PORT_MIN, HOST_PORT_END, HOST_PORT_END - 2);
    expect(p.allocate(free)).toBe(2 ** 31 - 2);
    expect(p.allocate(free)).toBe(2 ** 31 - 1);
    expect(p.allocate(free)).toBe(2 ** 30);
    expect(p.allocate(free)).toBe(2 ** 30 + 1);
  });

  it('never returns a port outside [min, end)', () => {
    const p = new PortAllocator(10, 14, 12);
    const seen: number[] = [];
    for (let i = 0; i < 10; i++) seen.push(p.allocate(free)!);
    expect(seen).toEqual([12, 13, 10, 11, 12, 13, 10, 11, 12, 13]);
  });

  it('skips in-use ports across the wrap', () => {
    const p = new PortAllocator(10, 14, 13);
    const used = new Set([13, 10]);
    expect(p.allocate((x) => used.has(x))).toBe(11);
  });

  it('returns null when every port of a tiny range is in use, and recovers when one frees', () => {
    const p = new PortAllocator(10, 14);
    const used = new Set([10, 11, 12, 13]);
    let asked = 0;
    expect(
      p.allocate((x) => {
        asked++;
        return used.has(x);
      }),
    ).toBeNull();
    expect(asked).toBe(4); // one full sweep, no more
    used.delete(12);
    expect(p.allocate((x) => used.has(x))).toBe(12);
  });

  it('a range of one port', () => {
    const p = new PortAllocator(7, 8);
    expect(p.allocate(free)).toBe(7);
    expect(p.allocate(free)).toBe(7);
    expect(p.allocate(() => true)).toBeNull();
  });

  it('finds the one free port after a full table of 1023 connections in use', () => {
    const p = new PortAllocator(HOST_PORT_MIN, HOST_PORT_END);
    const used = new Set<number>();
    for (let i = 0; i < 1023; i++) used.add(HOST_PORT_MIN + i);
    expect(p.allocate((x) => used.has(x))).toBe(HOST_PORT_MIN + 1023);
  });
});
