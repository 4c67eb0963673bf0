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
 * How: the caller passes a write-only fd of each output FIFO, opened while
 * its keeper held it, and then drops the keeper (fifo-set.ts: the keeper is
 * O_RDWR, a reader itself, which would hide whether anyone else reads).
 * FIONREAD on that fd is what the readers have yet to take, and poll(2)
 * reports POLLERR on a pipe's write end once it has no reader at all: then
 * nobody will ever take the rest (`ctr run -d` without an attach, a runtime
 * that never opened its reader) and there is nothing to wait for. Otherwise
 * it is polled (the kernel has no event for "a pipe became empty" on the
 * writer's side), from 1 ms doubling to 25 ms, until it reads 0; a reader
 * that is there but takes nothing for `stallMs` does not hold the exit back
 * longer than that, one that is slow but moving is waited for.
 */
import { bytesReadable, POLLERR, pollOnce } from '../../native-bindings/index.js';

/** How long a reader may take nothing before the exit is reported anyway. */
export const READER_STALL_MS = 2000;

const FIRST_POLL_MS = 1;
const MAX_POLL_MS = 25;

/** Bytes in the pipe behind write fd `fd` that a reader may still take: 0 when it has no reader (or cannot be asked). */
function awaited(fd: number): number {
  try {
    if ((pollOnce([{ fd, events: 0 }])[0]! & POLLERR) !== 0) return 0;
    return bytesReadable(fd);
  } catch {
    return 0;
  }
}

/**
 * Resolves once no reader of any of `writers` (write-only pipe fds) has
 * anything left to take, or once the total left has not shrunk for
 * `stallMs`; returns what a reader still had to take then (0: all taken, or
 * no reader left).
 */
export async function readersCaughtUp(
  writers: readonly number[],
  stallMs = READER_STALL_MS,
): Promise<number> {
  const left = () => writers.reduce((sum, fd) => sum + awaited(fd), 0);
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
