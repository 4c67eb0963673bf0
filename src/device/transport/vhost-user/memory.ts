/**
 * The guest's RAM as the backend sees it: the region table of SET_MEM_TABLE,
 * each region's memfd mapped into this process, and address translation.
 *
 * Two address spaces point into the same regions (vhost-user.rst, "Memory
 * access"): guest-physical addresses, which the guest driver writes into
 * descriptors, and QEMU's user (virtual) addresses, which SET_VRING_ADDR uses
 * for the rings. `guest(addr, len)` and `user(addr, len)` turn either into a
 * Buffer over the mapped bytes, no copy. A range must lie entirely inside one
 * region (QEMU 7.2 here sends two regions of one memfd, 0-0xa0000 and
 * 0xc0000-1G, with a hole between them); anything else, including an address
 * past 2^53 or a negative length, throws `GuestMemoryError`. The guest
 * controls descriptor addresses, so these errors are device errors to log,
 * never crashes of the host process.
 *
 * Ownership: `GuestMemory.map()` takes the region fds. It maps each (from
 * file offset `mmap_offset`) and closes every fd, on success and on failure
 * alike; the mappings keep the memory. `close()` unmaps (see
 * native-bindings/mmap.ts: a stale view then reads zeros instead of
 * crashing). A new SET_MEM_TABLE replaces the whole table: map the new one,
 * swap, close the old one.
 *
 * Sizes: a Node Buffer is limited to `buffer.constants.MAX_LENGTH` bytes
 * (4 GiB on 64-bit Node 20); a larger region is refused with an error.
 */
import { constants as bufferConstants } from 'node:buffer';
import { closeQuietly, type Mapping, mmapShared } from '../../../../native-bindings/index.js';
import type { MemoryRegion } from './messages.js';

export class GuestMemoryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GuestMemoryError';
  }
}

export type AddressSpace = 'guest' | 'user';

interface Region {
  gpa: number;
  uva: number;
  size: number;
  map: Mapping;
}

function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}

function safe(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new GuestMemoryError(`${what} ${hex(v)} is beyond 2^53`);
  return Number(v);
}

export class GuestMemory {
  readonly #regions: Region[];
  #closed = false;

  private constructor(regions: Region[]) {
    this.#regions = regions;
  }

  /** An empty table: every translation fails (before the first SET_MEM_TABLE). */
  static empty(): GuestMemory {
    return new GuestMemory([]);
  }

  /**
   * Maps a SET_MEM_TABLE: `fds[i]` backs `regions[i]`. Consumes (closes) every fd.
   * Throws GuestMemoryError for an inconsistent table (count mismatch, zero or
   * overlapping regions), SysError when mmap fails.
   */
  static map(regions: readonly MemoryRegion[], fds: readonly number[]): GuestMemory {
    const mapped: Region[] = [];
    try {
      if (regions.length !== fds.length) {
        throw new GuestMemoryError(`${regions.length} memory regions but ${fds.length} fds`);
      }
      regions.forEach((r, i) => {
        const size = safe(r.memorySize, 'region size');
        if (size === 0) throw new GuestMemoryError(`memory region ${i} is empty`);
        if (size > bufferConstants.MAX_LENGTH) {
          throw new GuestMemoryError(`memory region ${i} of ${hex(size)} bytes exceeds a Buffer's maximum`);
        }
        const gpa = safe(r.guestPhysAddr, 'guest address');
        const uva = safe(r.userspaceAddr, 'user address');
        safe(r.guestPhysAddr + r.memorySize, 'region end');
        safe(r.userspaceAddr + r.memorySize, 'region end');
        const offset = safe(r.mmapOffset, 'mmap offset');
        for (const o of mapped) {
          if (gpa < o.gpa + o.size && o.gpa < gpa + size) {
            throw new GuestMemoryError(`memory region ${i} overlaps another in guest-physical space`);
          }
          if (uva < o.uva + o.size && o.uva < uva + size) {
            throw new GuestMemoryError(`memory region ${i} overlaps another in user space`);
          }
        }
        mapped.push({ gpa, uva, size, map: mmapShared(fds[i]!, offset, size) });
      });
    } catch (err) {
      for (const r of mapped) r.map.unmap();
      throw err;
    } finally {
      for (const fd of fds) closeQuietly(fd);
    }
    return new GuestMemory(mapped);
  }

  get regionCount(): number {
    return this.#regions.length;
  }

  /** `len` bytes at guest-physical `addr` (descriptor buffers). */
  guest(addr: number | bigint, len: number): Buffer {
    return this.#translate('guest', addr, len);
  }

  /** `len` bytes at QEMU user address `addr` (ring addresses from SET_VRING_ADDR). */
  user(addr: number | bigint, len: number): Buffer {
    return this.#translate('user', addr, len);
  }

  translate(space: AddressSpace, addr: number | bigint, len: number): Buffer {
    return this.#translate(space, addr, len);
  }

  /** Unmaps every region (idempotent). Views handed out before become harmless zero pages. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const r of this.#regions) r.map.unmap();
  }

  #translate(space: AddressSpace, addr: number | bigint, len: number): Buffer {
    if (this.#closed) throw new GuestMemoryError('guest memory used after close');
    const a = typeof addr === 'bigint' ? (addr > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(addr)) : addr;
    if (!Number.isSafeInteger(a) || a < 0) {
      throw new GuestMemoryError(`${space} address ${hex(addr)} is outside guest memory`);
    }
    if (!Number.isSafeInteger(len) || len < 0) throw new GuestMemoryError(`bad length ${len}`);
    for (const r of this.#regions) {
      const base = space === 'guest' ? r.gpa : r.uva;
      if (a >= base && a < base + r.size) {
        const off = a - base;
        if (len > r.size - off) {
          throw new GuestMemoryError(
            `${space} range [${hex(a)}, +${hex(len)}) crosses the end of its memory region at ${hex(base + r.size)}`,
          );
        }
        return r.map.view.subarray(off, off + len);
      }
    }
    throw new GuestMemoryError(`${space} address ${hex(a)} (+${hex(len)}) is outside guest memory`);
  }
}
