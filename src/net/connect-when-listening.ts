/**
 * Connecting to a Unix socket that may not be listening yet, without
 * polling: the directory is watched (inotify, through `fs.watch`) and the
 * connect is retried at each change under the socket's name, never on a
 * timer. A listener made by UnixListener changes its name twice: bind(2)
 * creates the file, and the chmod that follows listen(2) changes its mode,
 * so a connect refused between the bind and the listen is retried once it
 * can succeed. A stale file from a dead listener (ECONNREFUSED) is waited
 * out the same way. Bounded by `timeoutMs`.
 *
 * The directory is created (0700) if missing, as the loopback guest's
 * stand-in server creates it (bind-private.ts makeSocketDir), so the wait
 * can start before the listener's process does.
 */
import fs from 'node:fs';
import path from 'node:path';
import { connectUnix } from '../../native-bindings/index.js';

/** Errors that mean "not listening yet" rather than "cannot ever connect". */
const NOT_YET = new Set(['ENOENT', 'ECONNREFUSED']);

/** Resolves the connected (non-blocking) socket fd; rejects with the last connect error after `timeoutMs`. */
export function connectWhenListening(socketPath: string, timeoutMs: number): Promise<number> {
  const dir = path.dirname(socketPath);
  const name = path.basename(socketPath);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return new Promise((resolve, reject) => {
    let lastError: Error | null = null;
    let done = false;
    const finish = (fd: number | null, err: Error | null) => {
      if (done) return;
      done = true;
      watcher.close();
      clearTimeout(timer);
      if (fd !== null) resolve(fd);
      else reject(err);
    };
    const attempt = () => {
      try {
        finish(connectUnix(socketPath), null);
      } catch (err) {
        const code = (err as { code?: string }).code ?? '';
        if (!NOT_YET.has(code)) finish(null, err as Error);
        else if (code === 'ECONNREFUSED' && !isSocket(socketPath))
          // connect(2) says ECONNREFUSED for a regular file too: no listener will ever come.
          finish(
            null,
            Object.assign(new Error(`${socketPath} is not a socket`, { cause: err }), { code: 'ENOTSOCK' }),
          );
        else lastError = err as Error;
      }
    };
    // Watch first, then try: a listener that appears in between is seen either way.
    const watcher = fs.watch(dir, (_event, file) => {
      if (file === null || file === name) attempt();
    });
    watcher.on('error', (err) => finish(null, err));
    const timer = setTimeout(() => {
      const why = lastError ? `: ${lastError.message}` : '';
      const err = new Error(`${socketPath} not listening within ${timeoutMs} ms${why}`, { cause: lastError });
      finish(null, Object.assign(err, { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    attempt();
  });
}

function isSocket(p: string): boolean {
  try {
    return fs.lstatSync(p).isSocket();
  } catch {
    return true; // gone since: the next event decides
  }
}
