/**
 * Shared memory for the vhost-user backend: `memfd_create`, `mmap(MAP_SHARED)`
 * and a Node Buffer over the mapping with no copy (`koffi.view`).
 *
 * QEMU hands the backend its guest RAM as memfd file descriptors
 * (SET_MEM_TABLE); the backend maps each one and reads/writes virtqueues and
 * packet buffers in place. A `Mapping` owns one mapping:
 *
 *   const m = mmapShared(fd, 0, size);   // fd may be closed afterwards
 *   m.view.writeUInt32LE(1, 0);          // Buffer straight over the pages
 *   m.unmap();                           // m.view now throws MappingClosedError
 *
 * Lifetime, and why a stale view cannot crash the process: a Buffer over
 * unmapped memory would SIGSEGV the whole host process on its next access,
 * and a Buffer cannot be revoked. So `unmap()` does not leave a hole: it
 * atomically replaces the shared pages with a private anonymous placeholder
 * of the same size (`mmap(MAP_FIXED|MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE)`).
 * From that moment the guest's memory is no longer referenced (the memfd can
 * be freed), and any Buffer or subarray somebody kept by mistake reads zeros
 * and writes into the placeholder, harmlessly. The placeholder's address range
 * is released (`munmap`) when the last view over it is garbage-collected (a
 * FinalizationRegistry on the ArrayBuffer koffi returned). `m.view` itself
 * throws after `unmap()`, so new accesses through the Mapping fail loudly.
 * Callers should still treat sub-views as borrowed for the Mapping's life.
 *
 * `AnonymousRegion` is the other kind: private anonymous memory whose pages
 * can be handed back to the kernel at once (`discard`, madvise MADV_DONTNEED)
 * while the range stays mapped, so a Buffer over it never dangles (a
 * discarded page reads zeros). Memory the process frees with `free()` is
 * given back only when glibc decides to; this is given back when we say.
 *
 * x86-64 Linux constants; page size from sysconf.
 */
import koffi from 'koffi';
import { c, check, errno, libc, SysError } from './libc.js';

export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;
/** File seals (fcntl F_ADD_SEALS / F_GET_SEALS). */
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;
const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
const EINVAL = 22;
const MADV_DONTNEED = 4;
const _SC_PAGESIZE = 30;
/** mmap's MAP_FAILED ((void *) -1) as koffi returns it: an unsigned bigint. */
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

const fns = {
  memfd_create: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: libc.func('int ftruncate(int fd, int64_t length)'),
  mmap: libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: libc.func('int munmap(void *addr, size_t length)'),
  madvise: libc.func('int madvise(void *addr, size_t length, int advice)'),
  sysconf: libc.func('long sysconf(int name)'),
};

export const PAGE_SIZE: number = Number(fns.sysconf(_SC_PAGESIZE));

/** A Mapping's view was used after `unmap()`. */
export class MappingClosedError extends Error {
  constructor() {
    super('mapping used after unmap');
    this.name = 'MappingClosedError';
  }
}

/** memfd_create(2): an anonymous memory file (close-on-exec unless told otherwise), optionally sized. */
export function memfdCreate(name: string, size?: number, flags = MFD_CLOEXEC): number {
  const fd = check(fns.memfd_create(name, flags), 'memfd_create', name);
  if (size !== undefined) {
    try {
      truncateFd(fd, size);
    } catch (err) {
      c.close(fd);
      throw err;
    }
  }
  return fd;
}

/** ftruncate(2): sets a file's size (a memfd's, here). */
export function truncateFd(fd: number, size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad size ${size}`);
  check(fns.ftruncate(fd, size), 'ftruncate', `fd ${fd}`);
}

/**
 * fcntl(F_GET_SEALS): the file's seals, or null when the file cannot carry
 * any (EINVAL: not shmem/hugetlbfs, e.g. a regular file). A memfd created
 * without MFD_ALLOW_SEALING (and any other tmpfs file) reports F_SEAL_SEAL.
 */
export function fileSeals(fd: number): number | null {
  const r = c.fcntl(fd, F_GET_SEALS, 0) as number;
  if (r >= 0) return r;
  const e = errno();
  if (e === EINVAL) return null;
  throw new SysError('fcntl(F_GET_SEALS)', e, `fd ${fd}`);
}

/** fcntl(F_ADD_SEALS): adds `seals` to the file (EPERM once F_SEAL_SEAL is set). */
export function addFileSeals(fd: number, seals: number): void {
  check(c.fcntl(fd, F_ADD_SEALS, seals), 'fcntl(F_ADD_SEALS)', `fd ${fd}`);
}

// Releases an address range (a placeholder, an AnonymousRegion) once no Buffer over it is reachable.
const placeholders = new FinalizationRegistry<{ addr: bigint; len: number }>((r) => {
  fns.munmap(r.addr, r.len);
});

/** One MAP_SHARED mapping and the Buffer over it. See the module comment for the lifetime rules. */
export class Mapping {
  /** Address of byte 0 of `view` (the requested offset, not the page-aligned start). */
  readonly ptr: bigint;
  readonly length: number;
  readonly #base: bigint;
  readonly #baseLen: number;
  readonly #ab: ArrayBuffer;
  #view: Buffer | null;

  /** @internal use mmapShared(). */
  constructor(base: bigint, baseLen: number, delta: number, length: number) {
    this.#base = base;
    this.#baseLen = baseLen;
    this.ptr = base + BigInt(delta);
    this.length = length;
    this.#ab = koffi.view(base, baseLen) as ArrayBuffer;
    this.#view = Buffer.from(this.#ab, delta, length);
  }

  get mapped(): boolean {
    return this.#view !== null;
  }

  /** The mapping's bytes, no copy. Throws MappingClosedError after unmap(). */
  get view(): Buffer {
    if (this.#view === null) throw new MappingClosedError();
    return this.#view;
  }

  /**
   * Drops the shared mapping (idempotent). The range becomes a private
   * zero-filled placeholder, released once no view over it is reachable.
   */
  unmap(): void {
    if (this.#view === null) return;
    this.#view = null;
    const flags = MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    const got = fns.mmap(this.#base, this.#baseLen, PROT_READ | PROT_WRITE, flags, -1, 0) as bigint;
    if (got === this.#base) {
      placeholders.register(this.#ab, { addr: this.#base, len: this.#baseLen });
    } else {
      // Could not install the placeholder (out of address space?): the mapping
      // stays until exit rather than risking a crash through a stale view.
    }
  }
}

/**
 * mmap(2) `length` bytes of `fd` from `offset`, PROT_READ|PROT_WRITE, MAP_SHARED.
 * `offset` need not be page-aligned (the mapping starts at the page below it).
 * The fd can be closed afterwards: the mapping holds the memory.
 */
export function mmapShared(fd: number, offset: number, length: number): Mapping {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`bad mmap offset ${offset}`);
  if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`bad mmap length ${length}`);
  const delta = offset % PAGE_SIZE;
  const baseLen = length + delta;
  const base = fns.mmap(null, baseLen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset - delta) as bigint;
  if (base === MAP_FAILED) throw new SysError('mmap', errno(), `fd ${fd} offset ${offset} length ${length}`);
  try {
    return new Mapping(base, baseLen, delta, length);
  } catch (err) {
    fns.munmap(base, baseLen);
    throw err;
  }
}

/**
 * Private anonymous memory (MAP_NORESERVE: address space only until a page is
 * touched) with a Buffer over it. `discard(offset, length)` returns those
 * pages to the kernel now; they read as zeros afterwards. The range is
 * unmapped once no view over it is reachable.
 */
export class AnonymousRegion {
  readonly view: Buffer;
  readonly #base: bigint;

  constructor(readonly length: number) {
    if (!Number.isSafeInteger(length) || length <= 0 || length % PAGE_SIZE !== 0)
      throw new RangeError(`bad anonymous region length ${length} (a positive multiple of ${PAGE_SIZE})`);
    const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    const base = fns.mmap(null, length, PROT_READ | PROT_WRITE, flags, -1, 0) as bigint;
    if (base === MAP_FAILED) throw new SysError('mmap', errno(), `anonymous, ${length} bytes`);
    this.#base = base;
    const ab = koffi.view(base, length) as ArrayBuffer;
    placeholders.register(ab, { addr: base, len: length });
    this.view = Buffer.from(ab);
  }

  /** madvise(MADV_DONTNEED) on `[offset, offset+length)`, both page-aligned: the pages go back to the kernel. */
  discard(offset: number, length: number): void {
    if (offset % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0 || offset < 0 || offset + length > this.length)
      throw new RangeError(`discard [${offset}, +${length}) is not page-aligned inside ${this.length} bytes`);
    check(fns.madvise(this.#base + BigInt(offset), length, MADV_DONTNEED), 'madvise', `${length} bytes`);
  }
}
