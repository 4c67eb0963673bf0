/**
 * Paths inside a container's root filesystem, looked at from the agent's
 * side before the process is started in it: the command to run (so a
 * missing binary fails CreateContainer with a clear error, as runc fails
 * `create`) and the working directory.
 *
 * `resolveInRoot` walks a path one component at a time with `root` playing
 * "/": a symlink's target is followed inside the root (an absolute target
 * restarts at the root, `..` never climbs above it), so an image's
 * `/bin/sh -> /bin/busybox` resolves to `<root>/bin/busybox`, not to the
 * agent's own /bin/busybox. At most 40 links are followed (Linux's
 * MAXSYMLINKS); a missing component ends the walk (the rest is appended as
 * is, so the caller's stat reports ENOENT).
 */
import fs from 'node:fs';
import path from 'node:path';
import { executable, spawnError } from './resolve-command.js';

const MAX_LINKS = 40;

/** The host path of `p` (absolute inside the root, or relative to the in-root `cwd`), symlinks resolved inside `root`. */
export function resolveInRoot(root: string, p: string, cwd = '/'): string {
  const pending = path.posix.resolve('/', cwd, p).split('/');
  let inside = '/';
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      inside = path.posix.dirname(inside);
      continue;
    }
    const next = path.posix.join(inside, part);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(path.join(root, next));
    } catch {
      return path.join(root, next, ...pending);
    }
    if (!st.isSymbolicLink()) {
      inside = next;
      continue;
    }
    if (++links > MAX_LINKS) {
      throw Object.assign(new Error(`${p}: too many levels of symbolic links`), { code: 'ELOOP' });
    }
    const target = fs.readlinkSync(path.join(root, next));
    if (target.startsWith('/')) inside = '/';
    pending.unshift(...target.split('/'));
  }
  return inside === '/' ? path.resolve(root) : path.join(root, inside);
}

/**
 * Where execvp would find `file` inside `root` (PATH from the process's own
 * environment, default /bin:/usr/bin). Returns the in-root path (not
 * symlink-resolved: argv[0] and busybox-style applets keep their name);
 * throws ENOENT/EACCES like Node's spawn.
 */
export function resolveCommandInRoot(
  root: string,
  file: string,
  pathEnv: string | undefined,
  cwd: string,
): string {
  if (file === '') throw spawnError(file, 'ENOENT');
  const candidates = file.includes('/')
    ? [path.posix.resolve('/', cwd, file)]
    : (pathEnv ?? '/bin:/usr/bin').split(':').map((dir) => path.posix.resolve('/', cwd, dir || '.', file));
  let sawEacces = false;
  for (const candidate of candidates) {
    const r = executable(resolveInRoot(root, candidate));
    if (r === 'ok') return candidate;
    if (r === 'EACCES') sawEacces = true;
  }
  throw spawnError(file, sawEacces ? 'EACCES' : 'ENOENT');
}

/** True when `dir` (in-root) is a directory inside `root`. */
export function isDirInRoot(root: string, dir: string): boolean {
  try {
    return fs.statSync(resolveInRoot(root, dir)).isDirectory();
  } catch {
    return false;
  }
}
