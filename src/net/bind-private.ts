/**
 * Binding Unix sockets nobody else can reach, from the moment they exist.
 *
 * bind(2) creates the socket file with mode `0777 & ~umask`, and connect(2)
 * needs write permission on it. A chmod after bind leaves a window in which
 * any user may connect (and a connection made then survives the chmod), so
 * the file is created 0600 by bind itself, under umask 0177
 * (util/private-umask.ts).
 *
 * A path that is already bound is taken over only when it is stale: a
 * connect to it is refused (ECONNREFUSED: nobody listens), then the file is
 * removed, which is logged, and bound again. A path where a process still
 * answers is refused with an error that says so; a path that is not a
 * socket is never touched. No directory is created, except by
 * `makeSocketDir` for a directory that is the caller's own (the loopback
 * guest's): that one only, 0700, never its parents.
 */
import fs from 'node:fs';
import path from 'node:path';
import { closeQuietly, connectUnix, listenUnix } from '../../native-bindings/index.js';
import { accessContext } from '../access/context.js';
import { withPrivateUmask } from '../util/private-umask.js';

/** A listening Unix stream socket at `socketPath`, mode 0600 from its creation (see module comment). */
export function listenPrivately(socketPath: string, backlog: number): number {
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = withPrivateUmask(() => listenUnix(socketPath, backlog));
      try {
        // Already 0600: this chmod after listen(2) is for its inotify event, which tells a
        // client waiting for the socket (connect-when-listening.ts) that a connect can now succeed.
        fs.chmodSync(socketPath, 0o600);
      } catch (err) {
        closeQuietly(fd);
        throw err;
      }
      return fd;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EADDRINUSE' || attempt >= 3) throw bindError(socketPath, err as Error);
    }
    removeIfStale(socketPath);
  }
}

function bindError(socketPath: string, err: Error): Error {
  const code = (err as { code?: string }).code;
  const dir = path.dirname(socketPath);
  if (code === 'ENOENT') return new Error(`cannot listen on ${socketPath}: directory ${dir} does not exist`);
  if (code === 'ENOTDIR') return new Error(`cannot listen on ${socketPath}: ${dir} is not a directory`);
  if (code === 'EACCES') return new Error(`cannot listen on ${socketPath}: permission denied in ${dir}`);
  return new Error(`cannot listen on ${socketPath}: ${err.message}`);
}

/** Removes the socket file at `socketPath` if nobody listens on it; throws if it is live or not a socket. */
function removeIfStale(socketPath: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch {
    return; // gone meanwhile: bind again
  }
  if (!st.isSocket()) throw new Error(`cannot listen on ${socketPath}: it exists and is not a socket`);
  let probe: number;
  try {
    probe = connectUnix(socketPath);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT') return;
    if (code !== 'ECONNREFUSED') {
      // EAGAIN: a full backlog, so somebody listens; EACCES: not ours to judge.
      throw new Error(
        `cannot listen on ${socketPath}: it exists and ${code === 'EAGAIN' ? 'a process is listening on it' : `cannot be probed (${code})`}; not replacing it`,
      );
    }
    fs.rmSync(socketPath, { force: true });
    accessContext().log.info(`replaced the stale socket ${socketPath} (nobody listens on it: ECONNREFUSED)`);
    return;
  }
  closeQuietly(probe);
  throw new Error(
    `cannot listen on ${socketPath}: another process is listening on it (stop it or choose another path; a stale socket would be replaced)`,
  );
}

/** Creates `dir` (0700) for sockets if it is missing; its parent must exist. An existing directory is used as is. */
export function makeSocketDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`cannot create ${dir}: its parent directory does not exist`);
    if (code !== 'EEXIST') throw new Error(`cannot create ${dir}: ${(err as Error).message}`);
    if (!fs.statSync(dir).isDirectory()) throw new Error(`${dir} exists and is not a directory`);
  }
}
