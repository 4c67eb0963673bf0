/**
 * A minimal guest initramfs: Debian's static busybox, the guest kernel's
 * virtio/vsock/9p modules and an `/init` that
 *   1. loads the modules the guest needs, dependencies first (worked out per
 *      kernel: guest-kernel.ts),
 *   2. mounts the host's root read-only over 9p (`hostroot` tag) at /mnt,
 *      with proc, sysfs, devtmpfs and a tmpfs /run inside it (not /tmp:
 *      a checkout under the host's /tmp must stay visible to the guest),
 *   3. prints `PASSFD-VM-READY`, then runs the command from the kernel
 *      command line (`agent.cmd=<base64 of a /bin/sh -c script>`), with
 *      every other `agent.<key>=<value>` exported as `AGENT_<KEY>` (dots
 *      and dashes become `_`), in a new mount namespace whose root is /mnt
 *      (moved onto /, as switch_root does, then chroot: a process joining
 *      a copy of that namespace later lands in the host root, not in the
 *      initramfs),
 *   4. prints `PASSFD-VM-EXIT <status>` and powers off (`poweroff -f`).
 *
 * The archive is written here (cpio "newc" + gzip), no external cpio needed.
 *
 * Cache (`cachedInitramfs`): the archive depends only on the kernel, busybox,
 * the module list and `/init`, so it is built once and reused across runs,
 * in `$XDG_CACHE_HOME/passfd-broker` (an absolute XDG_CACHE_HOME only, as
 * the XDG spec says), else `~/.cache/passfd-broker`, else
 * `<os.tmpdir()>/passfd-broker-cache-<uid>`. A directory is used only if it
 * is a real directory (not a symlink) owned by us and writable; none usable →
 * the archive is built where the caller asked, uncached. Entries are named
 * `initramfs-<kernel version>-<key>.cpio.gz`, the key being a SHA-256 of:
 * this builder's version (`INITRAMFS_BUILDER_VERSION`), the kernel version,
 * the vmlinuz path, size and mtime, the size and mtime of the kernel's
 * `modules.dep` (depmod rewrites it whenever the modules change), the
 * busybox path, size and mtime, the module list and the exact `/init` text.
 * Any change of those builds a new entry; nothing is ever patched in place.
 * Written atomically: built into a uniquely named temporary file in the same
 * directory, fsync'd, then rename(2)d over the entry, so concurrent runs each
 * see either no entry or a complete one (two runs that miss together both
 * build, the last rename wins, both files are identical in content). A hit
 * refreshes the entry's mtime; entries unused for `CACHE_MAX_AGE_DAYS` and
 * temporary files older than an hour (a crashed build) are pruned after each
 * build.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { findGuestKernel, GUEST_MODULE_TARGETS, type GuestKernel, guestModules } from './guest-kernel.js';

export const VM_READY_MARKER = 'PASSFD-VM-READY';
export const VM_EXIT_MARKER = 'PASSFD-VM-EXIT';

function moduleBytes(file: string): Buffer {
  const raw = fs.readFileSync(file);
  if (file.endsWith('.ko')) return raw;
  if (file.endsWith('.gz')) return zlib.gunzipSync(raw);
  // busybox insmod cannot read xz/zstd itself; the host's xz/zstd can.
  const tool = file.endsWith('.xz') ? ['xz', '-dc'] : ['zstd', '-dc'];
  const r = spawnSync(tool[0]!, [tool[1]!, file], { maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${tool.join(' ')} ${file} failed: ${r.stderr?.toString()}`);
  return r.stdout as Buffer;
}

/** The guest's `/init` (see the module comment) for this module load order. */
export const initScript = (modules: readonly string[]): string => `#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /mnt /tmp
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in ${modules.join(' ')}; do
  $B insmod /lib/modules/$m.ko || echo "init: insmod $m failed"
done
if ! $B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /mnt; then
  echo "init: 9p mount of hostroot failed"
  echo "${VM_EXIT_MARKER} 9p"
  $B poweroff -f
fi
$B mount -t proc proc /mnt/proc
$B mount -t sysfs sys /mnt/sys
$B mount -t devtmpfs dev /mnt/dev
$B mount -t tmpfs run /mnt/run
CMD=
for arg in $($B cat /proc/cmdline); do
  case "$arg" in
    agent.cmd=*) CMD=$(echo "\${arg#agent.cmd=}" | $B base64 -d) ;;
    agent.*=*)
      k=\${arg%%=*}; k=\${k#agent.}
      k=$(echo "$k" | $B tr 'a-z.-' 'A-Z__')
      export "AGENT_$k=\${arg#*=}" ;;
  esac
done
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/run TMPDIR=/run
echo "${VM_READY_MARKER} $($B cat /proc/uptime)"
if [ -n "$CMD" ]; then
  # The command runs in its own mount namespace whose root *is* the host root (moved onto /,
  # as switch_root does), not merely chrooted into /mnt: a process that joins a mount namespace
  # copied from the agent's (nsenter -m, for a container's exec) then lands in the host root too.
  export CMD
  $B unshare -m $B sh -c 'cd /mnt && $0 mount --make-rprivate / && $0 mount --move /mnt / && exec $0 chroot . /bin/sh -c "$CMD"' $B
  rc=$?
else
  echo "init: no agent.cmd= on the kernel command line"
  rc=127
fi
echo "${VM_EXIT_MARKER} $rc"
$B poweroff -f
`;

interface CpioEntry {
  name: string;
  mode: number; // including file type bits
  data?: Buffer;
}

function cpioHeader(ino: number, e: CpioEntry, size: number, nameLen: number): string {
  const hex = (n: number) => (n >>> 0).toString(16).padStart(8, '0');
  // newc: magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  return `070701${hex(ino)}${hex(e.mode)}${hex(0)}${hex(0)}${hex(1)}${hex(0)}${hex(size)}${hex(0)}${hex(0)}${hex(0)}${hex(0)}${hex(nameLen)}${hex(0)}`;
}

/** A cpio "newc" archive of the entries (trailer appended). */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    offset += b.length;
  };
  const pad4 = () => {
    const n = (4 - (offset % 4)) % 4;
    if (n) push(Buffer.alloc(n));
  };
  const all = [...entries, { name: 'TRAILER!!!', mode: 0 }];
  all.forEach((e, i) => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    push(Buffer.from(cpioHeader(i + 1, e, data.length, name.length), 'ascii'));
    push(name);
    pad4();
    push(data);
    pad4();
  });
  return Buffer.concat(parts);
}

export interface InitramfsOptions {
  /** Where to write the gzip'd cpio archive. */
  output: string;
  kernel?: GuestKernel;
  busybox?: string;
  /** The modules the guest needs (default GUEST_MODULE_TARGETS); their dependencies are added. */
  modules?: readonly string[];
}

/** Builds the initramfs; returns its path and the kernel it matches. */
export function buildInitramfs(opts: InitramfsOptions): { path: string; kernel: GuestKernel } {
  const kernel = opts.kernel ?? findGuestKernel();
  const busybox = opts.busybox ?? '/bin/busybox';
  if (!fs.existsSync(busybox)) throw new Error(`${busybox} missing (apt-get install busybox-static)`);
  const plan = guestModules(kernel, opts.modules ?? GUEST_MODULE_TARGETS);
  const DIR = 0o040755;
  const FILE = 0o100644;
  const EXEC = 0o100755;
  const entries: CpioEntry[] = [
    { name: 'bin', mode: DIR },
    { name: 'lib', mode: DIR },
    { name: 'lib/modules', mode: DIR },
    { name: 'dev', mode: DIR },
    { name: 'proc', mode: DIR },
    { name: 'sys', mode: DIR },
    { name: 'mnt', mode: DIR },
    { name: 'tmp', mode: DIR },
    { name: 'bin/busybox', mode: EXEC, data: fs.readFileSync(busybox) },
    { name: 'bin/sh', mode: 0o120777, data: Buffer.from('busybox') },
    { name: 'init', mode: EXEC, data: Buffer.from(initScript(plan.order)) },
  ];
  for (const m of plan.order) {
    entries.push({
      name: `lib/modules/${m}.ko`,
      mode: FILE,
      data: moduleBytes(path.join(kernel.modulesDir, plan.files.get(m)!)),
    });
  }
  fs.mkdirSync(path.dirname(opts.output), { recursive: true });
  fs.writeFileSync(opts.output, zlib.gzipSync(cpioNewc(entries), { level: 1 }));
  return { path: opts.output, kernel };
}

/**
 * Bump when the archive changes in a way the other cache-key inputs do not
 * capture (the cpio writer, the directory set, the compression, ...).
 */
export const INITRAMFS_BUILDER_VERSION = 2;
/** Cache entries not used for this long are removed (after a build). */
export const CACHE_MAX_AGE_DAYS = 30;
const TMP_MAX_AGE_MS = 3600_000;

export interface InitramfsInputs {
  kernel: GuestKernel;
  busybox: string;
  /** The modules in load order, dependencies included (guestModules(...).order). */
  modules: readonly string[];
}

/** `<size>:<mtime ns>` of a file (following symlinks: what would be read). */
function fileStamp(p: string): string {
  const st = fs.statSync(p, { bigint: true });
  return `${st.size}:${st.mtimeNs}`;
}

/** The cache key of an initramfs built from these inputs (hex SHA-256; see the module comment). */
export function initramfsCacheKey(
  inputs: InitramfsInputs,
  builderVersion = INITRAMFS_BUILDER_VERSION,
): string {
  const { kernel, busybox, modules } = inputs;
  const dep = path.join(kernel.modulesDir, 'modules.dep');
  const material = {
    builder: builderVersion,
    kernel: {
      version: kernel.version,
      vmlinuz: path.resolve(kernel.vmlinuz),
      vmlinuzStamp: fileStamp(kernel.vmlinuz),
      modulesDir: path.resolve(kernel.modulesDir),
      modulesStamp: fs.existsSync(dep) ? fileStamp(dep) : fileStamp(kernel.modulesDir),
    },
    busybox: { path: path.resolve(busybox), stamp: fileStamp(busybox) },
    modules: [...modules],
    init: initScript(modules),
  };
  return createHash('sha256').update(JSON.stringify(material)).digest('hex');
}

/** Candidate cache directories, best first (see the module comment). */
export function initramfsCacheDirs(env: NodeJS.ProcessEnv = process.env, home = os.homedir()): string[] {
  const dirs: string[] = [];
  const xdg = env.XDG_CACHE_HOME;
  if (xdg && path.isAbsolute(xdg)) dirs.push(path.join(xdg, 'passfd-broker'));
  else if (home) dirs.push(path.join(home, '.cache', 'passfd-broker'));
  dirs.push(path.join(os.tmpdir(), `passfd-broker-cache-${process.getuid?.() ?? 'user'}`));
  return dirs;
}

/** Creates `dir` if needed; true when it is a directory of ours (not a symlink) that we can write. */
export function usableCacheDir(dir: string): boolean {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = fs.lstatSync(dir);
    if (!st.isDirectory()) return false;
    const uid = process.getuid?.();
    if (uid !== undefined && st.uid !== uid) return false;
    fs.accessSync(dir, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export interface CachedInitramfsOptions {
  kernel?: GuestKernel;
  busybox?: string;
  /** As InitramfsOptions.modules. */
  modules?: readonly string[];
  /** Use this cache directory instead of the default candidates. */
  cacheDir?: string;
  /** Where to build when no cache directory is usable. */
  fallbackOutput: string;
}

export interface CachedInitramfs {
  path: string;
  kernel: GuestKernel;
  key: string;
  /** True when an existing entry was reused. */
  hit: boolean;
  /** False when no cache directory was usable (built at `fallbackOutput`). */
  cached: boolean;
}

function pruneCache(dir: string, keep: string): void {
  const now = Date.now();
  for (const name of fs.readdirSync(dir)) {
    const p = path.join(dir, name);
    if (p === keep) continue;
    const entry = /^initramfs-.*\.cpio\.gz$/.test(name);
    const tmp = /^\.initramfs-.*\.tmp$/.test(name);
    if (!entry && !tmp) continue;
    try {
      const age = now - fs.lstatSync(p).mtimeMs;
      if (age > (tmp ? TMP_MAX_AGE_MS : CACHE_MAX_AGE_DAYS * 86400_000)) fs.rmSync(p, { force: true });
    } catch {
      // Gone already (another run pruned it).
    }
  }
}

/**
 * The initramfs for these inputs from the cache, built (atomically) on a
 * miss. Throws like `buildInitramfs` when an input is missing.
 */
export function cachedInitramfs(opts: CachedInitramfsOptions): CachedInitramfs {
  const kernel = opts.kernel ?? findGuestKernel();
  const busybox = opts.busybox ?? '/bin/busybox';
  if (!fs.existsSync(busybox)) throw new Error(`${busybox} missing (apt-get install busybox-static)`);
  const modules = opts.modules ?? GUEST_MODULE_TARGETS;
  const key = initramfsCacheKey({ kernel, busybox, modules: guestModules(kernel, modules).order });
  const dir = (opts.cacheDir ? [opts.cacheDir] : initramfsCacheDirs()).find(usableCacheDir);
  if (!dir) {
    buildInitramfs({ output: opts.fallbackOutput, kernel, busybox, modules });
    return { path: opts.fallbackOutput, kernel, key, hit: false, cached: false };
  }
  const base = `initramfs-${kernel.version.replace(/[^\w.+-]/g, '_')}-${key.slice(0, 24)}.cpio.gz`;
  const file = path.join(dir, base);
  try {
    const st = fs.statSync(file);
    if (st.isFile() && st.size > 0) {
      const now = new Date();
      fs.utimesSync(file, now, now);
      return { path: file, kernel, key, hit: true, cached: true };
    }
  } catch {
    // No entry (or pruned just now): build it.
  }
  const tmp = path.join(dir, `.${base}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    buildInitramfs({ output: tmp, kernel, busybox, modules });
    const fd = fs.openSync(tmp, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  pruneCache(dir, file);
  return { path: file, kernel, key, hit: false, cached: true };
}
