/**
 * Binding Unix sockets nobody else can reach, from the moment they exist.
 *
 * bind(2) creates the socket file with mode `0777 & ~umask`, and connect(2)
 * needs write permission on it. A chmod after bind leaves a window in which
 * any user may connect (and a connection made then survives the chmod), so
 * the file is created 0600 by bind itself, under umask 0177. The umask is
 * process-wide: it is set and restored around the one synchronous bind
 * call; a file this process's other threads (libuv's pool) create in those
 * microseconds could only come out more restrictive, never less.
 *
 * A path that is already bound is taken over only when it is stale: a
 * connect to it is refused (ECONNREFUSED: nobody listens), then the file is
 * removed, which is logged, and bound again. A path where a process still
 * answers is refused with an error that says so; a path that is not a
 * socket is never touched. No directory is created.
 */
import fs from 'node:fs';
import path from 'node:path';
import { closeQuietly, connectUnix, listenUnix } from '../../native-bindings/index.js';
import { accessContext } from '../access/context.js';

const PRIVATE_UMASK = 0o177;

/** Runs `fn` (synchronous) with umask 0177: files and sockets it creates are at most 0600. */
export function withPrivateUmask<T>(fn: () => T): T {
  const old = process.umask(PRIVATE_UMASK);
  try {
    return fn();
  } finally {
    process.umask(old);
  }
}

/** A listening Unix stream socket at `socketPath`, mode 0600 from its creation (see module comment). */
export function listenPrivately(socketPath: string, backlog: number): number {
  for (let attempt = 0; ; attempt++) {
    try {
      return withPrivateUmask(() => listenUnix(socketPath, backlog));
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
