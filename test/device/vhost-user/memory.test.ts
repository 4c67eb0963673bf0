import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  F_SEAL_SHRINK,
  fileSeals,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  memfdCreate,
  mmapShared,
  truncateFd,
} from '../../../native-bindings/index.js';

/** Sealable, as QEMU's guest RAM is (the backend adds F_SEAL_SHRINK). */
const SEALABLE = MFD_CLOEXEC | MFD_ALLOW_SEALING;

import { GuestMemory, GuestMemoryError } from '../../../src/device/transport/vhost-user/memory.js';
import { createLogger } from '../../../src/util/log.js';

const MiB = 1 << 20;
const UVA = 0x7f00_0000_0000;

function fdIsOpen(fd: number): boolean {
  return fs.existsSync(`/proc/self/fd/${fd}`);
}

/** A 4 MiB "guest" laid out as QEMU 7.2 does: two regions of one memfd with a hole (0xa0000-0xc0000). */
function qemuLikeGuest(): { mem: GuestMemory; backing: ReturnType<typeof mmapShared>; fds: number[] } {
  const fd = memfdCreate('guest-ram', 4 * MiB, SEALABLE);
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
    const a = memfdCreate('a', MiB, SEALABLE);
    const b = memfdCreate('b', MiB, SEALABLE);
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
    const c = memfdCreate('c', MiB, SEALABLE);
    expect(() =>
      GuestMemory.map([{ guestPhysAddr: 0n, memorySize: 0n, userspaceAddr: 0n, mmapOffset: 0n }], [c]),
    ).toThrow(/empty/);
    expect(fdIsOpen(c)).toBe(false);
    const d = memfdCreate('d', MiB, SEALABLE);
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

  describe('a front-end cannot make the backend fault (SIGBUS)', () => {
    const region = (size: number, mmapOffset = 0) => ({
      guestPhysAddr: 0n,
      memorySize: BigInt(size),
      userspaceAddr: 0x10000000n,
      mmapOffset: BigInt(mmapOffset),
    });

    it('refuses a region larger than its fd, or an mmap_offset past its end, and closes the fd', () => {
      const a = memfdCreate('small', MiB, SEALABLE);
      expect(() => GuestMemory.map([region(2 * MiB)], [a])).toThrow(/ends past its fd's 0x100000 bytes/);
      expect(fdIsOpen(a)).toBe(false);
      const b = memfdCreate('small', MiB, SEALABLE);
      expect(() => GuestMemory.map([region(4096, 2 * MiB)], [b])).toThrow(/mmap_offset 0x200000/);
      expect(fdIsOpen(b)).toBe(false);
      const c = memfdCreate('small', MiB, SEALABLE);
      expect(() => GuestMemory.map([region(MiB, 4096)], [c])).toThrow(/ends past/);
      expect(fdIsOpen(c)).toBe(false);
    });

    it('seals a sealable memfd against shrinking, so a later truncate fails instead of faulting', () => {
      const fd = memfdCreate('ram', MiB, SEALABLE);
      const own = fs.openSync(`/proc/self/fd/${fd}`, 'r+');
      const lines: string[] = [];
      const mem = GuestMemory.map([region(MiB)], [fd], { log: createLogger('t', (l) => lines.push(l)) });
      cleanups.push(() => {
        mem.close();
        fs.closeSync(own);
      });
      expect(fileSeals(own)! & F_SEAL_SHRINK).toBe(F_SEAL_SHRINK);
      expect(() => truncateFd(own, 4096)).toThrow(/EPERM/);
      truncateFd(own, 2 * MiB); // growing is the front-end's business
      mem.guest(MiB - 1, 1)[0] = 7; // still mapped and usable
      expect(lines.join('')).toMatch(/sealed its memfd against shrinking/);
    });

    it('refuses memory that cannot be sealed, unless unsealed memory is allowed (then says so)', () => {
      const plain = memfdCreate('unsealable', MiB); // no MFD_ALLOW_SEALING: F_SEAL_SEAL is set
      expect(() => GuestMemory.map([region(MiB)], [plain])).toThrow(/cannot be sealed against shrinking/);
      expect(fdIsOpen(plain)).toBe(false);
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mem-')), 'ram');
      fs.writeFileSync(file, Buffer.alloc(MiB));
      const lines: string[] = [];
      const fd = fs.openSync(file, 'r+');
      const mem = GuestMemory.map([region(MiB)], [fd], {
        allowUnsealed: true,
        log: createLogger('t', (l) => lines.push(l)),
      });
      cleanups.push(() => {
        mem.close();
        fs.rmSync(path.dirname(file), { recursive: true });
      });
      expect(lines.join('')).toMatch(
        /region\(s\) 0 cannot be sealed.*a front-end that truncates them will crash/,
      );
    });
  });
});
