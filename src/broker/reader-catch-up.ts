/**
 * Waiting for containerd's reader to take what is in an output FIFO before
 * the exit is reported.
 *
 * Why: containerd's client (ctr, and every user of its `cio` package up to
 * containerd 1.7) answers an exit with `task.Delete`, which first calls
 * `io.Cancel()`, and in those versions Cancel closes the FIFO readers. Bytes
 * still in the FIFO at that moment (up to its whole 1 MiB, see fifo-set.ts)
 * are never read: `ctr run` of `cat` fed 64 MiB lost the last 0.3–1 MiB in
 * about 1 run in 40 on a loaded machine, through this shim on both IO paths
 * and once through runc's own shim. "Every byte is in the FIFO" is therefore
 * not enough to report an exit; "the reader has taken every byte" is.
 *
 * How: the broker's keeper is an fd of the same pipe, so FIONREAD on it is
 * what the reader has yet to take. It is polled (the kernel has no event
 * for "a pipe became empty" on the writer's side) from 1 ms doubling to
 * 25 ms, until it reads 0. A reader that takes nothing for `stallMs`
 * (there may be none: `ctr run -d` without an attach) does not hold the exit
 * back longer than that; one that is slow but moving is waited for.
 */
import { bytesReadable } from '../../native-bindings/index.js';

/** How long a reader may take nothing before the exit is reported anyway. */
export const READER_STALL_MS = 2000;

const FIRST_POLL_MS = 1;
const MAX_POLL_MS = 25;

/** Unread bytes in the pipe behind `fd`, or 0 if it cannot be asked (closed, not a pipe). */
function unread(fd: number): number {
  try {
    return bytesReadable(fd);
  } catch {
    return 0;
  }
}

/**
 * Resolves once nothing is left unread in any of `fds` (pipe fds), or once
 * the total left has not shrunk for `stallMs`; returns what was left (0:
 * the readers took everything).
 */
export async function readersCaughtUp(fds: readonly number[], stallMs = READER_STALL_MS): Promise<number> {
  const left = () => fds.reduce((sum, fd) => sum + unread(fd), 0);
  let last = left();
  if (last === 0) return 0;
  let progressAt = Date.now();
  let delay = FIRST_POLL_MS;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, MAX_POLL_MS);
    const now = left();
    if (now === 0) return 0;
    if (now < last) {
      last = now;
      progressAt = Date.now();
    } else if (Date.now() - progressAt >= stallMs) {
      return now;
    }
  }
}
