/**
 * poll(2) with a timeout, usually 0: "which of these fds are ready right now?"
 *
 * The event loop's watchers (poll.ts) say when an fd *becomes* ready; this
 * answers a different question, synchronously. The splice pump asks it after
 * `splice` fails with EAGAIN, which does not say which end was not ready.
 * Never pass a long timeout on the main thread: it blocks the event loop.
 */
import { E, errno, libc, SysError } from './libc.js';

export const POLLIN = 0x1;
export const POLLPRI = 0x2;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;

const pollFn = libc.func('int poll(void *fds, unsigned long nfds, int timeout)');

export interface PollRequest {
  fd: number;
  /** POLLIN, POLLOUT, ... (POLLERR/POLLHUP are always reported). */
  events: number;
}

/** Returns each fd's `revents`, in order (0 = not ready). Retries EINTR. */
export function pollOnce(fds: readonly PollRequest[], timeoutMs = 0): number[] {
  const buf = Buffer.alloc(8 * fds.length); // struct pollfd { int fd; short events; short revents; }
  fds.forEach((p, i) => {
    buf.writeInt32LE(p.fd, i * 8);
    buf.writeInt16LE(p.events, i * 8 + 4);
  });
  for (;;) {
    const n = pollFn(buf, fds.length, timeoutMs);
    if (n >= 0) break;
    if (errno() !== E.EINTR) throw new SysError('poll', errno());
  }
  return fds.map((_, i) => buf.readUInt16LE(i * 8 + 6));
}
