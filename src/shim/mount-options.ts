/**
 * containerd's mount options (fstab style, as in its Mount messages) split
 * into mount(2) flags and the filesystem's data string, the way containerd's
 * own mount package does it: a known flag word sets (or, for its negation,
 * clears) a flag; propagation words are applied by a second mount(2) call;
 * every other word (`lowerdir=…`, `index=off`, …) goes into the data string,
 * in order. Pure.
 */
import { MS } from '../../native-bindings/mount.js';

/** word → [clear instead of set, flags] (containerd's table). */
const FLAGS: Record<string, [boolean, number]> = {
  async: [true, MS.SYNCHRONOUS],
  atime: [true, MS.NOATIME],
  bind: [false, MS.BIND],
  defaults: [false, 0],
  dev: [true, MS.NODEV],
  diratime: [true, MS.NODIRATIME],
  dirsync: [false, MS.DIRSYNC],
  exec: [true, MS.NOEXEC],
  mand: [false, MS.MANDLOCK],
  noatime: [false, MS.NOATIME],
  nodev: [false, MS.NODEV],
  nodiratime: [false, MS.NODIRATIME],
  noexec: [false, MS.NOEXEC],
  nomand: [true, MS.MANDLOCK],
  norelatime: [true, MS.RELATIME],
  nostrictatime: [true, MS.STRICTATIME],
  nosuid: [false, MS.NOSUID],
  rbind: [false, MS.BIND | MS.REC],
  relatime: [false, MS.RELATIME],
  remount: [false, MS.REMOUNT],
  ro: [false, MS.RDONLY],
  rw: [true, MS.RDONLY],
  strictatime: [false, MS.STRICTATIME],
  suid: [true, MS.NOSUID],
  sync: [false, MS.SYNCHRONOUS],
};

const PROPAGATION: Record<string, number> = {
  shared: MS.SHARED,
  rshared: MS.SHARED | MS.REC,
  private: MS.PRIVATE,
  rprivate: MS.PRIVATE | MS.REC,
  slave: MS.SLAVE,
  rslave: MS.SLAVE | MS.REC,
  unbindable: MS.UNBINDABLE,
  runbindable: MS.UNBINDABLE | MS.REC,
};

export interface ParsedMountOptions {
  /** Flags for the mount itself. */
  flags: number;
  /** Propagation flags for a second call (0: none). */
  propagation: number;
  /** The filesystem-specific data, comma-joined. */
  data: string;
}

export function parseMountOptions(options: readonly string[]): ParsedMountOptions {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = FLAGS[o];
    if (f) {
      flags = f[0] ? flags & ~f[1] : flags | f[1];
    } else if (PROPAGATION[o] !== undefined) {
      propagation |= PROPAGATION[o];
    } else {
      data.push(o);
    }
  }
  return { flags, propagation, data: data.join(',') };
}
