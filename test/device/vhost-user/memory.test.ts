import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { memfdCreate, mmapShared } from '../../../native-bindings/index.js';
import { GuestMemory, GuestMemoryError } from '../../../src/device/transport/vhost-user/memory.js';

const MiB = 1 << 20;
const UVA = 0x7f00_0000_0000;

function fdIsOpen(fd: number): boolean {
  return fs.existsSync(`/proc/self/fd/${fd}`);
}

/** A 4 MiB "guest" laid out as QEMU 7.2 does: two regions of one memfd with a hole (0xa0000-0xc0000). */
function qemuLikeGuest(): { mem: GuestMemory; backing: ReturnType<typeof mmapShared>; fds: number[] } {
  const fd = memfdCreate('guest-ram', 4 * MiB);
  const backing = mmapShared(fd, 0, 4 * MiB);
  const fds = [fd, fs.openSync(`/proc/self/fd/${fd}`, 'r+')];
  const mem = GuestMemory.map(
    [
      { guestPhysAddr: 0n, memorySize: 0xa0000n, userspaceAddr: BigInt(UVA), mmapOffset: 0n },
      {
        guestPhysAddr: 0xc0000n,
        memorySize: BigInt(4 * MiB - 0xc0000),
        userspaceAddr: BigInt(UVA + 0xc0000),
        mmapOffset: 0xc0000n,
      },
    ],
    fds,
  );
  return { mem, backing, fds };
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

describe('GuestMemory', () => {
  it('translates guest-physical and user addresses into the shared memory, and closes the fds', () => {
    const { mem, backing, fds } = qemuLikeGuest();
    cleanups.push(() => {
      mem.close();
      backing.unmap();
    });
    expect(fds.every((fd) => !fdIsOpen(fd))).toBe(true);
    backing.view.write('desc', 0x1000);
    backing.view.write('ring', 0x200000);
    expect(mem.guest(0x1000, 4).toString()).toBe('desc');
    expect(mem.user(UVA + 0x1000, 4).toString()).toBe('desc');
    expect(mem.guest(0x200000n, 4).toString()).toBe('ring');
    expect(mem.user(BigInt(UVA + 0x200000), 4).toString()).toBe('ring');
    mem.guest(0x300000, 5).write('guest');
    expect(backing.view.subarray(0x300000, 0x300005).toString()).toBe('guest');
    expect(mem.guest(0x9ffff, 1).length).toBe(1);
    expect(mem.guest(4 * MiB - 16, 16).length).toBe(16);
    expect(mem.regionCount).toBe(2);
  });

  it('throws GuestMemoryError for anything not entirely inside one region', () => {
    const { mem, backing } = qemuLikeGuest();
    cleanups.push(() => {
      mem.close();
      backing.unmap();
    });
    expect(() => mem.guest(0xa0000, 1)).toThrow(GuestMemoryError); // the hole
    expect(() => mem.guest(0x9fff0, 0x20)).toThrow(/crosses the end/); // runs into the hole
    expect(() => mem.guest(4 * MiB - 8, 16)).toThrow(GuestMemoryError); // past the end
    expect(() => mem.guest(4 * MiB, 0)).toThrow(GuestMemoryError);
    expect(() => mem.guest(0xffff_ffff_ffff_f000n, 16)).toThrow(GuestMemoryError);
    expect(() => mem.guest(2 ** 60, 16)).toThrow(GuestMemoryError);
    expect(() => mem.guest(-1, 1)).toThrow(GuestMemoryError);
    expect(() => mem.guest(0, -1)).toThrow(GuestMemoryError);
    expect(() => mem.user(0x1000, 4)).toThrow(GuestMemoryError); // a guest address is not a user one
    expect(() => mem.guest(UVA, 4)).toThrow(GuestMemoryError);
  });

  it('refuses inconsistent tables and still closes every fd', () => {
    const a = memfdCreate('a', MiB);
    const b = memfdCreate('b', MiB);
    expect(() =>
      GuestMemory.map(
        [
          { guestPhysAddr: 0n, memorySize: BigInt(MiB), userspaceAddr: 0x10000000n, mmapOffset: 0n },
          {
            guestPhysAddr: 0x80000n,
            memorySize: BigInt(MiB / 2),
            userspaceAddr: 0x20000000n,
            mmapOffset: 0n,
          },
        ],
        [a, b],
      ),
    ).toThrow(/overlaps/);
    expect(fdIsOpen(a) || fdIsOpen(b)).toBe(false);
    const c = memfdCreate('c', MiB);
    expect(() =>
      GuestMemory.map([{ guestPhysAddr: 0n, memorySize: 0n, userspaceAddr: 0n, mmapOffset: 0n }], [c]),
    ).toThrow(/empty/);
    expect(fdIsOpen(c)).toBe(false);
    const d = memfdCreate('d', MiB);
    expect(() => GuestMemory.map([], [d])).toThrow(/0 memory regions but 1 fds/);
    expect(fdIsOpen(d)).toBe(false);
  });

  it('is unusable after close, and views taken before close do not crash', () => {
    const { mem, backing } = qemuLikeGuest();
    cleanups.push(() => backing.unmap());
    backing.view[0x5000] = 1;
    const stale = mem.guest(0x5000, 1);
    expect(stale[0]).toBe(1);
    mem.close();
    mem.close();
    expect(() => mem.guest(0x5000, 1)).toThrow(GuestMemoryError);
    expect(stale[0]).toBe(0);
    expect(backing.view[0x5000]).toBe(1);
  });

  it('an empty table translates nothing', () => {
    const mem = GuestMemory.empty();
    expect(() => mem.guest(0, 1)).toThrow(GuestMemoryError);
  });
});
