// An event, not a sleep, for tests that show something did NOT happen: the
// thing that would have made it happen (a readable fd, a kick eventfd) is
// reported by the same poll phase as a pipe made readable on purpose, so
// once that pipe's watcher has run `turns` times the event loop has polled
// for I/O at least that often since the call.

import { closeQuietly, FdWatcher, makePipe, writeFd } from '../../native-bindings/index.js';
import { withTimeout } from '../native-bindings/helpers.js';

/** Resolves after the event loop has polled for I/O at least `turns` times since the call. */
export async function ioTurns(turns = 2, ms = 2000): Promise<void> {
  const [r, w] = makePipe(true);
  writeFd(w, Buffer.from('t'));
  let seen = 0;
  let watcher: FdWatcher | null = null;
  try {
    await withTimeout(
      new Promise<void>((resolve) => {
        watcher = new FdWatcher(r, () => {
          if (++seen >= turns) resolve();
        });
        watcher.want(true, false);
      }),
      ms,
      'event-loop turns',
    );
  } finally {
    (watcher as FdWatcher | null)?.close();
    closeQuietly(r);
    closeQuietly(w);
  }
}
