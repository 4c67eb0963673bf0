/**
 * What is mounted where, from /proc/self/mountinfo (proc(5)): the shim
 * checks and undoes its rootfs mounts with it, the shim's `delete` finds
 * whatever a dead shim left under a bundle, and tests look for leaked mounts
 * under their own directories.
 *
 * A line is `<id> <parent> <maj:min> <root> <mount point> <options> [tags…]
 * - <fstype> <source> <super options>`; paths escape space, tab, newline and
 * backslash as octal (`\040`), which `parseMountinfo` undoes.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface MountEntry {
  id: number;
  parent: number;
  mountPoint: string;
  fstype: string;
  source: string;
}

const unescapeOctal = (s: string) =>
  s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8)));

/** Parses mountinfo text (pure). Lines that do not parse are skipped. */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-', 6);
    if (f.length < 10 || dash < 0) continue;
    out.push({
      id: Number(f[0]),
      parent: Number(f[1]),
      mountPoint: unescapeOctal(f[4]!),
      fstype: f[dash + 1] ?? '',
      source: unescapeOctal(f[dash + 2] ?? ''),
    });
  }
  return out;
}

/** The calling process's mounts (its mount namespace), in mount order. */
export function readMounts(file = '/proc/self/mountinfo'): MountEntry[] {
  return parseMountinfo(fs.readFileSync(file, 'utf8'));
}

/** Mount points at or below `dir`, deepest (last mounted) first: the order to unmount them in. */
export function mountsUnder(dir: string, mounts: MountEntry[] = readMounts()): string[] {
  const root = path.resolve(dir);
  const prefix = root.endsWith('/') ? root : `${root}/`;
  return mounts
    .filter((m) => m.mountPoint === root || m.mountPoint.startsWith(prefix))
    .map((m) => m.mountPoint)
    .reverse();
}

/** True when `dir` itself is a mount point. */
export function isMountPoint(dir: string, mounts: MountEntry[] = readMounts()): boolean {
  const root = path.resolve(dir);
  return mounts.some((m) => m.mountPoint === root);
}
