/**
 * Finds the file `execvp` would run for a command name, to report "no such
 * command" as a spawn error rather than as an exit status.
 *
 * In terminal mode the process is started through an exec step (ctty-step.ts),
 * so a missing command would otherwise surface as that step's exit status 127
 * with a message on the terminal; checking first makes both modes fail the
 * same way, with a Node-style error (`code` ENOENT or EACCES) from
 * spawnContainerProcess. The search follows execvp: a name containing '/' is
 * used as is (relative to `cwd`), otherwise each PATH entry is tried in order
 * (an empty entry is the cwd), and the default PATH is "/bin:/usr/bin".
 */
import { accessSync, constants, statSync } from 'node:fs';
import os from 'node:os';
import { resolve } from 'node:path';

export interface SpawnLikeError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path: string;
}

export function spawnError(file: string, code: 'ENOENT' | 'EACCES'): SpawnLikeError {
  return Object.assign(new Error(`spawn ${file} ${code}`), {
    code,
    errno: -os.constants.errno[code],
    syscall: `spawn ${file}`,
    path: file,
  });
}

export function executable(path: string): 'ok' | 'ENOENT' | 'EACCES' {
  try {
    if (!statSync(path).isFile()) return 'EACCES';
    accessSync(path, constants.X_OK);
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EACCES' ? 'EACCES' : 'ENOENT';
  }
}

/** The absolute path execvp would run for `file`; throws ENOENT/EACCES like Node's spawn. */
export function resolveCommand(file: string, pathEnv: string | undefined, cwd: string): string {
  if (file === '') throw spawnError(file, 'ENOENT');
  if (file.includes('/')) {
    const full = resolve(cwd, file);
    const r = executable(full);
    if (r !== 'ok') throw spawnError(file, r);
    return full;
  }
  let sawEacces = false;
  for (const dir of (pathEnv ?? '/bin:/usr/bin').split(':')) {
    const full = resolve(cwd, dir === '' ? '.' : dir, file);
    const r = executable(full);
    if (r === 'ok') return full;
    if (r === 'EACCES') sawEacces = true;
  }
  throw spawnError(file, sawEacces ? 'EACCES' : 'ENOENT');
}
