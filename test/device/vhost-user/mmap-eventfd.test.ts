import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  closeFd,
  eventfd,
  eventfdRead,
  eventfdWrite,
  MappingClosedError,
  memfdCreate,
  mmapShared,
  PAGE_SIZE,
} from '../../../native-bindings/index.js';

describe('memfd + mmap', () => {
  it('two mappings of one memfd share bytes, and the fd is not needed after mapping', () => {
    const fd = memfdCreate('test', 4 * PAGE_SIZE);
    const a = mmapShared(fd, 0, 4 * PAGE_SIZE);
    const b = mmapShared(fd, PAGE_SIZE, PAGE_SIZE);
    closeFd(fd);
    a.view.writeUInt32LE(0xdeadbeef, PAGE_SIZE + 8);
    expect(b.view.readUInt32LE(8)).toBe(0xdeadbeef);
    expect(b.ptr - a.ptr).not.toBe(0n);
    expect(typeof a.ptr).toBe('bigint');
    a.unmap();
    b.unmap();
  });

  it('maps from an offset that is not page-aligned', () => {
    const fd = memfdCreate('test', 2 * PAGE_SIZE);
    const whole = mmapShared(fd, 0, 2 * PAGE_SIZE);
    const part = mmapShared(fd, 100, 50);
    closeFd(fd);
    part.view.write('hello', 0);
    expect(whole.view.subarray(100, 105).toString()).toBe('hello');
    expect(part.view.length).toBe(50);
    whole.unmap();
    part.unmap();
  });

  it('reads a file straight into the mapping (no copy through JS)', () => {
    const fd = memfdCreate('test', PAGE_SIZE);
    const m = mmapShared(fd, 0, PAGE_SIZE);
    const r = fs.openSync('/dev/zero', 'r');
    m.view.fill(7);
    expect(fs.readSync(r, m.view, 0, 16, null)).toBe(16);
    expect(m.view[15]).toBe(0);
    expect(m.view[16]).toBe(7);
    fs.closeSync(r);
    closeFd(fd);
    m.unmap();
  });

  it('unmap invalidates the Mapping, and a stale view does not crash the process', () => {
    const fd = memfdCreate('test', PAGE_SIZE);
    const m = mmapShared(fd, 0, PAGE_SIZE);
    const stale = m.view.subarray(0, 64);
    stale[0] = 42;
    m.unmap();
    m.unmap(); // idempotent
    expect(m.mapped).toBe(false);
    expect(() => m.view).toThrow(MappingClosedError);
    // The shared pages are gone: the stale view sees the private placeholder.
    expect(stale[0]).toBe(0);
    stale[1] = 9;
    expect(stale[1]).toBe(9);
    const again = mmapShared(fd, 0, PAGE_SIZE);
    expect(again.view[0]).toBe(42);
    expect(again.view[1]).toBe(0);
    again.unmap();
    closeFd(fd);
  });

  it('rejects bad arguments and reports mmap errors', () => {
    expect(() => mmapShared(0, 0, 0)).toThrow(RangeError);
    expect(() => mmapShared(0, -1, 10)).toThrow(RangeError);
    expect(() => mmapShared(987_654, 0, PAGE_SIZE)).toThrow(/EBADF/);
  });
});

describe('eventfd', () => {
  it('counts writes and reads back non-blocking', () => {
    const fd = eventfd();
    expect(eventfdRead(fd)).toBeNull();
    expect(eventfdWrite(fd)).toBe(true);
    expect(eventfdWrite(fd, 4n)).toBe(true);
    expect(eventfdRead(fd)).toBe(5n);
    expect(eventfdRead(fd)).toBeNull();
    expect(eventfdWrite(fd, 0xffff_ffff_ffff_fffen)).toBe(true);
    expect(eventfdWrite(fd, 1n)).toBe(false); // would overflow: EAGAIN, not a block
    expect(eventfdRead(fd)).toBe(0xffff_ffff_ffff_fffen);
    expect(() => eventfdWrite(fd, 0n)).toThrow(RangeError);
    closeFd(fd);
    expect(() => eventfdRead(fd)).toThrow(/EBADF/);
  });

  it('is close-on-exec and non-blocking', () => {
    const fd = eventfd();
    const fdinfo = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    const flags = Number.parseInt(/flags:\s+(\d+)/.exec(fdinfo)![1]!, 8);
    expect(flags & 0o4000).toBe(0o4000);
    expect(flags & 0o2000000).toBe(0o2000000);
    closeFd(fd);
  });
});
