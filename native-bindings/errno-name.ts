/**
 * errno number → name (`2` → `ENOENT`), the one table for every layer.
 * Built from Node's own `os.constants.errno`, so the names match what Node's
 * errors carry in `code`. No koffi here: modules that only need to name an
 * errno (sd-notify's error lines) import this file without loading libc.
 */
import os from 'node:os';

const names = new Map<number, string>();
for (const [name, value] of Object.entries(os.constants.errno)) {
  // Aliases (EWOULDBLOCK = EAGAIN, EDEADLOCK = EDEADLK): the first name listed wins, as in strerror's table.
  if (!names.has(value)) names.set(value, name);
}

/** The errno's symbolic name, or `E<number>` for a number Node does not know. */
export function errnoName(errno: number): string {
  return names.get(errno) ?? `E${errno}`;
}
