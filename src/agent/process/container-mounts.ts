/**
 * A container's extra mounts (OCI `mounts`, Kata's `Spec.Mounts`) as the
 * agent makes them inside the container's new mount namespace, after the
 * root's /proc and /dev (container-root.ts), in the spec's order (a mount
 * on a path inside an earlier one lands in it, as with runc).
 *
 * What is supported: bind mounts (`type` "bind" or an option "bind" /
 * "rbind"; `ro` makes them read-only, with nosuid/nodev/noexec kept) and
 * tmpfs (options passed to mount(8): size, mode, nosuid, …). The runtime
 * leaves out what the agent provides itself (/proc, /dev and below, /sys);
 * anything else is refused by name, so the container fails to start instead
 * of running without a mount it asked for.
 *
 * `plan` is pure (what to mount, or why not); `prepareMountPoints` (once,
 * at CreateContainer) creates the missing mount points inside the root, the
 * way runc does: the
 * destination is resolved with symlinks followed inside the root
 * (root-path.ts), so an image cannot point a mount outside it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { resolveInRoot } from './root-path.js';

export interface SpecMount {
  destination: string;
  source: string;
  type: string;
  options: readonly string[];
}

/** One mount the init script makes: mount(8) arguments, the target still inside the root. */
export interface PlannedMount {
  kind: 'bind' | 'rbind' | 'tmpfs';
  /** Host path of the source (bind), or "tmpfs". */
  source: string;
  /** Absolute path inside the container. */
  destination: string;
  /** bind: flags for the read-only remount ("" for none); tmpfs: mount -o options. */
  options: string;
}

/** Options that are not mount(8) flags of a bind mount's remount (or that the remount cannot change). */
const BIND_REMOUNT_FLAGS = new Set(['ro', 'nosuid', 'nodev', 'noexec']);
/** Propagation and other options that are the namespace's business, dropped. */
const IGNORED = new Set([
  'rw',
  'bind',
  'rbind',
  'private',
  'rprivate',
  'shared',
  'rshared',
  'slave',
  'rslave',
]);

export class MountError extends Error {
  override readonly name = 'MountError';
}

/** The mounts to make, in order; throws MountError naming the first one that cannot be made. */
export function plan(mounts: readonly SpecMount[]): PlannedMount[] {
  return mounts.map((m) => {
    const dest = m.destination;
    if (!path.posix.isAbsolute(dest) || dest.split('/').includes('..')) {
      throw new MountError(`mount destination ${JSON.stringify(dest)} must be an absolute path without ".."`);
    }
    const destination = path.posix.normalize(dest).replace(/(.)\/+$/, '$1');
    const isBind = m.type === 'bind' || m.options.includes('bind') || m.options.includes('rbind');
    if (isBind) {
      if (!path.posix.isAbsolute(m.source)) {
        throw new MountError(
          `mount ${destination}: bind source ${JSON.stringify(m.source)} must be an absolute path`,
        );
      }
      const flags = m.options.filter((o) => BIND_REMOUNT_FLAGS.has(o));
      return {
        kind: m.options.includes('rbind') ? 'rbind' : 'bind',
        source: m.source,
        destination,
        // Only a read-only bind needs the remount (mount --bind ignores -o on Linux).
        options: flags.includes('ro') ? flags.join(',') : '',
      };
    }
    if (m.type === 'tmpfs') {
      const opts = m.options.filter((o) => !IGNORED.has(o) && !o.includes("'") && o !== '');
      return { kind: 'tmpfs', source: 'tmpfs', destination, options: opts.join(',') || 'defaults' };
    }
    throw new MountError(
      `mount ${destination}: type ${JSON.stringify(m.type)} is not supported (bind mounts and tmpfs are)`,
    );
  });
}

/** A planned mount with its mount point made: `target` is the host path to mount on, inside the root. */
export interface PreparedMount extends PlannedMount {
  target: string;
}

/**
 * Creates each missing mount point under `root` (a directory, or an empty
 * file for a bind mount of a file) and returns the mounts with the host path
 * to mount on, resolved inside the root. Throws MountError for a bind source
 * that does not exist.
 */
export function prepareMountPoints(root: string, planned: readonly PlannedMount[]): PreparedMount[] {
  return planned.map((m) => {
    let isDir = true;
    if (m.kind !== 'tmpfs') {
      try {
        isDir = fs.statSync(m.source).isDirectory();
      } catch (err) {
        throw new MountError(
          `mount ${m.destination}: source ${m.source}: ${(err as NodeJS.ErrnoException).code}`,
        );
      }
    }
    const target = resolveInRoot(root, m.destination);
    if (!fs.existsSync(target)) {
      if (isDir) fs.mkdirSync(target, { recursive: true, mode: 0o755 });
      else {
        fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o755 });
        fs.closeSync(fs.openSync(target, 'a', 0o644));
      }
    }
    return { ...m, target };
  });
}
