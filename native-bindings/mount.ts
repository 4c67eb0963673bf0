/**
 * mount(2) and umount2(2): the shim mounts a container's root filesystem
 * (containerd's overlay or bind mounts) onto the bundle's `rootfs` and
 * removes it again. Errors carry the errno name and the target.
 */
import { check, libc } from './libc.js';

const f = {
  mount: libc.func(
    'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)',
  ),
  umount2: libc.func('int umount2(const char *target, int flags)'),
};

/** mount(2) flags (linux/mount.h). */
export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  SYNCHRONOUS: 0x10,
  REMOUNT: 0x20,
  MANDLOCK: 0x40,
  DIRSYNC: 0x80,
  NOSYMFOLLOW: 0x100,
  NOATIME: 0x400,
  NODIRATIME: 0x800,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
  SILENT: 0x8000,
  UNBINDABLE: 0x20000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
  RELATIME: 0x200000,
  STRICTATIME: 0x1000000,
  LAZYTIME: 0x2000000,
} as const;

/** umount2(2) flags. */
export const MNT_FORCE = 1;
export const MNT_DETACH = 2;
export const UMOUNT_NOFOLLOW = 8;

/** mount(2); throws a SysError (`mount <target>: EINVAL ...`). */
export function mountFs(source: string, target: string, fstype: string, flags: number, data: string): void {
  check(f.mount(source, target, fstype || null, flags, data || null), 'mount', target);
}

/** umount2(2); throws a SysError (EINVAL when `target` is not a mount point). */
export function unmountFs(target: string, flags = 0): void {
  check(f.umount2(target, flags), 'umount2', target);
}
