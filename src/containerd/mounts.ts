/**
 * Unmounting everything below a directory before it is removed: deleting a
 * tree recursively through a mount point would delete what is mounted there
 * (an image layer, a container's files).
 */
import { MNT_DETACH, unmountFs } from '../../native-bindings/index.js';
import { mountsUnder } from '../util/mountinfo.js';

/**
 * Detaches (MNT_DETACH) every mount at or below `dir`, deepest first, and
 * returns the mount points it found. Mounts that are already gone are
 * skipped; any other failure is thrown after the rest were tried.
 */
export function unmountUnder(dir: string): string[] {
  const found = mountsUnder(dir);
  let first: unknown;
  for (const m of found) {
    try {
      unmountFs(m, MNT_DETACH);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EINVAL' && code !== 'ENOENT') first ??= err;
    }
  }
  if (first) throw first;
  return found;
}
