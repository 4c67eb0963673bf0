/**
 * Why a process could not start, as the ttrpc error the agent answers with,
 * so a runtime can tell the cases apart the way shells and `docker run`
 * users expect (exit 127: no such command; 126: found but cannot be run):
 *
 *   command not found      NOT_FOUND          "cannot start <cmd>: executable file not found in $PATH"
 *                                             ("…: no such file or directory" for a path)
 *   not executable         PERMISSION_DENIED  "cannot start <cmd>: permission denied"
 *   bad working directory  INVALID_ARGUMENT   "cannot start <cmd>: working directory <dir>: …"
 *   anything else          INVALID_ARGUMENT   "cannot start <cmd>: <reason>"
 *
 * The working directory is blamed only when it is the culprit: the spawn
 * failed and the directory is not one this process can enter.
 */
import fs from 'node:fs';
import { GrpcCode } from '../protocol/ttrpc.js';
import { TtrpcError } from '../ttrpc/errors.js';

/** Prefix of every start failure's message (the broker recognises 126/127 by it and the code). */
export const START_FAILURE = 'cannot start';

function cwdProblem(cwd: string): string | null {
  try {
    if (!fs.statSync(cwd).isDirectory()) return 'not a directory';
    fs.accessSync(cwd, fs.constants.X_OK);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'no such directory' : code === 'EACCES' ? 'permission denied' : `${code}`;
  }
}

export function startError(err: unknown, command: string, cwd: string | undefined): TtrpcError {
  const code = (err as { code?: string }).code;
  const at = `${START_FAILURE} ${command}`;
  const dirProblem = cwd ? cwdProblem(cwd) : null;
  if (dirProblem)
    return new TtrpcError(GrpcCode.INVALID_ARGUMENT, `${at}: working directory ${cwd}: ${dirProblem}`);
  if (code === 'ENOENT') {
    const what = command.includes('/') ? 'no such file or directory' : 'executable file not found in $PATH';
    return new TtrpcError(GrpcCode.NOT_FOUND, `${at}: ${what}`);
  }
  if (code === 'EACCES') return new TtrpcError(GrpcCode.PERMISSION_DENIED, `${at}: permission denied`);
  return new TtrpcError(GrpcCode.INVALID_ARGUMENT, `${at}: ${(err as Error).message}`);
}
