/**
 * The local end of an fd passed with passfd, where the hybrid device's host
 * policy lives (the generic connection and the loopback guest stack carry
 * none of it).
 *
 * A FIFO (containerd's stdio FIFOs; an anonymous pipe is the same file
 * type and is treated alike) gets a FifoEnd:
 * - `keep` (Dragonball's passfd option: a hang-up must not end the
 *   connection, so a writer can come back with `ctr attach`): a FIFO in
 *   level-triggered epoll reports a hang-up forever once its last writer is
 *   gone (or its last reader, for a write-only end). So the end holds a
 *   *keeper*: the same FIFO reopened through /proc/self/fd in the other
 *   direction. With a keeper the FIFO never hangs up, and a new writer simply
 *   resumes the flow. An O_RDWR fd is its own keeper.
 * - a slow reader is backpressure, never a dead peer: after the guest's
 *   SHUTDOWN(SEND), bytes still buffered for a slow containerd reader (or for
 *   `ctr attach` coming back to a kept FIFO) have no drain deadline; a reader
 *   that is really gone surfaces as EPIPE instead.
 * Any other fd (a pipe, a socket) is a plain FdEnd; with `keep` the
 * connection parks reading at its EOF instead.
 */
import fs from 'node:fs';
import { closeQuietly, fdKind, O_NONBLOCK, O_RDONLY, O_WRONLY } from '../../native-bindings/index.js';
import { FdEnd } from './fd-end.js';

export class FifoEnd extends FdEnd {
  override readonly slowReaderIsBackpressure = true;
  #keeper = -1;

  /** Takes `fd` when it returns; if it throws (the keeper could not be opened), the caller still owns it. */
  constructor(fd: number, keep: boolean) {
    super(fd);
    if (keep && this.canRead !== this.canWrite) {
      // Reopening a FIFO through /proc gives a new open file on the same pipe.
      const flags = (this.canRead ? O_WRONLY : O_RDONLY) | O_NONBLOCK; // libuv adds O_CLOEXEC
      this.#keeper = fs.openSync(`/proc/self/fd/${fd}`, flags);
    }
  }

  override close(): void {
    super.close();
    closeQuietly(this.#keeper);
    this.#keeper = -1;
  }
}

/** The local end for a passed fd: a FifoEnd for a FIFO or pipe, else a plain FdEnd. */
export function passedFdEnd(fd: number, keep: boolean): FdEnd {
  return fdKind(fd) === 'fifo' ? new FifoEnd(fd, keep) : new FdEnd(fd);
}
