/**
 * Creating files and sockets nobody else can open, from the moment they
 * exist: bind(2) and open(2) apply the umask at creation, so a mode set
 * afterwards (chmod) leaves a window. The umask is process-wide; it is set
 * and restored around one synchronous call, so a file this process's other
 * threads (libuv's pool) create in those microseconds can only come out
 * more restrictive, never less.
 */
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
