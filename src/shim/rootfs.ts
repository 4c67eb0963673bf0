/**
 * The container's root filesystem on the host: containerd's Create carries
 * the snapshot as mounts (overlay with `lowerdir/upperdir/workdir`, or a
 * bind of a directory for the native snapshotter), which the shim stacks on
 * `<bundle>/rootfs`, as runc's shim does; Delete (or the `delete` of a dead
 * shim) takes them off again. Without mounts (`ctr run --rootfs <dir>`) the
 * spec's root path is used as it is.
 *
 * Mounting follows containerd's mount package: the flags and data from
 * mount-options.ts, then a propagation change if asked, then a read-only
 * remount for a read-only bind (a bind mount ignores MS_RDONLY at first).
 */
import fs from 'node:fs';
import { MNT_DETACH, MS, mountFs, unmountFs } from '../../native-bindings/mount.js';
import { mountsUnder } from '../util/mountinfo.js';
import { parseMountOptions } from './mount-options.js';

/** What a mount needs (containerd's Mount message has these fields). */
export interface MountSpec {
  type: string;
  source: string;
  options: readonly string[];
}

/** The data string a single mount(2) call takes: one page. */
const MAX_MOUNT_DATA = 4096;

function mountOne(m: MountSpec, target: string): void {
  const { flags, propagation, data } = parseMountOptions(m.options);
  if (data.length >= MAX_MOUNT_DATA) {
    throw new Error(
      `${m.type} mount options are ${data.length} bytes; mount(2) takes at most ${MAX_MOUNT_DATA - 1}`,
    );
  }
  if (!(flags & MS.REMOUNT) || data !== '') mountFs(m.source, target, m.type, flags, data);
  if (propagation) mountFs('', target, '', propagation | MS.SILENT, '');
  if ((flags & (MS.BIND | MS.RDONLY)) === (MS.BIND | MS.RDONLY))
    mountFs('', target, '', flags | MS.REMOUNT, '');
}

/** A recursive bind of `source` (a file or a directory) on the existing `target`. */
export function bindMount(source: string, target: string): void {
  mountFs(source, target, '', MS.BIND | MS.REC, '');
}

/**
 * Mounts `mounts`, in order, on `target`. On failure, what was mounted is
 * taken off again and the error says which mount failed.
 */
export function mountRootfs(mounts: readonly MountSpec[], target: string): void {
  fs.mkdirSync(target, { recursive: true });
  for (const [i, m] of mounts.entries()) {
    try {
      mountOne(m, target);
    } catch (err) {
      unmountAll(target);
      throw new Error(
        `mount rootfs ${i + 1}/${mounts.length} (type ${m.type || '?'}, source ${m.source || '?'}) on ${target}: ${(err as Error).message}`,
      );
    }
  }
}

/**
 * Unmounts everything at or below `dir`, deepest first; a busy mount is
 * detached (MNT_DETACH) rather than left behind. Returns what was unmounted.
 */
export function unmountAll(dir: string): string[] {
  const found = mountsUnder(dir);
  for (const m of found) {
    try {
      unmountFs(m);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EINVAL' || code === 'ENOENT') continue;
      unmountFs(m, MNT_DETACH);
    }
  }
  return found;
}
